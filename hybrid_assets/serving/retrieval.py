"""Retrieval for an answer: shared knowledge + the customer's own tenant, each chunk with a short
citable id (S1, S2, ...) that maps back to its Weaviate chunk id."""

from __future__ import annotations

import time
from dataclasses import dataclass

from hybrid_assets.knowledge.pipeline import search
from hybrid_assets.models.embedding import Embedder
from hybrid_assets.prompting import ACCOUNT_SOURCE, ContextPassage
from hybrid_assets.settings import Settings
from hybrid_assets.store.collections import SearchHit, hybrid_search


@dataclass(frozen=True)
class Retrieved:
    passages: list[ContextPassage]
    hits: dict[str, SearchHit]  # short id -> the hit it stands for
    seconds: float

    @property
    def top_similarity(self) -> float | None:
        """The best passage's cosine similarity to the query (None when nothing passed the floor or no
        hit carries one): the retrieval's own evidence that the context is about the ticket."""
        values = [hit.similarity for hit in self.hits.values() if hit.similarity is not None]
        return max(values) if values else None

    def chunk_id(self, short_id: str) -> str | None:
        hit = self.hits.get(short_id)
        return hit.chunk_id if hit else None


def retrieve(client, settings: Settings, ticket: str, customer_id: str | None, k: int, alpha: float = 0.6) -> Retrieved:
    """Tenant-scoped hybrid search over the live knowledge (see ``knowledge.pipeline.search``)."""
    started = time.perf_counter()
    hits = search(client, settings, ticket, customer_id=customer_id, k=k, alpha=alpha)
    return as_retrieved(hits, time.perf_counter() - started, settings.min_relevance)


def retrieve_from_collection(client, settings: Settings, collection_name: str, query: str, k: int,
                             alpha: float = 0.6) -> Retrieved:
    """Hybrid search over any chunk collection (an evaluation corpus), with the same relevance floor."""
    started = time.perf_counter()
    vector = Embedder(settings.embedding_model).embed_query(query)
    hits = hybrid_search(client.collections.get(collection_name), query, vector, k, alpha)
    return as_retrieved(hits, time.perf_counter() - started, settings.min_relevance)


def as_retrieved(hits: list[SearchHit], seconds: float, min_relevance: float) -> Retrieved:
    # Relevance floor: chunks unrelated to the ticket are noise the model might "use"; without them an
    # off-topic ticket has nothing to cite and is answered as not answerable.
    hits = [hit for hit in hits if hit.similarity is None or hit.similarity >= min_relevance]
    short = {f"S{i}": hit for i, hit in enumerate(hits, 1)}
    passages = [
        ContextPassage(short_id, hit.doc_id if not hit.tenant else f"{ACCOUNT_SOURCE}{hit.tenant}", _passage_text(hit))
        for short_id, hit in short.items()
    ]
    return Retrieved(passages, short, seconds)


def _passage_text(hit: SearchHit) -> str:
    heading = hit.section if hit.section and hit.section != hit.title else ""
    return f"{hit.title}{' — ' + heading if heading else ''}: {' '.join(hit.text.split())}"
