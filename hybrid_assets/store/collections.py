"""Our Weaviate collections: one per embedding model (vectors never mix), bring-your-own vectors,
BM25 + vector hybrid search. Account data lives in a multi-tenant collection, one tenant per
customer, so a query scoped to customer A can never read customer B's objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybrid_assets.models.embedding import model_slug

# BM25 searches one property, ``search_text``: the chunk's headings (weighted) and body (``search_text_of``).
# Searching the three stored fields (BM25F over text, title and section) cost 3x the latency for the same
# recall@5 (benchmarks/RESULTS.md, search latency): each searched property is a separate posting-list walk
# whose results are merged, and the short title / section fields repeat their words in every chunk of a
# document.
SEARCH_TEXT = "search_text"
SEARCHED_PROPERTIES = [SEARCH_TEXT]
# What collections written before ``search_text`` existed are searched over, until an ingest upgrades
# them (``ensure_collection``).
LEGACY_SEARCHED_PROPERTIES = ["text", "title", "section"]
# In a collection's description: every object of it has ``search_text`` (set when created so, or once
# ``upgrade_search_text`` has backfilled every object).
SEARCH_TEXT_MARK = "[bm25: search_text]"
# One search returns at most this many chunks: more is never useful as context, and a server refuses
# limits above its QUERY_MAXIMUM_RESULTS with an error a user should not have to read.
MAX_SEARCH_K = 100


def knowledge_collection_name(model_name: str) -> str:
    return f"Knowledge_{model_slug(model_name)}"


def accounts_collection_name(model_name: str) -> str:
    return f"Accounts_{model_slug(model_name)}"


@dataclass(frozen=True)
class SearchHit:
    chunk_id: str
    doc_id: str
    title: str
    section: str
    text: str
    score: float
    collection: str
    tenant: str | None = None
    similarity: float | None = None  # cosine(query, chunk) on the embeddings: an absolute relevance signal


def heading_of(title: str, section: str) -> str:
    """A chunk's headings: the document title, and the section when it has its own."""
    return title if section in ("", title) else f"{title} — {section}"


def embedding_text_of(title: str, section: str, text: str) -> str:
    """What a chunk's vector embeds: its headings over its body, so a short chunk keeps its topic."""
    return f"{heading_of(title, section)}\n{text}"


def search_text_of(title: str, section: str, text: str) -> str:
    """What BM25 searches: the embedded text with its headings HEADING_WEIGHT times, BM25F's field weight
    written out (a term's frequency counts once per copy), as the separate title and section fields
    weighed them."""
    return "\n".join([heading_of(title, section)] * HEADING_WEIGHT + [text])


HEADING_WEIGHT = 2


def chunk_object(doc_id: str, title: str, section: str, text: str, position: int) -> dict:
    """A chunk as a Weaviate object's properties (the id and vector travel beside them)."""
    return {"doc_id": doc_id, "title": title, "section": section, "text": text, "position": position,
            SEARCH_TEXT: search_text_of(title, section, text)}


def _search_text_property():
    from weaviate.classes.config import DataType, Property, Tokenization

    return Property(name=SEARCH_TEXT, data_type=DataType.TEXT, tokenization=Tokenization.WORD)


def _properties():
    from weaviate.classes.config import DataType, Property, Tokenization

    # Only search_text is BM25-indexed; the stored fields are read back, and doc_id is filtered on.
    return [
        Property(name="doc_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD, index_searchable=False),
        Property(name="title", data_type=DataType.TEXT, tokenization=Tokenization.WORD, index_searchable=False),
        Property(name="section", data_type=DataType.TEXT, tokenization=Tokenization.WORD, index_searchable=False),
        Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD, index_searchable=False),
        Property(name="position", data_type=DataType.INT, index_searchable=False),
        _search_text_property(),
    ]


def ensure_collection(client, name: str, multi_tenant: bool = False, replication_factor: int = 1, shards: int = 1):
    """Create the collection if missing (idempotent) and return it; a collection written before
    ``search_text`` existed is upgraded first (``upgrade_search_text``), so every write that follows
    stores it.

    ``replication_factor`` > 1 (a cluster): every shard lives on that many nodes; asynchronous
    replication repairs a replica that missed writes while it was down, and a delete wins over a
    stale copy (``DELETE_ON_CONFLICT``), so a removed chunk never comes back with a rejoining node.
    ``shards``: how many pieces a (single-tenant) collection is split into across the nodes. One shard
    (replicated) keeps BM25 statistics, and so hybrid rankings, identical to a single server; more
    shards spread a collection that one node cannot hold. A multi-tenant collection has one shard
    per tenant, so it takes no shard count."""
    from weaviate.classes.config import Configure, ReplicationDeletionStrategy, VectorDistances

    if not client.collections.exists(name):
        client.collections.create(
            name,
            description=f"hybrid_assets chunks (bring-your-own vectors) {SEARCH_TEXT_MARK}",
            vector_config=Configure.Vectors.self_provided(
                vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
            ),
            properties=_properties(),
            multi_tenancy_config=(
                Configure.multi_tenancy(enabled=True, auto_tenant_creation=False, auto_tenant_activation=True)
                if multi_tenant
                else None
            ),
            sharding_config=None if multi_tenant else Configure.sharding(desired_count=shards),
            replication_config=(
                Configure.replication(factor=replication_factor, async_enabled=True,
                                      deletion_strategy=ReplicationDeletionStrategy.DELETE_ON_CONFLICT)
                if replication_factor > 1
                else None
            ),
        )
        return client.collections.get(name)
    collection = client.collections.get(name)
    upgrade_search_text(collection)
    return collection


def upgrade_search_text(collection, batch_size: int = 200) -> int:
    """Give every object of a collection written before ``search_text`` existed its ``search_text``
    (every tenant's, in a multi-tenant one), then mark the collection. Objects are rewritten with their
    own ids, properties and vectors (an upsert: nothing is re-embedded, nothing removed); a run cut
    short leaves the mark unset, so the next ingest runs it again. Returns the objects rewritten (0
    when the collection was marked already)."""
    from weaviate.classes.data import DataObject

    config = collection.config.get()
    if SEARCH_TEXT_MARK in (config.description or ""):
        return 0
    if SEARCH_TEXT not in {p.name for p in config.properties}:
        collection.config.add_property(_search_text_property())
    multi_tenant = bool(config.multi_tenancy_config and config.multi_tenancy_config.enabled)
    targets = [collection.with_tenant(name) for name in sorted(collection.tenants.get())] if multi_tenant \
        else [collection]
    rewritten = 0
    for target in targets:
        batch: list = []
        for obj in target.iterator(include_vector=True):
            p = obj.properties
            vector = obj.vector.get("default") if isinstance(obj.vector, dict) else obj.vector
            batch.append(DataObject(uuid=obj.uuid, vector=vector, properties=chunk_object(
                p["doc_id"], p.get("title") or "", p.get("section") or "", p.get("text") or "",
                int(p.get("position") or 0))))
            if len(batch) >= batch_size:
                rewritten += _rewrite(target, batch)
                batch = []
        if batch:
            rewritten += _rewrite(target, batch)
    collection.config.update(description=f"{(config.description or '').strip()} {SEARCH_TEXT_MARK}".strip())
    return rewritten


def _rewrite(target, batch: list) -> int:
    result = target.data.insert_many(batch)
    if result.has_errors:
        first = next(iter(result.errors.values()))
        raise RuntimeError(f"upgrading {target.name} to search_text failed: {first.message}")
    return len(batch)


def with_consistency(collection, level: str, replicated: bool = True):
    """The collection (or tenant) with a consistency level (ONE | QUORUM | ALL) for every call made
    through it. Unreplicated (one copy of each shard) every level means the same: left as it is."""
    from weaviate.classes.config import ConsistencyLevel

    return collection.with_consistency_level(ConsistencyLevel[level]) if replicated else collection


def existing_chunk_ids(collection) -> dict[str, set[str]]:
    """doc_id -> ids of the chunks stored for it (the source of truth for incremental sync)."""
    by_doc: dict[str, set[str]] = {}
    for obj in collection.iterator(return_properties=["doc_id"]):
        by_doc.setdefault(obj.properties["doc_id"], set()).add(str(obj.uuid))
    return by_doc


def hybrid_search(collection, query: str, vector: list[float], limit: int, alpha: float = 0.5,
                  tenant: str | None = None) -> list[SearchHit]:
    from weaviate.classes.query import MetadataQuery

    if not 1 <= limit <= MAX_SEARCH_K:
        raise ValueError(f"k must be between 1 and {MAX_SEARCH_K}, got {limit}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 (BM25 only) and 1 (vectors only), got {alpha}")
    from weaviate.exceptions import WeaviateQueryError

    target = collection.with_tenant(tenant) if tenant else collection

    def run(properties):
        return target.query.hybrid(query=query, vector=vector, alpha=alpha, limit=limit, query_properties=properties,
                                   return_metadata=MetadataQuery(score=True), include_vector=True)

    try:
        result = run(SEARCHED_PROPERTIES)
    except WeaviateQueryError as exc:
        # A collection no ingest has upgraded yet (``upgrade_search_text``) has no search_text: it is
        # searched as it was written. Any other error is not ours to hide.
        if SEARCH_TEXT not in str(exc):
            raise
        result = run(LEGACY_SEARCHED_PROPERTIES)
    return [
        SearchHit(
            chunk_id=str(obj.uuid),
            doc_id=obj.properties["doc_id"],
            title=obj.properties.get("title") or "",
            section=obj.properties.get("section") or "",
            text=obj.properties.get("text") or "",
            score=float(obj.metadata.score or 0.0),
            collection=collection.name,
            tenant=tenant,
            similarity=_cosine(vector, obj.vector.get("default") if isinstance(obj.vector, dict) else obj.vector),
        )
        for obj in result.objects
    ]


def _cosine(a: list[float], b: list[float] | None) -> float | None:
    # The hybrid score is rank-relative (the best hit of any query scores ~1), so it cannot tell an
    # off-topic question from a good one; the raw cosine can.
    if not b:
        return None
    dot = sum(x * y for x, y in zip(a, b))
    norm = (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5
    return dot / norm if norm else 0.0


@dataclass(frozen=True)
class StoredChunk:
    chunk_id: str
    doc_id: str
    title: str
    section: str
    text: str
    position: int


def document_chunks_of(collection, doc_id: str, tenant: str | None = None, limit: int = 1000) -> list[StoredChunk]:
    """Every stored chunk of one document (or of one customer's account, in its tenant), in reading order."""
    from weaviate.classes.query import Filter

    target = collection.with_tenant(tenant) if tenant else collection
    result = target.query.fetch_objects(filters=Filter.by_property("doc_id").equal(doc_id), limit=limit)
    return _reading_order([_stored_chunk(obj) for obj in result.objects])


def _stored_chunk(obj) -> StoredChunk:
    return StoredChunk(str(obj.uuid), obj.properties["doc_id"], obj.properties.get("title") or "",
                       obj.properties.get("section") or "", obj.properties.get("text") or "",
                       int(obj.properties.get("position") or 0))


def _reading_order(chunks: list[StoredChunk]) -> list[StoredChunk]:
    return sorted(chunks, key=lambda chunk: (chunk.position, chunk.chunk_id))


def documents_chunks_of(collection, doc_ids, limit: int = 2000) -> dict[str, list[StoredChunk]]:
    """Every stored chunk of several documents in one query (doc id -> chunks in reading order)."""
    from weaviate.classes.query import Filter

    doc_ids = sorted(set(doc_ids))
    if not doc_ids:
        return {}
    result = collection.query.fetch_objects(filters=Filter.by_property("doc_id").contains_any(doc_ids), limit=limit)
    found: dict[str, list[StoredChunk]] = {doc_id: [] for doc_id in doc_ids}
    for obj in result.objects:
        chunk = _stored_chunk(obj)
        found.setdefault(chunk.doc_id, []).append(chunk)
    return {doc_id: _reading_order(chunks) for doc_id, chunks in found.items()}


def tenant_object_counts(collection) -> dict[str, int]:
    """Objects per tenant of a multi-tenant collection."""
    return {name: collection.with_tenant(name).aggregate.over_all(total_count=True).total_count
            for name in sorted(collection.tenants.get())}
