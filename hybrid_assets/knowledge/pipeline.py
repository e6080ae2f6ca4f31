"""The knowledge path's steps as plain functions (the Dagster assets and the CLI both call these)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hybrid_assets.knowledge.accounts import OVERVIEW_SECTION, Account, account_chunks, load_accounts, overview_fields
from hybrid_assets.knowledge.chunking import CHUNKER_VERSION, Chunk, chunk_elements
from hybrid_assets.knowledge.documents import DocumentRef, file_set_version, scan_documents
from hybrid_assets.knowledge.manifest import record_accounts, record_documents
from hybrid_assets.knowledge.indexing import SyncReport, sync_collection, sync_tenants
from hybrid_assets.knowledge.parsing import (
    PARSER_VERSION,
    ParseError,
    RefusedDocument,
    check_document,
    document_parser,
)
from hybrid_assets.models.embedding import Embedder
from hybrid_assets.settings import Settings, load_settings
from hybrid_assets.store.collections import (
    SearchHit,
    accounts_collection_name,
    document_chunks_of,
    documents_chunks_of,
    ensure_collection,
    hybrid_search,
    knowledge_collection_name,
    with_consistency,
)

logger = logging.getLogger(__name__)


class UnknownCustomer(LookupError):
    """The customer id has no tenant (no account data was ingested for it)."""


@dataclass
class ChunkingResult:
    chunks_by_doc: dict[str, list[Chunk]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # doc_id -> reason
    parsed: list[str] = field(default_factory=list)  # parsed this run (the rest came from the cache)
    # Failed for safety (symlinks, special files): unlike other failures their old chunks are removed.
    refused: set[str] = field(default_factory=set)
    version: str = ""  # content hash of the document set that was chunked (``file_set_version``)
    documents: int = 0  # entries in the folder (failed ones included)

    @property
    def chunk_count(self) -> int:
        return sum(len(chunks) for chunks in self.chunks_by_doc.values())


def _cache_path(cache_dir: Path, ref: DocumentRef) -> Path:
    """Keyed by document id AND content: chunk ids contain the doc id, so two files with the same
    bytes must never share cached chunks."""
    key = hashlib.sha256(f"{PARSER_VERSION}\0{ref.doc_id}\0{ref.sha256}".encode()).hexdigest()
    return cache_dir / "chunks" / CHUNKER_VERSION / f"{key}.json"


def _progress_logger(ref: DocumentRef, bar=None):
    """Progress within one large file: a log line at most every 10 s (and the tqdm bar's postfix)."""
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        if bar is not None:
            bar.set_postfix_str(f"{ref.doc_id} {100 * done // max(total, 1)}%")
        if time.monotonic() - last[0] >= 10 or done >= total:
            last[0] = time.monotonic()
            logger.info("parsing %s: %d%% (%d of %d characters)", ref.doc_id, 100 * done // max(total, 1), done, total)

    return report


def build_document_chunks(
    refs: list[DocumentRef],
    cache_dir: Path,
    show_progress: bool = False,
    max_document_bytes: int | None = None,
    parse_timeout_s: float | None = None,
    parse_workers: int | None = None,
) -> ChunkingResult:
    """Parse + chunk every document; unchanged documents are read from a cache keyed by document id
    and content hash, so only changed documents are parsed again. The cheap file checks (symlink,
    extension, size limit) run before the cache is consulted. A failure is recorded per document,
    never raised. Up to ``parse_workers`` documents are parsed at once (``document_parser``); the
    result is the same for any number, since outcomes are recorded in the order of ``refs``. Limits
    and the worker count left at None come from the environment (``load_settings``)."""
    if max_document_bytes is None or parse_timeout_s is None or parse_workers is None:
        settings = load_settings()
        max_document_bytes = settings.max_document_bytes if max_document_bytes is None else max_document_bytes
        parse_timeout_s = settings.parse_timeout_s if parse_timeout_s is None else parse_timeout_s
        parse_workers = settings.parse_workers if parse_workers is None else parse_workers
    result = ChunkingResult(version=file_set_version(refs), documents=len(refs))
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(refs), desc="parse + chunk", unit="doc")
    try:
        with document_parser(parse_workers, max_document_bytes, parse_timeout_s) as parser:
            # Every parse is handed out first so the workers keep busy; outcomes are then recorded in
            # input order (never completion order), so the result does not depend on the worker count.
            started = [(ref, _start_document(ref, cache_dir, max_document_bytes, parser, bar)) for ref in refs]
            for ref, outcome in started:
                _record_document(result, cache_dir, ref, outcome)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return result


def _start_document(ref: DocumentRef, cache_dir: Path, max_document_bytes: int, parser, bar):
    """The cheap checks, then the cache, then the parse: returns the check's ``ParseError``, the cached
    chunks, or the future of the document's elements (the parse runs meanwhile)."""
    try:
        check_document(ref, max_document_bytes)
    except ParseError as exc:
        return exc
    cached = _cache_path(cache_dir, ref)
    if cached.exists():
        return [Chunk(**row) for row in json.loads(cached.read_text())]
    return parser.submit(ref, _progress_logger(ref, bar))


def _record_failure(result: ChunkingResult, ref: DocumentRef, exc: ParseError) -> None:
    result.failures[ref.doc_id] = str(exc)
    if isinstance(exc, RefusedDocument):
        result.refused.add(ref.doc_id)


def _record_document(result: ChunkingResult, cache_dir: Path, ref: DocumentRef, outcome) -> None:
    """Record one document's outcome (from ``_start_document``); a new parse is chunked and cached."""
    if isinstance(outcome, ParseError):
        _record_failure(result, ref, outcome)
        return
    if isinstance(outcome, list):
        result.chunks_by_doc[ref.doc_id] = outcome
        return
    try:
        chunks = chunk_elements(ref.doc_id, outcome.result())
    except ParseError as exc:
        _record_failure(result, ref, exc)
        return
    result.parsed.append(ref.doc_id)
    result.chunks_by_doc[ref.doc_id] = chunks
    cached = _cache_path(cache_dir, ref)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(c) for c in chunks]))
    tmp.replace(cached)


def index_documents(client, settings: Settings, chunking: ChunkingResult, show_progress: bool = False) -> SyncReport:
    """Sync document chunks into the shared knowledge collection. Failed documents keep their chunks,
    except refused ones (symlinks, special files): what was indexed for those is removed."""
    collection = _for_writes(settings, ensure_collection(
        client, knowledge_collection_name(settings.embedding_model), replication_factor=settings.weaviate_replication_factor,
        shards=settings.weaviate_shards))
    return sync_collection(
        collection,
        chunking.chunks_by_doc,
        Embedder(settings.embedding_model),
        keep_docs=set(chunking.failures) - chunking.refused,
        show_progress=show_progress,
    )


def index_accounts(client, settings: Settings, accounts: list[Account]) -> dict[str, SyncReport]:
    """One tenant per customer; a customer removed from the data loses its tenant (and all its data)."""
    from weaviate.classes.tenants import Tenant

    collection = _for_writes(settings, ensure_collection(
        client, accounts_collection_name(settings.embedding_model), multi_tenant=True,
        replication_factor=settings.weaviate_replication_factor))
    existing = set(collection.tenants.get().keys())
    wanted = {a.customer_id for a in accounts}
    if missing := sorted(wanted - existing):
        collection.tenants.create([Tenant(name=name) for name in missing])
    desired = {}
    for account in accounts:
        chunks = account_chunks(account)
        desired[account.customer_id] = {chunks[0].doc_id: chunks}
    reports = sync_tenants(collection, desired, Embedder(settings.embedding_model))
    if obsolete := sorted(existing - wanted):  # after all writes: removal is the last step
        collection.tenants.remove(obsolete)
    return reports


def record_document_ingest(client, settings: Settings, chunking: ChunkingResult, report: SyncReport) -> dict:
    """Write the documents half of the ingest manifest (``knowledge/manifest.py``) after a sync."""
    name = knowledge_collection_name(settings.embedding_model)
    return record_documents(
        settings, version=chunking.version, documents=chunking.documents, chunks=chunking.chunk_count,
        parsed=chunking.parsed, failures=chunking.failures, collection=name,
        objects=count_objects(client, name) if client.collections.exists(name) else 0,
        written=len(report.inserted), deleted=len(report.deleted))


def record_account_ingest(settings: Settings, reports: dict[str, SyncReport]) -> dict:
    """Write the accounts half of the ingest manifest after the tenants were synced."""
    return record_accounts(settings, version=file_set_version(scan_documents(settings.accounts_dir)),
                           collection=accounts_collection_name(settings.embedding_model), tenants=list(reports))


def _for_writes(settings: Settings, collection):
    """Writes and the reads that plan them at the write consistency level (QUORUM by default)."""
    return with_consistency(collection, settings.weaviate_write_consistency, settings.weaviate_replication_factor > 1)


def _for_reads(settings: Settings, collection):
    """Searches at the read consistency level (ONE by default: any live replica answers)."""
    return with_consistency(collection, settings.weaviate_read_consistency, settings.weaviate_replication_factor > 1)


ACTIVE_STATES = ("ACTIVE", "HOT")


def tenant_states(client, settings: Settings) -> dict[str, str]:
    """customer id -> its tenant's activity status (ACTIVE, INACTIVE, ...)."""
    name = accounts_collection_name(settings.embedding_model)
    if not client.collections.exists(name):
        return {}
    return {key: _status(t) for key, t in client.collections.get(name).tenants.get().items()}


def _status(tenant) -> str:
    status = tenant.activity_status
    return {"HOT": "ACTIVE", "COLD": "INACTIVE", "FROZEN": "OFFLOADED"}.get(status.value, status.value)


def set_tenant_activity(client, settings: Settings, customer_ids, active: bool) -> list[str]:
    """Mark tenants ACTIVE (loaded: memory, open files) or INACTIVE ("COLD": kept on disk, nothing in
    memory); returns the ones that changed. An inactive customer's data is untouched and comes back
    when the customer asks (``search`` re-activates it)."""
    from weaviate.classes.tenants import Tenant, TenantActivityStatus

    wanted = "ACTIVE" if active else "INACTIVE"
    states = tenant_states(client, settings)
    change = [c for c in sorted(set(customer_ids)) if c in states and states[c] != wanted]
    collection = client.collections.get(accounts_collection_name(settings.embedding_model))
    status = TenantActivityStatus.ACTIVE if active else TenantActivityStatus.INACTIVE
    for start in range(0, len(change), 100):
        collection.tenants.update([Tenant(name=c, activity_status=status) for c in change[start : start + 100]])
    return change


@dataclass
class IngestReport:
    chunking: ChunkingResult
    documents: SyncReport
    accounts: dict[str, SyncReport]


def ingest_knowledge(client, settings: Settings, show_progress: bool = False) -> IngestReport:
    """The whole knowledge path once, without Dagster: every document under ``settings.docs_dir`` and
    every account under ``settings.accounts_dir`` into ``client``. Used by the CLI, tests and benchmarks;
    the Dagster assets run the same steps one asset at a time."""
    chunking = build_document_chunks(
        scan_documents(settings.docs_dir), settings.cache_dir, show_progress,
        max_document_bytes=settings.max_document_bytes, parse_timeout_s=settings.parse_timeout_s,
        parse_workers=settings.parse_workers,
    )
    documents = index_documents(client, settings, chunking, show_progress)
    record_document_ingest(client, settings, chunking, documents)
    accounts = index_accounts(client, settings, load_accounts(settings.accounts_dir))
    record_account_ingest(settings, accounts)
    return IngestReport(chunking, documents, accounts)


def count_objects(client, name: str, tenant: str | None = None) -> int:
    collection = client.collections.get(name)
    if tenant:
        collection = collection.with_tenant(tenant)
    return collection.aggregate.over_all(total_count=True).total_count


def customer_exists(client, settings: Settings, customer_id: str) -> bool:
    return _customer_tenant(client, settings, customer_id) is not None


def _customer_tenant(client, settings: Settings, customer_id: str):
    name = accounts_collection_name(settings.embedding_model)
    if not client.collections.exists(name):
        return None
    return client.collections.get(name).tenants.get_by_names([customer_id]).get(customer_id)


def account_record(client, settings: Settings, customer_id: str) -> dict[str, str] | None:
    """The customer's account fields as stored in their tenant (its overview chunk; None without one).
    Read per request, like the search, so an account update is seen by the next answer; an unknown
    customer raises ``UnknownCustomer`` (asked only when the read failed, as ``_search_tenant`` does)."""
    collection = _for_reads(settings, client.collections.get(accounts_collection_name(settings.embedding_model)))
    chunks = _search_tenant(client, settings, customer_id, lambda: document_chunks_of(
        collection, f"account:{customer_id}", tenant=customer_id))
    overview = next((chunk for chunk in chunks if chunk.section == OVERVIEW_SECTION), None)
    return overview_fields(overview.text) if overview else None


def document_texts(client, settings: Settings, doc_ids) -> dict[str, str]:
    """The whole stored text of shared documents (their chunks in reading order, each as "title — section:
    text"), one query for all: what a document says as a whole (a known issue's status is in its first
    section, the chunk a search returns is often another one)."""
    name = knowledge_collection_name(settings.embedding_model)
    chunks = _search_if_present(client, name, lambda: documents_chunks_of(
        _for_reads(settings, client.collections.get(name)), doc_ids))
    return {doc_id: "\n".join(f"{c.title} — {c.section}: {c.text}" for c in doc_chunks)
            for doc_id, doc_chunks in (chunks or {}).items() if doc_chunks}


def activate_customer(client, settings: Settings, customer_id: str) -> bool:
    """Make the customer's tenant answer: re-activate it when it was deactivated (COLD). Raises
    ``UnknownCustomer`` when there is no such tenant; returns True when it had to be re-activated."""
    tenant = _customer_tenant(client, settings, customer_id)
    if tenant is None:
        raise UnknownCustomer(f"unknown customer id {customer_id!r}: no account data is indexed for it")
    if _status(tenant) in ACTIVE_STATES:
        return False
    set_tenant_activity(client, settings, [customer_id], active=True)
    logger.info("tenant %s was %s: re-activated for a query", customer_id, _status(tenant))
    return True


def _search_if_present(client, name: str, run) -> list[SearchHit]:
    """``run()``, or no hits when the collection does not exist (nothing ingested yet). Asking first
    would cost a round trip on every query; asking only when the query failed costs none."""
    from weaviate.exceptions import WeaviateQueryError

    try:
        return run()
    except WeaviateQueryError:
        if client.collections.exists(name):
            raise
        return []


def _search_tenant(client, settings: Settings, customer_id: str, run) -> list[SearchHit]:
    """``run()`` on the customer's tenant, asking about the tenant only when the query failed.

    The accounts collection activates a COLD tenant on access (``auto_tenant_activation``), so the
    query itself is enough on the normal path. Reading tenants first would cost a round trip per query
    and is a schema read that Weaviate serves through its raft leader: with the leader just killed it
    stalls until a new one is elected, where the query does not. On failure: an unknown customer raises
    ``UnknownCustomer``; a tenant that was deactivated without auto-activation is activated and asked again."""
    from weaviate.exceptions import WeaviateQueryError

    try:
        return run()
    except WeaviateQueryError:
        if activate_customer(client, settings, customer_id):  # UnknownCustomer when there is no tenant
            return run()
        raise


def search(
    client,
    settings: Settings,
    query: str,
    customer_id: str | None = None,
    k: int = 5,
    alpha: float = 0.6,
    tenant_slots: int = 2,
) -> list[SearchHit]:
    """Tenant-scoped hybrid search: the shared knowledge plus, with a customer id, that customer's own
    tenant and no other. Up to ``tenant_slots`` of the k places are kept for the customer's own data
    (shared documents are many and would otherwise crowd it out); the rest is merged by score."""
    if not query.strip():
        raise ValueError("query is empty")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    vector = Embedder(settings.embedding_model).embed_query(query)
    name = knowledge_collection_name(settings.embedding_model)
    shared = _search_if_present(client, name, lambda: hybrid_search(
        _for_reads(settings, client.collections.get(name)), query, vector, k, alpha))
    if not customer_id:
        return shared
    accounts = _for_reads(settings, client.collections.get(accounts_collection_name(settings.embedding_model)))
    own = _search_tenant(client, settings, customer_id,
                         lambda: hybrid_search(accounts, query, vector, k, alpha, tenant=customer_id))
    reserved = own[: min(tenant_slots, k)]
    rest = sorted(shared + own[len(reserved):], key=lambda hit: hit.score, reverse=True)[: k - len(reserved)]
    return sorted(reserved + rest, key=lambda hit: hit.score, reverse=True)
