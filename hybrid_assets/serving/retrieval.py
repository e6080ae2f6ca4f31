"""Retrieval for an answer: shared knowledge + the customer's own tenant, each chunk with a short
citable id (S1, S2, ...) that maps back to its Weaviate chunk id."""

from __future__ import annotations

from dataclasses import dataclass

from hybrid_assets.knowledge.pipeline import search
from hybrid_assets.prompting import ContextPassage
from hybrid_assets.settings import Settings
from hybrid_assets.store.collections import SearchHit


@dataclass(frozen=True)
class Retrieved:
    passages: list[ContextPassage]
    hits: dict[str, SearchHit]  # short id -> the hit it stands for
    seconds: float

    def chunk_id(self, short_id: str) -> str | None:
        hit = self.hits.get(short_id)
        return hit.chunk_id if hit else None


def retrieve(client, settings: Settings, ticket: str, customer_id: str | None, k: int, alpha: float = 0.6) -> Retrieved:
    import time

    started = time.perf_counter()
    hits = search(client, settings, ticket, customer_id=customer_id, k=k, alpha=alpha)
    short = {f"S{i}": hit for i, hit in enumerate(hits, 1)}
    passages = [
        ContextPassage(short_id, hit.doc_id if not hit.tenant else f"account:{hit.tenant}", _passage_text(hit))
        for short_id, hit in short.items()
    ]
    return Retrieved(passages, short, time.perf_counter() - started)


def _passage_text(hit: SearchHit) -> str:
    heading = hit.section if hit.section and hit.section != hit.title else ""
    return f"{hit.title}{' — ' + heading if heading else ''}: {' '.join(hit.text.split())}"
