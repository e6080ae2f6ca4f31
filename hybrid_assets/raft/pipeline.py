"""RAFT's steps as plain functions: pin the corpus snapshot, generate the behaviour file. The
CLI (`hybrid-assets raft ...`) and the Dagster ``raft`` asset group call these."""

from __future__ import annotations

import time
from pathlib import Path

from hybrid_assets.knowledge.documents import file_set_version, scan_documents
from hybrid_assets.models.embedding import Embedder
from hybrid_assets.knowledge.pipeline import build_document_chunks
from hybrid_assets.raft.examples import build_raft_examples, choose_no_oracle, validate_examples
from hybrid_assets.raft.mining import mine_with_ranks
from hybrid_assets.raft.records import (
    RaftConfig,
    RaftDataError,
    check_triples,
    load_snapshot,
    load_triples,
    snapshot_hash,
    write_jsonl_atomic,
)
from hybrid_assets.schema import LabelSpace
from hybrid_assets.settings import load_settings


def snapshot_corpus(docs_dir: Path, out_path: Path, cache_dir: Path) -> dict:
    """Pin the chunks of the documents in ``docs_dir`` (parse + chunk exactly like the knowledge path)
    into ``out_path``, one ``{chunk_id, doc_id, title, section, text}`` per line, in document order.
    A document that fails to parse is an error: a pinned snapshot must be complete."""
    refs = scan_documents(Path(docs_dir))
    chunking = build_document_chunks(refs, Path(cache_dir))
    if chunking.failures:
        raise RaftDataError(f"cannot snapshot {docs_dir}: documents failed to parse: {chunking.failures}")
    rows = [
        {"chunk_id": c.chunk_id, "doc_id": c.doc_id, "title": c.title, "section": c.section, "text": c.text}
        for doc_id in sorted(chunking.chunks_by_doc)
        for c in sorted(chunking.chunks_by_doc[doc_id], key=lambda c: c.position)
    ]
    write_jsonl_atomic(Path(out_path), rows)
    return {"chunks": len(rows), "documents": len(chunking.chunks_by_doc), "docs_version": file_set_version(refs),
            "path": str(out_path)}


def generate_raft_file(triples_path: Path, snapshot_path: Path, out_path: Path, client,
                       config: RaftConfig = RaftConfig(), embedder=None, labels_path: Path | None = None) -> dict:
    """Load + check the triples against the snapshot, mine hard negatives in the Weaviate behind
    ``client``, build the examples, validate them with the behaviour loader and write ``out_path``
    atomically. ``labels_path`` defaults to ``labels.json`` next to ``out_path`` (the behaviour folder).
    Returns the run's statistics."""
    started = time.perf_counter()
    out_path = Path(out_path)
    labels_path = Path(labels_path) if labels_path else out_path.parent / "labels.json"
    labels = LabelSpace.from_file(labels_path)
    snapshot = load_snapshot(Path(snapshot_path))
    triples = load_triples(Path(triples_path))
    problems = check_triples(triples, snapshot, labels)
    if problems:
        raise RaftDataError(f"{len(problems)} problem(s) in {triples_path}:\n" + "\n".join(problems))
    if embedder is None:
        embedder = Embedder(load_settings().embedding_model)

    mining = mine_with_ranks(client, embedder, triples, snapshot, config.distractors + 1, config.alpha,
                             config.max_quote_similarity)
    examples = build_raft_examples(triples, snapshot, mining.distractors, config, labels)
    problems = validate_examples(examples, labels_path)
    if problems:
        raise RaftDataError("generated examples fail behaviour validation:\n" + "\n".join(problems[:20]))
    write_jsonl_atomic(out_path, examples)

    no_oracle = choose_no_oracle(triples, config)
    used_ranks = [r for t in triples for r in mining.distractor_ranks[t.id][: config.distractors + (t.id in no_oracle)]]
    gold_ranks = [r for r in mining.gold_rank.values()]
    found = [r for r in gold_ranks if r is not None]
    return {
        "examples": len(examples),
        "with_oracle": len(examples) - len(no_oracle),
        "no_oracle": len(no_oracle),
        "context_size": config.distractors + 1,
        "gold_docs": len({t.gold_doc for t in triples}),
        "categories": len({t.answer["category"] for t in triples}),
        "mean_distractor_rank": round(sum(used_ranks) / len(used_ranks), 2),
        "gold_recall_at_1": round(sum(r == 1 for r in found) / len(gold_ranks), 3),
        "gold_recall_at_5": round(sum(r <= 5 for r in found) / len(gold_ranks), 3),
        "mean_gold_rank": round(sum(found) / len(found), 2) if found else None,
        "gold_not_retrieved": sum(r is None for r in gold_ranks),
        "restating_chunks_skipped": sum(len(r) for r in mining.restating.values()),
        "triples_with_restating_chunks": sum(bool(r) for r in mining.restating.values()),
        "snapshot_chunks": len(snapshot),
        "snapshot_sha256": snapshot_hash(snapshot)[:16],
        "collection": mining.collection,
        "mining_seconds": round(mining.seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "config": {"distractors": config.distractors, "p_no_oracle": config.p_no_oracle, "seed": config.seed,
                   "alpha": config.alpha, "max_quote_similarity": config.max_quote_similarity},
        "out": str(out_path),
    }


# -- CLI hook (wired into `hybrid-assets raft` by cli.py) ----------------------------------------


def default_paths(settings=None) -> dict[str, Path]:
    settings = settings or load_settings()
    raft_dir = settings.data_dir / "raft"
    return {
        "docs": settings.docs_dir,
        "snapshot": raft_dir / "corpus_snapshot.jsonl",
        "triples": raft_dir / "triples.jsonl",
        "out": settings.behaviour_dir / "raft_examples.jsonl",
        "cache": settings.cache_dir,
    }


