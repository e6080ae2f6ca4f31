"""Entry points of the four-configuration evaluation, shared by `hybrid-assets eval`, the Dagster
``hybrid_evaluation`` asset, the demo and the benchmark scripts.

- ``evaluate_sample``: the sample company's held-out tickets (the behaviour eval split, ticket records
  only) against the live knowledge collection and the promoted adapter.
- ``evaluate_dataset``: any dataset in ``evaluation.datasets.FORMATS``; its own passages are ingested
  into a separate collection (``Eval_<name>_<hash>_<model>``), never into the live knowledge.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from hybrid_assets.behaviour.dataset import load_behaviour_data, split_records, ticket_records
from hybrid_assets.behaviour.pipeline import eval_subset
from hybrid_assets.behaviour.registry import AdapterRegistry
from hybrid_assets.behaviour.release import install_release
from hybrid_assets.evaluation.compare import CONFIGURATIONS, Configuration, EvalCase, compare
from hybrid_assets.evaluation.datasets import EvalDataset, EvalItem, load_eval_dataset
from hybrid_assets.knowledge.chunking import Chunk, chunk_id, split_long
from hybrid_assets.knowledge.indexing import sync_collection
from hybrid_assets.models.embedding import Embedder, model_slug
from hybrid_assets.schema import NOT_ANSWERABLE, LabelSpace
from hybrid_assets.serving.engine import AnswerEngine, load_labels
from hybrid_assets.serving.retrieval import retrieve_from_collection
from hybrid_assets.settings import Settings
from hybrid_assets.store.collections import ensure_collection

DEFAULT_SAMPLE_LIMIT = 24
# The day the sample company's tickets were written: its behaviour records show the account "as of
# 2026-11-24", and the escalation policy counts the days to a renewal from the ticket's date, not from
# the day an evaluation happens to run.
SAMPLE_AS_OF = date(2026, 11, 24)
NO_RETRIEVAL = tuple(c for c in CONFIGURATIONS if not c.retrieval)


def sample_cases(settings: Settings, limit: int = DEFAULT_SAMPLE_LIMIT, data_dir: Path | None = None) -> list[EvalCase]:
    """Held-out tickets of the sample company with their gold labels and gold documents.

    Gold documents are the sources of the context passages the gold answer cites (document ids, not
    chunk ids: chunk ids change whenever a document is edited, the document a fact lives in does not).
    Intent-CSV rows (no context, defaulted answers) and generated RAFT examples are left out."""
    data_dir = Path(data_dir or settings.behaviour_dir)
    data = load_behaviour_data(data_dir, LabelSpace.from_file(data_dir / "labels.json"))
    tickets = ticket_records(split_records(data.records).eval)
    cases = []
    for record in eval_subset(tickets, limit):
        answer = record.answer
        by_id = {c.id: c.source for c in record.context}
        gold_docs = tuple(sorted({by_id[c] for c in answer["citations"] if c in by_id}))
        item = EvalItem(
            id=record.id,
            question=record.ticket,
            gold_passage_ids=gold_docs,
            gold_answer=answer["reply"] if answer["decision"] != NOT_ANSWERABLE else None,
            decision=answer["decision"],
            category=answer["category"],
            customer_id=record.customer_id,
        )
        cases.append(EvalCase(item, {"sentiment": answer["sentiment"], "category": answer["category"],
                                     "escalation": answer["escalation"]["level"]}, as_of=SAMPLE_AS_OF))
    return cases


def adapter_for_evaluation(settings: Settings) -> Path | None:
    """The promoted adapter; when none is promoted (every candidate so far failed the gate), the newest
    candidate, so the comparison still shows what fine-tuning does; on a fresh data folder, the shipped
    release adapter, installed and promoted as serving does. The report names which one."""
    registry = AdapterRegistry(settings.adapters_dir)
    current = registry.current()
    if current is not None:
        return current.path
    versions = registry.list_versions()
    if versions:
        return versions[-1].path
    release = install_release(settings)
    return release.path if release else None


def _adapter_status(settings: Settings, adapter_dir: Path | None) -> str:
    if adapter_dir is None:
        return "none"
    current = AdapterRegistry(settings.adapters_dir).current()
    promoted = current is not None and Path(current.path).resolve() == Path(adapter_dir).resolve()
    return "promoted" if promoted else "candidate (not promoted)"


def evaluate_sample(settings: Settings, client, *, limit: int = DEFAULT_SAMPLE_LIMIT, adapter_dir: Path | None = None,
                    engine=None, progress: Callable[[str], None] | None = None) -> dict:

    adapter_dir = adapter_dir or adapter_for_evaluation(settings)
    engine = engine or AnswerEngine(settings, load_labels(settings))
    report = compare(engine, client, sample_cases(settings, limit), adapter_dir, progress=progress)
    report["dataset"] = {"name": "sample-company", "format": "native", "n": report["n"]}
    report["adapter_status"] = _adapter_status(settings, adapter_dir)
    return report


# -- external datasets ------------------------------------------------------------------------------
def corpus_collection_name(dataset: EvalDataset, settings: Settings) -> str:
    digest = hashlib.sha256("\x1f".join(f"{p.id}\x1e{p.text}" for p in dataset.passages).encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9]", "_", dataset.name).strip("_")[:32] or "dataset"
    return f"Eval_{name}_{digest}_{model_slug(settings.embedding_model)}"


def ingest_passages(client, settings: Settings, dataset: EvalDataset, show_progress: bool = False) -> str:
    """Index the dataset's passages (one chunk per passage, long ones split at sentences) into their
    own collection. The name carries a content hash, so a rerun on the same data reuses it."""
    name = corpus_collection_name(dataset, settings)
    chunks_by_doc: dict[str, list[Chunk]] = {}
    for passage in dataset.passages:
        pieces = split_long(" ".join(passage.text.split()), 1500)
        chunks_by_doc[passage.id] = [
            Chunk(chunk_id(passage.id, str(i), piece), passage.id, passage.title or passage.id, passage.source, piece, i)
            for i, piece in enumerate(pieces)
        ]
    sync_collection(ensure_collection(client, name), chunks_by_doc, Embedder(settings.embedding_model),
                    show_progress=show_progress)
    return name


RECALL_KS = (1, 3, 5, 10)


def retrieval_recall_curve(items: Sequence[EvalItem], search: Callable[[EvalItem, int], object],
                           ks: Sequence[int] = RECALL_KS) -> dict[str, float | None]:
    """Retrieval alone (no generation): the share of answerable items with a gold passage among the top
    k hits, for each k. ``search(item, k)`` returns a serving ``Retrieved`` (relevance floor applied, as
    served); one query per k, because a hybrid search's top 5 is not always the head of its top 10."""
    scored = [item for item in items if item.answerable and item.gold_passage_ids]
    curve: dict[str, float | None] = {}
    for k in ks:
        hits = [any(hit.doc_id in set(item.gold_passage_ids) for hit in search(item, k).hits.values())
                for item in scored]
        curve[str(k)] = sum(hits) / len(hits) if hits else None
    return curve


def evaluate_dataset(settings: Settings, client, path: Path, fmt: str, *, limit: int | None = None,
                     adapter_dir: Path | None = None, configurations: Sequence[Configuration] | None = None,
                     engine=None, labels=None, progress: Callable[[str], None] | None = None) -> dict:
    """Four configurations (two for intent-csv, which has no passages) on an external dataset."""
    full = load_eval_dataset(path, fmt)
    items = load_eval_dataset(path, fmt, limit=limit).items if limit else full.items
    labels = labels or load_labels(settings)
    adapter_dir = adapter_dir or adapter_for_evaluation(settings)
    engine = engine or AnswerEngine(settings, labels)
    retriever, configurations = None, configurations
    if full.passages:
        # The whole corpus is searchable (not just the sampled items' gold passages): retrieval is
        # only a test when the distractors are there too.
        collection = ingest_passages(client, settings, full, show_progress=progress is not None)
        retriever = lambda item: retrieve_from_collection(client, settings, collection, query_of(item), engine.k)  # noqa: E731
        configurations = configurations or CONFIGURATIONS
        recall_curve = retrieval_recall_curve(
            items, lambda item, k: retrieve_from_collection(client, settings, collection, query_of(item), k))
    else:
        configurations = configurations or NO_RETRIEVAL
    cases = [EvalCase(item) for item in items]
    report = compare(engine, client, cases, adapter_dir, retriever=retriever, configurations=configurations,
                     progress=progress)
    report["dataset"] = {"name": full.name, "format": fmt, "path": str(path), "n": len(items),
                         "passages": len(full.passages)}
    report["adapter_status"] = _adapter_status(settings, adapter_dir)
    if full.passages:
        report["retrieval_recall_at"] = recall_curve
    return report


def query_of(item: EvalItem) -> str:
    """Multi-turn questions ("what about the other one?") need their context: the last user turn plus the
    previous user turn make the search query."""
    earlier = [turn["content"] for turn in item.history if turn.get("role") == "user"][-1:]
    return " ".join(earlier + [item.question])
