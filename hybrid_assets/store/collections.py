"""Our Weaviate collections: one per embedding model (vectors never mix), bring-your-own vectors,
BM25 + vector hybrid search. Account data lives in a multi-tenant collection, one tenant per
customer, so a query scoped to customer A can never read customer B's objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybrid_assets.models.embedding import model_slug

TEXT_PROPERTIES = ["text", "title", "section"]  # searched by BM25
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


def _properties():
    from weaviate.classes.config import DataType, Property, Tokenization

    return [
        Property(name="doc_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD, index_searchable=False),
        Property(name="title", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
        Property(name="section", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
        Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
        Property(name="position", data_type=DataType.INT, index_searchable=False),
    ]


def ensure_collection(client, name: str, multi_tenant: bool = False, replication_factor: int = 1, shards: int = 1):
    """Create the collection if missing (idempotent) and return it.

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
            description="hybrid_assets chunks (bring-your-own vectors)",
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
    target = collection.with_tenant(tenant) if tenant else collection
    result = target.query.hybrid(
        query=query,
        vector=vector,
        alpha=alpha,
        limit=limit,
        query_properties=TEXT_PROPERTIES,
        return_metadata=MetadataQuery(score=True),
        include_vector=True,
    )
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
