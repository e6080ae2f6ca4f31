"""Stale chunks always go, and the report counts only what really went (issue #10, item 4).

A filtered delete can match fewer objects than it was asked to delete: the server caps one batch
delete at QUERY_MAXIMUM_RESULTS, and an object half-written by a crash can be missing from the id
index that filters read. Either way the old code reported every id as deleted while the objects
stayed, so every later run printed "N deleted" and the object count never matched the chunks. Here
a real server with a small QUERY_MAXIMUM_RESULTS makes the filtered delete fall short for real.
"""

from __future__ import annotations

import dataclasses

import pytest

from hybrid_assets.knowledge.chunking import Chunk, chunk_id
from hybrid_assets.models.embedding import Embedder
from hybrid_assets.knowledge.indexing import sync_collection
from hybrid_assets.settings import load_settings
from hybrid_assets.store.client import connect
from hybrid_assets.store.collections import ensure_collection, existing_chunk_ids
from hybrid_assets.store.server import EmbeddedServer

pytestmark = pytest.mark.integration

HTTP, GRPC = 8779, 50779
CAP = 100  # the server's QUERY_MAXIMUM_RESULTS; one delete batch below asks for 150


@pytest.fixture
def capped_client(tmp_path, monkeypatch):
    monkeypatch.setenv("QUERY_MAXIMUM_RESULTS", str(CAP))  # read by the server process's environment
    binary = EmbeddedServer.from_settings(load_settings()).binary
    server = EmbeddedServer(binary, tmp_path / "wv", HTTP, GRPC)
    server.start()
    settings = dataclasses.replace(load_settings(), weaviate_url=None, weaviate_http_port=HTTP, weaviate_grpc_port=GRPC)
    client = connect(settings, start_embedded=False)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def chunks(doc_id: str, n: int) -> list[Chunk]:
    rows = []
    for i in range(n):
        text = f"Fact number {i} about {doc_id}."
        rows.append(Chunk(chunk_id(doc_id, "S", text), doc_id, doc_id, "S", text, i))
    return rows


def test_deletes_beyond_the_filter_cap_really_happen_and_are_counted(capped_client):
    collection = ensure_collection(capped_client, "Knowledge_capped")
    embedder = Embedder(load_settings().embedding_model)
    keep, old = chunks("keep.md", 3), chunks("old.md", 150)
    first = sync_collection(collection, {"keep.md": keep, "old.md": old}, embedder, batch_size=200)
    assert len(first.inserted) == 153

    removal = sync_collection(collection, {"keep.md": keep}, embedder, batch_size=200)
    stored = existing_chunk_ids(collection)
    assert stored == {"keep.md": {c.chunk_id for c in keep}}, "stale chunks lingered"
    assert sorted(removal.deleted) == sorted(c.chunk_id for c in old)

    again = sync_collection(collection, {"keep.md": keep}, embedder, batch_size=200)
    assert again.deleted == [] and again.inserted == [], "a converged index must report no work"
