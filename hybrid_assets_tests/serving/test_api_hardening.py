"""API status codes and hardening (issue #10, items 6 and 7a), against the real app:

- no token -> 401 before the body is read (whatever the body); with the token a malformed or
  whitespace-only body -> 422 naming the field; the engine is never reached for either;
- a body over the limit -> 413 as soon as the limit is crossed, for Content-Length and chunked bodies,
  with the connection closed while the client could still send more, and no growth of the server;
- Weaviate down -> 503 (+ Retry-After) on /v1/answer and on /healthz, so a load balancer stops routing;
- /docs and /redoc work offline: their JS/CSS come from this app, no CDN URL in the page.

The auth / size / validation checks run in a real uvicorn server (a subprocess, so its memory can be
measured) whose engine raises if it is ever called: those checks all come before the engine. The
Weaviate-down test uses the real engine and a real Weaviate server of its own that it stops.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybrid_assets.settings import PROJECT_ROOT, load_settings
from hybrid_assets_tests.conftest import TEST_GRPC_PORT, TEST_HTTP_PORT, free_port

pytestmark = pytest.mark.integration

TOKEN = "hardening-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BIG_BODY = 64 * 1024 * 1024  # what a client tries to push past the 32 KiB limit
CHUNK = 16 * 1024

SERVER_SCRIPT = """
import sys
import uvicorn
from hybrid_assets.serving.api import create_app

class EngineThatMustNotBeReached:
    adapter_version = None

    def answer(self, *args, **kwargs):
        raise AssertionError("the engine was reached")

uvicorn.run(create_app(engine=EngineThatMustNotBeReached()), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="warning")
"""


def _free_weaviate_ports() -> tuple[int, int]:
    """An HTTP port whose derived cluster ports (+10..+13, see EmbeddedServer) are free too, and a gRPC
    port: picked by the OS, not fixed, so no other session's server can be on them."""
    for _ in range(50):
        http_port, grpc_port = free_port(), free_port()
        wanted = {http_port, grpc_port, *(http_port + n for n in range(10, 14))}
        if len(wanted) != 6 or max(wanted) > 65535:
            continue
        try:
            for port in wanted:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return http_port, grpc_port
    raise RuntimeError("no free ports for a Weaviate server")


def _memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


@pytest.fixture(scope="module")
def api_server(weaviate_server, tmp_path_factory):
    """A real uvicorn server (HYBRID_API_TOKEN set) on a free loopback port; yields (port, pid)."""
    port = free_port()
    script = tmp_path_factory.mktemp("api") / "serve.py"
    script.write_text(SERVER_SCRIPT)
    env = dict(os.environ, HYBRID_API_TOKEN=TOKEN, WEAVIATE_HTTP_PORT=TEST_HTTP_PORT,
               WEAVIATE_GRPC_PORT=TEST_GRPC_PORT, PYTHONPATH=str(PROJECT_ROOT))
    env.pop("WEAVIATE_URL", None)
    process = subprocess.Popen([sys.executable, str(script), str(port)], env=env, cwd=PROJECT_ROOT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "the API server exited during start-up"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the API server did not start"
                time.sleep(0.3)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _http(port: int, timeout: float = 10):
    import httpx

    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout)


def _start_post(port: int, headers: dict[str, str], timeout: float = 10) -> http.client.HTTPConnection:
    """Send a POST /v1/answer request line and headers only; the caller sends (some of) the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.putrequest("POST", "/v1/answer")
    for name, value in {"Content-Type": "application/json", **headers}.items():
        conn.putheader(name, value)
    conn.endheaders()
    return conn


def _readable(conn: http.client.HTTPConnection) -> bool:
    return bool(select.select([conn.sock], [], [], 0)[0])


# -- 401 before the body -------------------------------------------------------------------------

@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}"])
def test_without_the_token_401_comes_before_the_body_is_sent(api_server, framing, authorization):
    """The server answers 401 while the body is still unsent: it did not wait for (or parse) it."""
    port, _ = api_server
    headers = {"Content-Length": "20000"} if framing == "content-length" else {"Transfer-Encoding": "chunked"}
    if authorization:
        headers["Authorization"] = authorization
    conn = _start_post(port, headers, timeout=10)
    part = b'{"ticket": "   ", "history": [{'  # malformed and incomplete; most of it never sent
    conn.send(part if framing == "content-length" else b"%x\r\n%s\r\n" % (len(part), part))
    try:
        response = conn.getresponse()  # a timeout here means the server waited for the body
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 401
    assert response.getheader("WWW-Authenticate") == "Bearer"
    assert response.getheader("Connection") == "close"
    assert body == {"detail": "missing or wrong bearer token"}


def test_without_the_token_every_body_gets_401_and_no_parser_details(api_server):
    port, _ = api_server
    bodies = [
        b'{"ticket": "hi"',  # malformed JSON
        b'{"ticket": "   "}',  # whitespace-only ticket
        b'{"customer_id": "C1003"}',  # no ticket
        b'{"ticket": "Where is my parcel?"}',  # valid
        b"x" * (1024 * 1024),  # over the size limit
        b"",
    ]
    with _http(port) as http_client:
        for body in bodies:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"bearer {TOKEN}"}):
                response = http_client.post("/v1/answer", content=body,
                                            headers={"content-type": "application/json", **headers})
                assert response.status_code == 401, (body[:40], headers, response.text)
                assert response.json() == {"detail": "missing or wrong bearer token"}
        assert http_client.get("/v1/adapters").status_code == 401
        assert http_client.get("/v1/adapters", headers=AUTH).status_code == 200
        # Open paths: liveness for load balancers and the docs.
        assert http_client.get("/healthz").status_code == 200
        assert http_client.get("/docs").status_code == 200
        assert http_client.get("/openapi.json").status_code == 200


# -- 422 with the token ----------------------------------------------------------------------------

@pytest.mark.parametrize("ticket", [" ", "   \n\t  ", "\u3000\u2003\u00a0"])
def test_a_whitespace_only_ticket_is_422_naming_ticket(api_server, ticket):
    port, _ = api_server
    with _http(port) as http_client:
        response = http_client.post("/v1/answer", json={"ticket": ticket}, headers=AUTH)
    assert response.status_code == 422, response.text  # today: 500 (the engine's ValueError)
    errors = response.json()["detail"]
    assert [error["loc"] for error in errors] == [["body", "ticket"]]
    assert "whitespace" in errors[0]["msg"]


def test_with_the_token_a_malformed_body_is_422(api_server):
    port, _ = api_server
    with _http(port) as http_client:
        malformed = http_client.post("/v1/answer", content=b'{"ticket": "hi"',
                                     headers={"content-type": "application/json", **AUTH})
        missing = http_client.post("/v1/answer", json={"customer_id": "C1003"}, headers=AUTH)
        bad_history = http_client.post("/v1/answer", headers=AUTH,
                                       json={"ticket": "hi", "history": [{"role": "robot", "content": "x"}]})
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["type"] == "json_invalid"
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "ticket"]
    assert bad_history.status_code == 422
    assert bad_history.json()["detail"][0]["loc"] == ["body", "history", 0, "role"]


# -- 413 while the body streams in -----------------------------------------------------------------

@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_an_oversize_body_is_413_before_it_is_read_and_the_server_does_not_grow(api_server, framing):
    """The client tries to send 64 MiB; the server answers 413 and closes after the 32 KiB limit while
    the client still has most of it to send, and its peak memory does not grow by the body size."""
    port, pid = api_server
    before = _memory_kib(pid)
    headers = dict(AUTH)
    headers.update({"Transfer-Encoding": "chunked"} if framing == "chunked" else {"Content-Length": str(BIG_BODY)})
    conn = _start_post(port, headers, timeout=30)
    piece = b'{"ticket": "' + b"x" * (CHUNK - 12)
    frame = b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece
    sent = 0
    stopped = None
    try:
        while sent < BIG_BODY:
            if _readable(conn):
                stopped = "answered"
                break
            try:
                conn.sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                stopped = "closed"
                break
            sent += len(piece)
        else:
            if framing == "chunked":
                conn.sock.sendall(b"0\r\n\r\n")
        try:
            response = conn.getresponse()
            status, text = response.status, response.read()
            connection = response.getheader("Connection")
        except ConnectionResetError:  # the close raced the response; the status is then unknown
            status, text, connection = None, b"", None
    finally:
        conn.close()
    after = _memory_kib(pid)

    assert stopped is not None, "the server read the whole 64 MiB body before answering"
    assert sent < BIG_BODY // 4, f"the client could send {sent} bytes"
    assert status == 413, (status, text)
    assert json.loads(text) == {"detail": "request body over 32768 bytes"}
    assert connection == "close"
    grown_mib = (after["VmHWM"] - before["VmHWM"]) / 1024
    assert grown_mib < 16, f"the server's peak RSS grew by {grown_mib:.1f} MiB"
    # ...and the server keeps serving.
    with _http(port) as http_client:
        assert http_client.get("/healthz").status_code == 200


def test_a_small_body_just_over_the_limit_is_413_and_under_it_is_not(api_server):
    from hybrid_assets.serving.api import MAX_BODY_BYTES

    port, _ = api_server

    def chunked(total: int):
        yield b'{"ticket": "'
        left = total - len(b'{"ticket": "') - 2
        while left > 0:
            yield b"y" * min(1000, left)
            left -= 1000
        yield b'"}'

    with _http(port) as http_client:
        over = http_client.post("/v1/answer", content=chunked(MAX_BODY_BYTES + 1),
                                headers={"content-type": "application/json", **AUTH})
        under = http_client.post("/v1/answer", content=chunked(MAX_BODY_BYTES - 1),
                                 headers={"content-type": "application/json", **AUTH})
    assert over.status_code == 413
    assert under.status_code == 422  # within the limit, parsed: the ticket is over max_length
    assert under.json()["detail"][0]["loc"] == ["body", "ticket"]


# -- Weaviate down -> 503 --------------------------------------------------------------------------

def test_weaviate_down_gives_503_on_answer_and_on_healthz(data_dir, monkeypatch, tmp_path):
    """A real Weaviate server of this test's own (not the shared one), stopped while the app runs."""
    from fastapi.testclient import TestClient

    from hybrid_assets.serving.api import create_app
    from hybrid_assets.store.server import EmbeddedServer

    http_port, grpc_port = _free_weaviate_ports()
    monkeypatch.setenv("HYBRID_DATA_DIR", str(data_dir))
    monkeypatch.setenv("WEAVIATE_HTTP_PORT", str(http_port))
    monkeypatch.setenv("WEAVIATE_GRPC_PORT", str(grpc_port))
    monkeypatch.delenv("WEAVIATE_URL", raising=False)
    monkeypatch.delenv("HYBRID_API_TOKEN", raising=False)
    settings = load_settings()
    server = EmbeddedServer(EmbeddedServer.from_settings(settings).binary, tmp_path / "weaviate", http_port, grpc_port)
    assert not server.is_ready(), f"something already answers on port {http_port}"
    assert server.start() == "started"
    try:
        with TestClient(create_app(settings)) as http_client:  # the real engine and Weaviate client
            health = http_client.get("/healthz")
            assert health.status_code == 200 and health.json()["weaviate_ready"] is True

            assert server.stop()
            assert not server.is_ready()

            for body in ({"ticket": "How do I verify a webhook signature?"},
                         {"ticket": "When does my plan renew?", "customer_id": "C1003"}):
                response = http_client.post("/v1/answer", json=body)
                assert response.status_code == 503, response.text  # today: 500
                assert response.headers["Retry-After"] == "10"
                assert "Weaviate" in response.json()["detail"]

            health = http_client.get("/healthz")
            assert health.status_code == 503  # today: 200 "ok", and a load balancer keeps routing
            assert health.headers["Retry-After"] == "10"
            payload = health.json()
            assert payload["status"] == "unavailable" and payload["weaviate_ready"] is False
            assert f"127.0.0.1:{http_port}" in payload["detail"] and "Weaviate" in payload["detail"]
    finally:
        server.stop()


# -- /docs offline ---------------------------------------------------------------------------------

ASSET = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_their_assets_from_the_app_not_a_cdn(page):
    from fastapi.testclient import TestClient

    from hybrid_assets.serving.api import create_app

    http_client = TestClient(create_app(load_settings()))  # no lifespan: the docs need no engine
    response = http_client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE), "an external URL"
    assets = {a or b for a, b in ASSET.findall(html)}
    scripts = [a for a in assets if a.endswith(".js")]
    styles = [a for a in assets if a.endswith(".css")]
    assert scripts and (styles or page == "/redoc") and "/openapi.json" in assets
    for asset in assets:
        assert asset.startswith("/"), asset
        fetched = http_client.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 1000, asset
        if asset.endswith(".js"):
            assert "javascript" in fetched.headers["content-type"]
            assert b"SwaggerUIBundle" in fetched.content or b"Redoc" in fetched.content
        if asset.endswith(".css"):
            assert fetched.headers["content-type"].startswith("text/css")
            assert b".swagger-ui" in fetched.content
    if page == "/docs":
        assert http_client.get("/docs/oauth2-redirect").status_code == 200
