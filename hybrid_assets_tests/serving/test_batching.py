"""The API's batching scheduler (``serving/batcher.py``) with the real model, Weaviate and uvicorn:

- greedy answers are identical batched and alone (four tickets, different citable-id sets, one with
  none), each with its own grammar and its own result;
- requests that arrive while a generation runs join the next batch (``/v1/answer`` and
  ``/v1/chat/completions``, streaming included, all through the scheduler);
- a full queue answers 503 with ``Retry-After`` and a JSON error, on both endpoints;
- a client that disconnects while waiting frees its queue place and is never generated; when every
  client of a running batch has gone, the generation stops early and the worker moves on.

The tests hold the engine's own lock to keep a batch "running" for as long as they need (the worker
has taken the batch and waits for the model): the states they check are then deterministic, not a
race against the model's speed.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hybrid_assets.schema import parse_answer
from hybrid_assets.settings import PROJECT_ROOT, load_settings
from hybrid_assets_tests.conftest import on_test_weaviate, served_in_thread

pytestmark = pytest.mark.integration

MAX_NEW_TOKENS = 32  # a tiny budget: the contract is the batching, not the answers' quality
TICKETS = [
    {"ticket": "How do I verify that a webhook request really came from Parcelwise?", "customer_id": None},
    {"ticket": "When does my plan renew and do I have open incidents?", "customer_id": "C1003"},
    {"ticket": "I was charged twice for the same label, please refund the duplicate.", "customer_id": None},
    {"ticket": "What is the capital of France, and who painted the Mona Lisa?", "customer_id": None},  # no context
]


@pytest.fixture(scope="module")
def stack(weaviate_server, tmp_path_factory):
    """The sample company indexed in the test Weaviate server, one engine (the base model), a data copy."""
    from hybrid_assets.knowledge.pipeline import ingest_knowledge
    from hybrid_assets.serving.engine import AnswerEngine, load_labels

    data = tmp_path_factory.mktemp("batching") / "data"
    for part in ("knowledge/docs", "knowledge/accounts", "behaviour"):
        shutil.copytree(PROJECT_ROOT / "data" / part, data / part)
    with on_test_weaviate(data) as (settings, client):
        assert not ingest_knowledge(client, settings).chunking.failures
        engine = AnswerEngine(settings, load_labels(settings), k=4, max_new_tokens=MAX_NEW_TOKENS)
        yield settings, client, engine


def test_batched_answers_are_identical_to_the_answers_alone(stack):
    from hybrid_assets.serving.batcher import BatchScheduler

    settings, client, engine = stack
    prepared = [engine.prepare(client, ticket) for ticket in TICKETS]
    citable = [tuple(p.retrieved.hits) for p in prepared]
    assert () in citable and len(set(citable)) >= 3, citable  # different grammars, one allowing no citation
    alone = [engine.answer_prepared([p])[0] for p in prepared]

    scheduler = BatchScheduler(engine.answer_prepared, batch_size=8, queue_size=8)
    futures = [scheduler.enqueue(scheduler.reserve(), p) for p in prepared]  # queued before the worker runs
    scheduler.start()
    try:
        batched = [future.result(timeout=900) for future in futures]
    finally:
        scheduler.stop()
    assert [record.rows for record in scheduler.batches] == [4]

    for ticket, one, many, ids in zip(TICKETS, alone, batched, citable):
        assert many.text == one.text, (ticket["ticket"], one.text, many.text)  # greedy: token for token
        assert many.answer == one.answer and many.decided == one.decided
        assert many.generated_tokens == one.generated_tokens and many.guards == one.guards
        assert set(many.answer["citations"]) <= set(ids)
        assert [chunk["id"] for chunk in many.retrieved] == list(ids)  # its own retrieval, not a neighbour's
        parse_answer(json.dumps(many.answer), engine.labels)


def test_the_ragged_batch_decodes_token_for_token_as_transformers_generate(stack):
    """``models/batched_greedy.py`` (each prompt prefilled alone, then one preallocated KV cache for the
    batch) is ``generate``'s greedy search: the same batch of prompts of different lengths through both
    paths gives the same tokens and the same decision distributions."""
    from hybrid_assets.models import batched_greedy

    _, client, engine = stack
    prepared = [engine.prepare(client, ticket) for ticket in TICKETS]
    conversations, citable = [p.conversation for p in prepared], [tuple(p.retrieved.hits) for p in prepared]
    model, decoder = engine.loaded()
    assert decoder.ragged_prefill and batched_greedy.supported(model)
    ragged = engine.generate(conversations, citable)
    decoder.ragged_prefill = False
    try:
        padded = engine.generate(conversations, citable)
    finally:
        decoder.ragged_prefill = True
    assert len({g.prompt_tokens for g in ragged}) == len(TICKETS)  # every row padded differently in generate()
    for one, other in zip(ragged, padded):
        assert one.text == other.text and one.tokens == other.tokens
        assert one.prompt_tokens == other.prompt_tokens
        if other.decision_probabilities is not None:
            assert one.decision_probabilities == pytest.approx(other.decision_probabilities, abs=1e-4)


# -- through the HTTP API -------------------------------------------------------------------------------

@pytest.fixture
def api(stack, monkeypatch, request):
    """The real app in a real uvicorn server (own port), with the batch / queue sizes the test asks for."""
    from hybrid_assets.serving.api import create_app

    _, client, engine = stack
    batch_size, queue_size = request.param
    monkeypatch.setenv("HYBRID_SERVE_BATCH_SIZE", str(batch_size))
    monkeypatch.setenv("HYBRID_SERVE_QUEUE_SIZE", str(queue_size))
    app = create_app(load_settings(), engine=engine)
    with served_in_thread(app, start_timeout=30) as base:
        yield base, app


def _wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _post_then_hang_up(base: str, body: dict) -> socket.socket:
    """A client that sends a whole request and will close the connection without reading the answer."""
    port = int(base.rsplit(":", 1)[1])
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


def _chat(ticket: str, stream: bool = False) -> dict:
    return {"model": "hybrid-assets", "messages": [{"role": "user", "content": ticket}], "stream": stream}


@pytest.mark.parametrize("api", [(8, 16)], indirect=True)
def test_requests_arriving_during_a_generation_join_the_next_batch(stack, api):
    import httpx

    _, _, engine = stack
    base, app = api
    scheduler = app.state.scheduler
    with ThreadPoolExecutor(max_workers=4) as pool:
        with engine._lock:  # the first batch is taken and waits for the model
            first = pool.submit(httpx.post, f"{base}/v1/answer", json=TICKETS[0], timeout=900)
            _wait_for(lambda: scheduler.snapshot()["running"] == 1, "the first request's batch to start")
            later = [pool.submit(httpx.post, f"{base}/v1/answer", json=TICKETS[1], timeout=900),
                     pool.submit(httpx.post, f"{base}/v1/chat/completions", json=_chat(TICKETS[2]["ticket"]),
                                 timeout=900),
                     pool.submit(httpx.post, f"{base}/v1/chat/completions",
                                 json=_chat(TICKETS[0]["ticket"], stream=True), timeout=900)]
            _wait_for(lambda: scheduler.snapshot()["waiting"] == 3, "three requests waiting for the next batch")
        responses = [first.result(), *(f.result() for f in later)]
    assert [r.status_code for r in responses] == [200] * 4, [r.text[:300] for r in responses]
    assert [record.rows for record in scheduler.batches] == [1, 3]

    answer, other, chat, streamed = responses
    for body in (answer.json(), other.json()):
        parse_answer(json.dumps(body["answer"]), engine.labels)
        assert body["timing_ms"]["queue"] >= 0
    content = chat.json()["choices"][0]["message"]["content"]
    parse_answer(content, engine.labels)
    events = [json.loads(line[len("data: "):]) for line in streamed.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    streamed_content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    # The same ticket alone in batch 1 and in batch 2 next to others: the same answer.
    assert json.loads(streamed_content) == answer.json()["answer"]


@pytest.mark.parametrize("api", [(1, 1)], indirect=True)
def test_a_full_queue_answers_503_and_a_client_that_leaves_frees_its_place(stack, api):
    import httpx

    _, _, engine = stack
    base, app = api
    scheduler = app.state.scheduler
    with ThreadPoolExecutor(max_workers=2) as pool:
        with engine._lock:
            running = pool.submit(httpx.post, f"{base}/v1/answer", json=TICKETS[0], timeout=900)
            _wait_for(lambda: scheduler.snapshot()["running"] == 1, "a running batch")
            leaver = _post_then_hang_up(base, TICKETS[1])
            _wait_for(lambda: scheduler.snapshot()["waiting"] == 1, "the queue's one place taken")

            full = httpx.post(f"{base}/v1/answer", json=TICKETS[2], timeout=30)
            assert full.status_code == 503, full.text
            assert full.headers["Retry-After"].isdigit() and int(full.headers["Retry-After"]) >= 1
            assert "queue is full" in full.json()["detail"]
            chat_full = httpx.post(f"{base}/v1/chat/completions", json=_chat(TICKETS[2]["ticket"]), timeout=30)
            assert chat_full.status_code == 503 and int(chat_full.headers["Retry-After"]) >= 1
            assert chat_full.json()["error"]["type"] == "service_unavailable"  # the OpenAI shape
            assert "queue is full" in chat_full.json()["error"]["message"]

            leaver.close()  # gone before its batch started: its place is free again
            _wait_for(lambda: scheduler.snapshot()["waiting"] == 0, "the leaver's place to be freed", timeout=10)
            stays = pool.submit(httpx.post, f"{base}/v1/answer", json=TICKETS[3], timeout=900)
            _wait_for(lambda: scheduler.snapshot()["waiting"] == 1, "the next request to take the place")
        results = [running.result(), stays.result()]
    assert [r.status_code for r in results] == [200, 200], [r.text[:300] for r in results]
    for response in results:
        parse_answer(json.dumps(response.json()["answer"]), engine.labels)
    # Two batches of one: the request whose client left was never generated.
    assert [record.rows for record in scheduler.batches] == [1, 1]


@pytest.mark.parametrize("api", [(4, 4)], indirect=True)
def test_when_every_client_of_a_running_batch_leaves_the_generation_stops(stack, api):
    import httpx

    _, _, engine = stack
    base, app = api
    scheduler = app.state.scheduler
    with engine._lock:
        leavers = [_post_then_hang_up(base, ticket) for ticket in TICKETS[:2]]
        _wait_for(lambda: scheduler.snapshot()["running"] + scheduler.snapshot()["waiting"] == 2, "two requests in")
        _wait_for(lambda: scheduler.snapshot()["running"] >= 1, "the batch to be taken")
        running = scheduler.snapshot()["running"]
        for sock in leavers:
            sock.close()
        _wait_for(lambda: scheduler.snapshot()["running_gone"] == running, "the running clients to be seen gone",
                  timeout=10)
    _wait_for(lambda: len(scheduler.batches) == 1 and scheduler.snapshot()["running"] == 0, "the batch to end",
              timeout=300)
    (record,) = scheduler.batches
    assert record.stopped and record.rows == running
    # The worker is free for the next request at once.
    after = httpx.post(f"{base}/v1/answer", json=TICKETS[3], timeout=900)
    assert after.status_code == 200, after.text
    assert [r.stopped for r in scheduler.batches] == [True, False]
