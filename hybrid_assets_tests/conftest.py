"""Shared fixtures. Integration tests run a real weaviate-server (the cached build) on test-only
ports with a throw-away data folder; each test starts from empty collections."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from hybrid_assets.settings import PROJECT_ROOT, apply_offline_env, load_settings

apply_offline_env()
# Tests run on the defaults (plus what each test sets), never on a developer's .env: point the settings
# at a file that does not exist unless the caller chose one on purpose.
os.environ.setdefault("HYBRID_ENV_FILE", str(Path(__file__).resolve().parent / "no-dotenv-in-tests"))
# Tests train and promote their own small adapters; the shipped release adapter would be the champion
# they must beat. The release tests (behaviour/test_release.py) point at it explicitly.
os.environ.setdefault("HYBRID_RELEASE_ADAPTER", "none")

# Overridable so two test sessions (e.g. two engineers' worktrees) on one host do not share a server.
TEST_HTTP_PORT = os.environ.get("HYBRID_TEST_WEAVIATE_HTTP_PORT", "8279")
TEST_GRPC_PORT = os.environ.get("HYBRID_TEST_WEAVIATE_GRPC_PORT", "50259")
SAMPLE_DATA = PROJECT_ROOT / "data"


@pytest.fixture(scope="session")
def weaviate_server(tmp_path_factory):
    """One real Weaviate server for the whole test session, stopped at the end."""
    from hybrid_assets.store.server import EmbeddedServer

    settings = load_settings()
    server = EmbeddedServer(
        binary=EmbeddedServer.from_settings(settings).binary,
        data_dir=tmp_path_factory.mktemp("weaviate"),
        http_port=int(TEST_HTTP_PORT),
        grpc_port=int(TEST_GRPC_PORT),
    )
    if not server.binary.exists():
        pytest.fail(f"weaviate-server binary missing at {server.binary}: run `make setup`")
    if server.is_ready():  # someone else's server (another session, a killed run): never test against it
        pytest.fail(f"a Weaviate server already answers on the test port {TEST_HTTP_PORT} (another test session, "
                    "or one left by a killed run): stop it, or set HYBRID_TEST_WEAVIATE_HTTP_PORT/_GRPC_PORT")
    server.start()
    yield server
    server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def served_in_thread(app, start_timeout: float = 60.0, stop_timeout: float = 60.0):
    """``app`` behind a real uvicorn server on a free loopback port, in a thread of this process (so a
    test can hold the engine's lock or read the scheduler); yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=stop_timeout)


@contextlib.contextmanager
def on_test_weaviate(data: Path):
    """For module-scoped fixtures (``settings`` below is per test): the environment pointed at ``data``
    and the session's test Weaviate, no token, the collections emptied; yields (settings, client) and
    restores the environment at the end."""
    from hybrid_assets.store.client import open_client

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYBRID_DATA_DIR", str(data))
        patch.setenv("WEAVIATE_HTTP_PORT", TEST_HTTP_PORT)
        patch.setenv("WEAVIATE_GRPC_PORT", TEST_GRPC_PORT)
        patch.delenv("WEAVIATE_URL", raising=False)
        patch.delenv("HYBRID_API_TOKEN", raising=False)
        settings = load_settings()
        with open_client(settings, start_embedded=False) as client:
            client.collections.delete_all()
            yield settings, client


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A private copy of the sample knowledge, behaviour and serving data that a test may edit freely."""
    target = tmp_path / "data"
    for part in ("knowledge/docs", "knowledge/accounts", "behaviour", "serving"):
        if (SAMPLE_DATA / part).exists():
            shutil.copytree(SAMPLE_DATA / part, target / part)
    return target


@pytest.fixture
def settings(monkeypatch, data_dir, weaviate_server):
    """Settings pointing at the private data copy and the test Weaviate server (collections emptied)."""
    monkeypatch.setenv("HYBRID_DATA_DIR", str(data_dir))
    monkeypatch.setenv("WEAVIATE_HTTP_PORT", TEST_HTTP_PORT)
    monkeypatch.setenv("WEAVIATE_GRPC_PORT", TEST_GRPC_PORT)
    monkeypatch.delenv("WEAVIATE_URL", raising=False)
    settings = load_settings()
    from hybrid_assets.store.client import open_client

    with open_client(settings, start_embedded=False) as client:
        client.collections.delete_all()
    return settings


@pytest.fixture
def client(settings):
    from hybrid_assets.store.client import open_client

    with open_client(settings, start_embedded=False) as client:
        yield client
