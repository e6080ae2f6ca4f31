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
    server = EmbeddedServer(tmp_path / "nope" / "weaviate-server", tmp_path / "data", 8689, 50689)
    with pytest.raises(WeaviateUnavailable, match="install_weaviate.sh"):
        server.start()


def test_embedded_not_running_and_not_started_is_clear(monkeypatch):
    monkeypatch.delenv("WEAVIATE_URL", raising=False)
    monkeypatch.setenv("WEAVIATE_HTTP_PORT", "8489")
    with pytest.raises(WeaviateUnavailable, match="hybrid-assets weaviate start"):
        connect(start_embedded=False)


def test_hybrid_candidate_depth_is_upstreams_unless_the_user_sets_it(tmp_path, monkeypatch):
    from hybrid_assets.store.server import HYBRID_CANDIDATES

    server = EmbeddedServer(tmp_path / "weaviate-server", tmp_path / "data", 8689, 50689)
    monkeypatch.delenv("QUERY_HYBRID_MAXIMUM_RESULTS", raising=False)
    assert server._env()["QUERY_HYBRID_MAXIMUM_RESULTS"] == HYBRID_CANDIDATES == "100"
    monkeypatch.setenv("QUERY_HYBRID_MAXIMUM_RESULTS", "40")  # benchmarks/search_latency.py --depths sets it so
    assert server._env()["QUERY_HYBRID_MAXIMUM_RESULTS"] == "40"


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


def test_listening_sockets_tells_loopback_from_every_interface(tmp_path):
    """The detector the start-up refusal and the loopback test rely on: it must see a real listener
    on all interfaces as public and one on 127.0.0.1 as loopback."""
    import subprocess
    import sys

    from hybrid_assets.store.server import is_loopback, listening_sockets

    code = (
        "import socket,sys,time\n"
        "a=socket.socket(); a.bind(('0.0.0.0',0)); a.listen()\n"
        "b=socket.socket(); b.bind(('127.0.0.1',0)); b.listen()\n"
        "print(a.getsockname()[1], b.getsockname()[1], flush=True); time.sleep(30)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        public_port, local_port = map(int, process.stdout.readline().split())
        found = dict((port, ip) for ip, port in listening_sockets(process.pid))
        assert found[public_port] == "0.0.0.0" and not is_loopback(found[public_port])
        assert is_loopback(found[local_port])
    finally:
        process.kill()
        process.wait()


@pytest.mark.integration
def test_embedded_server_listens_on_loopback_only(tmp_path):
    """Every socket of the embedded server (REST, gRPC, gossip, cluster data, raft, and no Go profiler)
    is bound to loopback, read from the process's own open sockets: before the listen-host patch the
    gRPC and cluster data ports (and pprof on 6060) listened on every interface."""
    from hybrid_assets.store.server import is_loopback, listening_sockets

    binary = EmbeddedServer.from_settings(load_settings()).binary
    server = EmbeddedServer(binary, tmp_path / "wv", 8679, 50659)
    try:
        server.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # gRPC and the cluster API come up just after REST is ready
            sockets = listening_sockets(server.pid())
            ports = {port for _, port in sockets}
            if {8679, 50659, 8679 + 11}.issubset(ports):
                break
            time.sleep(0.5)
        assert {8679, 50659, 8679 + 10, 8679 + 11, 8679 + 12}.issubset(ports), sockets
        public = [(ip, port) for ip, port in sockets if not is_loopback(ip)]
        assert public == [], f"listening beyond loopback: {public}"
        assert 6060 not in ports
    finally:
        server.stop()
