"""Weaviate lifecycle: the project starts a real server, reuses a running one, stops it cleanly;
an unreachable or missing server is one clear error within seconds, not minutes of retries."""

from __future__ import annotations

import dataclasses
import time

import pytest

from hybrid_assets.settings import load_settings
from hybrid_assets.store.client import connect
from hybrid_assets.store.server import EmbeddedServer, WeaviateUnavailable


def test_unreachable_remote_is_a_fast_clear_error(monkeypatch):
    monkeypatch.setenv("WEAVIATE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    started = time.monotonic()
    with pytest.raises(WeaviateUnavailable, match="127.0.0.1:9 is not reachable"):
        connect()
    assert time.monotonic() - started < 10


def test_missing_binary_names_the_fix(tmp_path):
    server = EmbeddedServer(tmp_path / "nope" / "weaviate-server", tmp_path / "data", 8479, 50459)
    with pytest.raises(WeaviateUnavailable, match="install_weaviate.sh"):
        server.start()


def test_embedded_not_running_and_not_started_is_clear(monkeypatch):
    monkeypatch.delenv("WEAVIATE_URL", raising=False)
    monkeypatch.setenv("WEAVIATE_HTTP_PORT", "8489")
    with pytest.raises(WeaviateUnavailable, match="hybrid-assets weaviate start"):
        connect(start_embedded=False)


@pytest.mark.integration
def test_start_reuse_stop(tmp_path):
    binary = EmbeddedServer.from_settings(load_settings()).binary
    server = EmbeddedServer(binary, tmp_path / "wv", 8579, 50559)
    try:
        assert server.start() == "started"
        assert server.is_ready() and server.pid() is not None
        assert server.start() == "running"  # reused, not a second process
        settings = dataclasses.replace(
            load_settings(), data_dir=tmp_path, weaviate_url=None, weaviate_http_port=8579, weaviate_grpc_port=50559
        )
        client = connect(settings, start_embedded=False)
        try:
            assert client.is_ready()
        finally:
            client.close()
    finally:
        assert server.stop() is True
    assert not server.is_ready() and server.pid() is None
    assert server.stop() is False
