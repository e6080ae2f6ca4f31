"""The API under load (issue #13, item 4), scale-marked: the real server (uvicorn in its own process,
own port, the real model with a tiny budget, the real Weaviate) with 50 concurrent clients posting
answers for a bounded minute while a poller reads ``/healthz``:

- ``/healthz`` answers 200 in under 100 ms throughout (max and p95 in the message): a behaviour bound
  the issue asks for, not a speed figure;
- 0 responses >= 500, none refused (the queue holds all 50), every answer is schema-valid JSON;
- at the minute's end the clients still waiting hang up, and the server's queue empties (the places
  of requests whose client left are freed, they are never generated).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from hybrid_assets.schema import parse_answer
from hybrid_assets.serving.engine import load_labels
from hybrid_assets.settings import PROJECT_ROOT
from hybrid_assets_tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.scale]

CLIENTS = 50
LOAD_S = 40.0  # clients post new requests for this long ...
BOUND_S = 60.0  # ... and every client is done (answered, or hung up) by this
HEALTH_LIMIT_MS = 100.0
HEALTH_EVERY_S = 0.1
TICKETS = [
    {"ticket": "How do I verify that a webhook request really came from Parcelwise?"},
    {"ticket": "When does my plan renew and do I have open incidents?", "customer_id": "C1003"},
    {"ticket": "How long do refunds for voided labels take?"},
    {"ticket": "Our Shopify orders arrive without their line items. Known problem?", "customer_id": "C1004"},
    {"ticket": "What is the capital of France?"},
]
SERVER = """
import sys
import uvicorn
from hybrid_assets.serving.api import create_app
from hybrid_assets.serving.engine import AnswerEngine, load_labels
from hybrid_assets.settings import load_settings

settings = load_settings()
engine = AnswerEngine(settings, load_labels(settings), k=2, max_new_tokens=int(sys.argv[2]))
uvicorn.run(create_app(settings, engine=engine), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@pytest.fixture
def server(settings, client):
    """The sample company indexed, then the API in its own process (the clients' threads stay out of its GIL)."""
    import httpx

    from hybrid_assets.knowledge.pipeline import ingest_knowledge

    assert not ingest_knowledge(client, settings).chunking.failures
    port = free_port()
    env = {**os.environ, "HYBRID_SERVE_QUEUE_SIZE": "64", "HYBRID_SERVE_BATCH_SIZE": "8"}
    env.pop("HYBRID_API_TOKEN", None)
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port), "8"], env=env, cwd=PROJECT_ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "the API server exited"
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.2)
        warm = httpx.post(f"{base}/v1/answer", json=TICKETS[0], timeout=600)  # model load, first grammar
        assert warm.status_code == 200, warm.text
        yield base
    finally:
        process.terminate()  # a running batch stops at its next token; a prefill must end first
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()


def test_fifty_clients_for_a_minute_keep_healthz_fast_and_get_no_5xx(settings, server):
    import httpx

    labels = load_labels(settings)
    began = time.monotonic()
    stop_posting, bound = began + LOAD_S, began + BOUND_S
    statuses: list[int] = []
    invalid: list[str] = []
    hung_up = []
    health_ms: list[float] = []
    health_bad: list[str] = []
    slow: list[tuple[float, float]] = []  # (seconds into the test, ms) of the slower polls, for the message
    lock = threading.Lock()

    def client_loop(number: int) -> None:
        with httpx.Client(timeout=None) as http:
            turn = 0
            while time.monotonic() < stop_posting:
                body = TICKETS[(number + turn) % len(TICKETS)]
                turn += 1
                try:  # the bound: whoever is still waiting then hangs up
                    response = http.post(f"{server}/v1/answer", json=body,
                                         timeout=httpx.Timeout(max(0.1, bound - time.monotonic())))
                except httpx.TimeoutException:
                    with lock:
                        hung_up.append(number)
                    return
                with lock:
                    statuses.append(response.status_code)
                if response.status_code == 200:
                    try:
                        parse_answer(json.dumps(response.json()["answer"]), labels)
                    except (ValueError, KeyError) as exc:
                        with lock:
                            invalid.append(f"{exc}: {response.text[:200]}")

    def health_loop() -> None:
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < bound:
                started = time.perf_counter()
                response = http.get(f"{server}/healthz")
                health_ms.append((time.perf_counter() - started) * 1000)
                slow.append((round(time.monotonic() - began, 1), round(health_ms[-1]))) if health_ms[-1] > 50 else None
                if response.status_code != 200:
                    health_bad.append(f"{response.status_code}: {response.text[:200]}")
                time.sleep(HEALTH_EVERY_S)

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
    threads.append(threading.Thread(target=health_loop))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=BOUND_S + 30)
    assert not any(thread.is_alive() for thread in threads), "a client outlived the bound"

    ordered = sorted(health_ms)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    summary = (f"/healthz over {len(ordered)} polls: max {ordered[-1]:.1f} ms, p95 {p95:.1f} ms; "
               f"{len(statuses)} answers ({statuses.count(200)} ok), {len(hung_up)} clients hung up at the bound; "
               f"polls over 50 ms (s into the test, ms): {slow[:20]}")
    print(summary)
    assert not health_bad, health_bad[:3]
    assert ordered[-1] < HEALTH_LIMIT_MS, summary
    assert [s for s in statuses if s >= 500] == [], summary
    assert set(statuses) <= {200}, summary  # nothing refused either: the queue holds every client
    assert not invalid, invalid[:3]
    assert statuses.count(200) >= 1, summary  # answers flowed (how many depends on the host's speed)

    # The clients that hung up freed their places: the queue empties (only a batch already running
    # may finish its rows, whose results are dropped).
    deadline = time.monotonic() + 30
    while (queue := httpx.get(f"{server}/healthz", timeout=5).json()["queue"])["waiting"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queue["waiting"] == 0, queue
