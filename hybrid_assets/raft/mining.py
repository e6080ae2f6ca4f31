"""Hard negatives for RAFT, mined with the hybrid search serving uses, in a throw-away Weaviate
collection that holds the pinned snapshot (never the live documents)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hybrid_assets.raft.records import (
    RaftDataError,
    SnapshotChunk,
    Triple,
    normalise_space,
    resolve_gold_chunk,
    snapshot_hash,
)
from hybrid_assets.store.collections import ensure_collection, hybrid_search

COLLECTION_PREFIX = "RaftSnapshot_"


@dataclass


class MiningResult:
    distractors: dict[str, list[str]]  # triple id -> distractor chunk ids, best first
    distractor_ranks: dict[str, list[int]]  # their 1-based ranks in the hybrid result list
    gold_rank: dict[str, int | None]  # rank of the oracle chunk (None: not in the result list)
    restating: dict[str, list[str]] = field(default_factory=dict)  # chunks skipped: they restate the quote
    collection: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _load_snapshot_collection(client, name: str, snapshot: Sequence[SnapshotChunk], embedder, batch_size: int = 200):
    from weaviate.classes.data import DataObject


    collection = ensure_collection(client, name)
    vectors = embedder.embed([c.embedding_text for c in snapshot])
    for start in range(0, len(snapshot), batch_size):
        objects = [
            DataObject(
                properties={"doc_id": c.doc_id, "title": c.title, "section": c.section, "text": c.text,
                            "position": start + i},
                uuid=c.chunk_id,
                vector=v,
            )
            for i, (c, v) in enumerate(zip(snapshot[start : start + batch_size], vectors[start : start + batch_size]))
        ]
        result = collection.data.insert_many(objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise RuntimeError(f"loading the snapshot into {name} failed: {first.message}")
    return collection


SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def restating_chunks(embedder, triples: Sequence[Triple], snapshot: Sequence[SnapshotChunk],
                     max_quote_similarity: float = 0.75) -> dict[str, set[str]]:
    """triple id -> chunks of *other* documents that restate its answer: they contain the quote
    (whitespace-normalised), or one of their sentences embeds within ``max_quote_similarity`` (cosine)
    of the quote. Sample corpora repeat facts across documents (an FAQ, a pricing page and a product
    page all give the SMS price); such a chunk is no negative, and without the oracle it would teach
    the model to refuse a question its context answers. A false positive only costs one candidate."""
    restating: dict[str, set[str]] = {t.id: set() for t in triples}
    for triple in triples:
        quote = normalise_space(triple.quote)
        restating[triple.id] = {c.chunk_id for c in snapshot
                                if c.doc_id != triple.gold_doc and quote in normalise_space(c.text)}
    if max_quote_similarity >= 1.0 or not triples:
        return restating
    sentences, owners = [], []
    for chunk in snapshot:
        for sentence in SENTENCE_SPLIT.split(chunk.text):
            if len(sentence.strip()) >= 12:
                sentences.append(sentence.strip())
                owners.append(chunk)

    # The embedder's vectors are normalised, so the dot product is the cosine.
    similarity = np.asarray(embedder.embed([t.quote for t in triples])) @ np.asarray(embedder.embed(sentences)).T
    for row, triple in zip(similarity, triples):
        for index in np.flatnonzero(row >= max_quote_similarity):
            if owners[index].doc_id != triple.gold_doc:
                restating[triple.id].add(owners[index].chunk_id)
    return restating


def mine_with_ranks(client, embedder, triples: Sequence[Triple], snapshot: Sequence[SnapshotChunk], k: int,
                    alpha: float = 0.6, max_quote_similarity: float = 0.75) -> MiningResult:
    """Hard negatives for every triple, with the ranks behind them (see ``mine_distractors``)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    started = time.perf_counter()
    gold = {t.id: resolve_gold_chunk(t, snapshot) for t in triples}
    snapshot = list(snapshot)
    per_doc: dict[str, int] = {}
    for chunk in snapshot:
        per_doc[chunk.doc_id] = per_doc.get(chunk.doc_id, 0) + 1
    restating = restating_chunks(embedder, triples, snapshot, max_quote_similarity)
    available = {t.id: len(snapshot) - per_doc[t.gold_doc] - len(restating[t.id]) for t in triples}
    if short := [tid for tid, n in available.items() if n < k]:
        raise RaftDataError(f"the snapshot has fewer than {k} usable chunks outside the gold document for {short}")
    # Enough hits that k remain after dropping the gold document's chunks and the restating ones.
    limit = min(len(snapshot), k + max(per_doc.values()) + max(len(r) for r in restating.values()) + 5)
    name = f"{COLLECTION_PREFIX}{snapshot_hash(snapshot)[:12]}_{uuid.uuid4().hex[:6]}"
    result = MiningResult({}, {}, {}, collection=name)
    try:
        collection = _load_snapshot_collection(client, name, snapshot, embedder)
        vectors = embedder.embed([t.question for t in triples])
        for triple, vector in zip(triples, vectors):
            hits = hybrid_search(collection, triple.question, vector, limit, alpha)
            ids = [h.chunk_id for h in hits]
            oracle = gold[triple.id].chunk_id
            result.gold_rank[triple.id] = ids.index(oracle) + 1 if oracle in ids else None
            skip = restating[triple.id]
            result.restating[triple.id] = [cid for cid in ids if cid in skip]
            chosen = [(rank, h.chunk_id) for rank, h in enumerate(hits, 1)
                      if h.chunk_id != oracle and h.doc_id != triple.gold_doc and h.chunk_id not in skip][:k]
            if len(chosen) < k:
                raise RuntimeError(f"triple {triple.id}: hybrid search returned only {len(chosen)} usable hits (need {k})")
            result.distractors[triple.id] = [cid for _, cid in chosen]
            result.distractor_ranks[triple.id] = [rank for rank, _ in chosen]
    finally:
        if client.collections.exists(name):
            client.collections.delete(name)
    result.seconds = time.perf_counter() - started
    return result


def mine_distractors(client, embedder, triples: Sequence[Triple], snapshot: Sequence[SnapshotChunk], k: int,
                     alpha: float = 0.6, max_quote_similarity: float = 0.75) -> dict[str, list[str]]:
    """triple id -> ``k`` hard-negative chunk ids (best first): the top hybrid-search hits (BM25 + vector,
    ``alpha``) for the question over the snapshot, skipping the oracle, every chunk of the gold
    document and every chunk that restates the quote (``restating_chunks``). The snapshot is embedded
    with ``embedder`` into a throw-away collection (``RaftSnapshot_<hash>_<random>``) on ``client``,
    deleted afterwards even on failure."""
    return mine_with_ranks(client, embedder, triples, snapshot, k, alpha, max_quote_similarity).distractors


