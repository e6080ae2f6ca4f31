"""Incremental, safe sync of chunks into a Weaviate collection.

The stored chunk ids are the source of truth: a chunk is embedded and written only if its id is not
stored yet, and a stored id that is no longer produced is deleted. Order matters: every new chunk is
written (and the write checked) before any old chunk is deleted, so a failed write loses nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from hybrid_assets.knowledge.chunking import Chunk
from hybrid_assets.models.embedding import Embedder
from hybrid_assets.store.collections import existing_chunk_ids

logger = logging.getLogger(__name__)


class IndexingError(RuntimeError):
    """Writing to Weaviate failed; nothing was deleted."""


@dataclass
class SyncReport:
    inserted: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    changed_docs: list[str] = field(default_factory=list)
    removed_docs: list[str] = field(default_factory=list)
    unchanged_docs: int = 0
    embed_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def wrote_anything(self) -> bool:
        return bool(self.inserted or self.deleted)


def chunk_properties(chunk: Chunk) -> dict:
    """A chunk as a Weaviate object's properties (the id and vector travel beside them)."""
    return {
        "doc_id": chunk.doc_id,
        "title": chunk.title,
        "section": chunk.section,
        "text": chunk.text,
        "position": chunk.position,
    }


def plan_sync(
    stored: dict[str, set[str]], desired: dict[str, list[Chunk]], keep_docs: set[str]
) -> tuple[list[Chunk], list[str], SyncReport]:
    """Pure planning step: what to insert, what to delete. ``keep_docs`` keep their stored chunks
    untouched (documents that failed to parse this time)."""
    report = SyncReport()
    to_insert: list[Chunk] = []
    to_delete: list[str] = []
    for doc_id, chunks in desired.items():
        wanted = {c.chunk_id for c in chunks}
        have = stored.get(doc_id, set())
        new = [c for c in chunks if c.chunk_id not in have]
        stale = sorted(have - wanted)
        if new or stale:
            report.changed_docs.append(doc_id)
        else:
            report.unchanged_docs += 1
        to_insert.extend(new)
        to_delete.extend(stale)
    for doc_id, have in stored.items():
        if doc_id not in desired and doc_id not in keep_docs:
            report.removed_docs.append(doc_id)
            to_delete.extend(sorted(have))
    return to_insert, to_delete, report


@dataclass
class SyncPlan:
    """What one sync of one collection (or tenant) will write and delete."""
    to_insert: list[Chunk]
    to_delete: list[str]
    report: SyncReport


def plan_collection(collection, desired: dict[str, list[Chunk]], keep_docs: set[str] = frozenset()) -> SyncPlan:
    """Read the stored ids of ``collection`` (or a tenant of it) and plan the sync against them."""
    return SyncPlan(*plan_sync(existing_chunk_ids(collection), desired, set(keep_docs)))


def sync_collection(
    collection,
    desired: dict[str, list[Chunk]],
    embedder: Embedder,
    keep_docs: set[str] = frozenset(),
    batch_size: int = 200,
    show_progress: bool = False,
) -> SyncReport:
    """Make ``collection`` (or a tenant of it) hold exactly ``desired`` (+ the chunks of ``keep_docs``)."""
    plan = plan_collection(collection, desired, keep_docs)
    started = time.perf_counter()
    vectors = embedder.embed([c.embedding_text for c in plan.to_insert], show_progress=show_progress)
    plan.report.embed_seconds = time.perf_counter() - started
    return apply_plan(collection, plan, vectors, batch_size)


def sync_tenants(
    collection, desired: dict[str, dict[str, list[Chunk]]], embedder: Embedder, group: int = 250
) -> dict[str, SyncReport]:
    """``sync_collection`` for each tenant of a multi-tenant collection (tenant -> desired chunks),
    embedding the new chunks of up to ``group`` tenants in one batched call: one call per tenant (a
    customer has ~3 chunks) made a 1,000-tenant ingest several times slower, and the group bounds
    memory. Each tenant is still written before anything of it is deleted."""
    reports: dict[str, SyncReport] = {}
    tenants = list(desired)
    for start in range(0, len(tenants), group):
        names = tenants[start : start + group]
        plans = {name: plan_collection(collection.with_tenant(name), desired[name]) for name in names}
        started = time.perf_counter()
        vectors = embedder.embed([c.embedding_text for plan in plans.values() for c in plan.to_insert])
        seconds, offset = time.perf_counter() - started, 0
        for name, plan in plans.items():
            mine = vectors[offset : offset + len(plan.to_insert)]
            offset += len(plan.to_insert)
            plan.report.embed_seconds = seconds * len(mine) / max(len(vectors), 1)  # its share of the batch
            reports[name] = apply_plan(collection.with_tenant(name), plan, mine)
    return reports


WRITE_ATTEMPTS, WRITE_RETRY_PAUSE_S = 2, 2.0


def _insert_many(collection, objects, transient):
    """One batch write, tried again once after a pause: when a replica dies mid-ingest the coordinator's
    open streams are reset (gRPC RST_STREAM) although a quorum is still up. A retry is safe because a
    batch write with our deterministic ids is an upsert."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            return collection.data.insert_many(objects)
        except transient:
            if attempt == WRITE_ATTEMPTS:
                raise
            logger.warning("batch write to %s failed; retrying in %.0f s", collection.name, WRITE_RETRY_PAUSE_S)
            time.sleep(WRITE_RETRY_PAUSE_S)


def apply_plan(collection, plan: SyncPlan, vectors: list[list[float]], batch_size: int = 200) -> SyncReport:
    """Write the plan's new chunks (checked), then delete its stale ones."""
    from weaviate.classes.data import DataObject
    from weaviate.classes.query import Filter
    from weaviate.exceptions import WeaviateBaseError

    to_insert, to_delete, report = plan.to_insert, plan.to_delete, plan.report
    started = time.perf_counter()
    for start in range(0, len(to_insert), batch_size):
        batch = to_insert[start : start + batch_size]
        objects = [
            DataObject(properties=chunk_properties(c), uuid=c.chunk_id, vector=v)
            for c, v in zip(batch, vectors[start : start + batch_size])
        ]
        try:
            result = _insert_many(collection, objects, WeaviateBaseError)
        except WeaviateBaseError as exc:
            raise IndexingError(f"writing to {collection.name} failed: {exc}; no old chunk was deleted") from exc
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise IndexingError(
                f"{len(result.errors)} of {len(batch)} chunks failed to write to {collection.name}: "
                f"{first.message}; no old chunk was deleted"
            )
        report.inserted.extend(c.chunk_id for c in batch)
    for start in range(0, len(to_delete), batch_size):
        report.deleted.extend(_delete_ids(collection, to_delete[start : start + batch_size], Filter))
    report.write_seconds = time.perf_counter() - started
    return report


def _delete_ids(collection, ids: list[str], Filter) -> list[str]:
    """Delete ``ids`` and return the ones really gone. A filtered delete can match fewer objects than
    asked: a server caps it at QUERY_MAXIMUM_RESULTS, and an object left half-written by a crash can
    be missing from the id index that filters use (so it would linger forever, and a report that
    trusted the request would claim it deleted). Whatever the filter missed is deleted by id, which
    reads the object store itself; what still exists after that is an error, never a success."""
    result = collection.data.delete_many(where=Filter.by_id().contains_any(ids))
    if result.failed:
        raise IndexingError(f"{result.failed} stale chunks could not be deleted from {collection.name}")
    if result.matches == len(ids) and result.successful == len(ids):
        return list(ids)
    for object_id in ids:
        if collection.data.exists(object_id):
            collection.data.delete_by_id(object_id)
    remaining = [object_id for object_id in ids if collection.data.exists(object_id)]
    if remaining:
        raise IndexingError(
            f"{len(remaining)} stale chunks could not be deleted from {collection.name} (e.g. {remaining[0]})"
        )
    return list(ids)  # every id existed when the sync was planned and none exists now
