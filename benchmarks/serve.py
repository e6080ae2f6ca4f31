"""Serving benchmark: constrained vs unconstrained decoding, answer latency, and the HTTP API under load.

Runs on a private copy of the sample data (its own embedded Weaviate on ports 8679/50679, stopped at
the end), with the promoted adapter of ``data/adapters`` when there is one (else the base model):

1. constrained-decoding tokens/s divided by unconstrained tokens/s on the same prompts (same model,
   same greedy settings; the only difference is the xgrammar logits processor);
2. end-to-end answer latency p50/p95 over the sample tickets, split into retrieval and generation;
3. requests/s with 8 concurrent HTTP clients against `hybrid-assets serve`'s app (uvicorn on
   loopback), counting errors (goal: zero).

    .venv/bin/python benchmarks/serve.py [--requests 16] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import machine, pct, private_stack, update_results  # noqa: E402
from hybrid_assets.settings import apply_offline_env  # noqa: E402

SECTION = "## Serving (benchmarks/serve.py)"
HTTP_PORT, GRPC_PORT, API_PORT = 8679, 50679, 8697  # clear of the test ports (8279+) other sessions use
TICKETS = [json.loads(line) for line in (REPO / "data/serving/sample_tickets.jsonl").open()]
EXTRA = [
    {"ticket": "How long do refunds for voided labels take?", "customer_id": None},
    {"ticket": "Our Shopify orders with many line items arrive without their items. Known problem?", "customer_id": "C1004"},
    {"ticket": "Which plan do we have and when is our renewal?", "customer_id": "C1010"},
]


def constrained_vs_free(engine, client, requests: list[dict]) -> dict:
    """Generate for each prompt (one at a time) with and without the grammar; tokens/s of each. Both
    sides are the served decoding path (``models/generation.Decoder``), differing only in the grammar."""
    from hybrid_assets.models.generation import Decoder
    from hybrid_assets.prompting import build_messages
    from hybrid_assets.serving.retrieval import retrieve

    model, constrained = engine.loaded()
    free = Decoder(constrained.tokenizer, model.config.vocab_size, engine.labels, engine.max_new_tokens,
                   no_repeat_ngram=constrained.no_repeat_ngram, constrained=False)
    base_only = engine.adapter_version is None
    totals = {"constrained": [0, 0.0], "unconstrained": [0, 0.0]}
    for request in requests:
        got = retrieve(client, engine.settings, request["ticket"], request.get("customer_id"), engine.k)
        messages = build_messages(request["ticket"], got.passages, engine.labels, request.get("customer_id"))
        citable = [tuple(got.hits)]
        # Compile this request's grammar before timing: a grammar is compiled once per distinct set of
        # citable ids (~1 s) and cached for every later request; the ratio is about per-token cost.
        constrained.prepare(citable)
        for mode, decoder in (("constrained", constrained), ("unconstrained", free)):
            started = time.perf_counter()
            (generation,) = decoder.generate(model, [messages], citable, base_only=base_only)
            seconds = time.perf_counter() - started
            totals[mode][0] += generation.tokens
            totals[mode][1] += seconds
    rates = {mode: tokens / seconds for mode, (tokens, seconds) in totals.items()}
    return {"constrained_tps": rates["constrained"], "unconstrained_tps": rates["unconstrained"],
            "ratio": rates["constrained"] / rates["unconstrained"],
            "constrained_tokens": totals["constrained"][0], "unconstrained_tokens": totals["unconstrained"][0]}


def latency(engine, client, requests: list[dict]) -> dict:
    total, retrieval, generation = [], [], []
    for request in requests:
        started = time.perf_counter()
        result = engine.answer(client, request["ticket"], request.get("customer_id"))
        total.append((time.perf_counter() - started) * 1000)
        retrieval.append(result.retrieval_ms)
        generation.append(result.generation_ms)
    return {"n": len(total), "p50": pct(total, 0.5), "p95": pct(total, 0.95),
            "retrieval_p50": pct(retrieval, 0.5), "retrieval_p95": pct(retrieval, 0.95),
            "generation_p50": pct(generation, 0.5), "generation_p95": pct(generation, 0.95),
            "retrieval_share": statistics.fmean(retrieval) / statistics.fmean(total)}


def load_test(engine, settings, n_requests: int, clients: int = 8) -> dict:
    import httpx
    import uvicorn

    from hybrid_assets.serving.api import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings, engine=engine), host="127.0.0.1", port=API_PORT,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    pool = (TICKETS + EXTRA) * (n_requests // len(TICKETS + EXTRA) + 1)
    errors, latencies = [], []

    def call(request: dict) -> None:
        started = time.perf_counter()
        try:
            response = httpx.post(f"http://127.0.0.1:{API_PORT}/v1/answer", json=request, timeout=600)
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
        except httpx.HTTPError as exc:
            errors.append(repr(exc))
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as executor:
        list(executor.map(call, pool[:n_requests]))
    wall = time.perf_counter() - started
    server.should_exit = True
    thread.join(timeout=10)
    return {"clients": clients, "requests": n_requests, "errors": len(errors), "error_samples": errors[:3],
            "requests_per_s": n_requests / wall, "wall_s": wall, "client_p50_s": pct(latencies, 0.5),
            "client_p95_s": pct(latencies, 0.95)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16, help="requests in the 8-client load test")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args(argv)
    apply_offline_env()
    began = time.perf_counter()
    from hybrid_assets.serving.engine import AnswerEngine, load_labels

    with private_stack(HTTP_PORT, GRPC_PORT, ingest_sample=True) as (settings, client):
        engine = AnswerEngine(settings, load_labels(settings))
        engine.answer(client, "warm-up: where is my parcel?")  # model load, grammar compile
        adapter = engine.adapter_version
        print(f"adapter: {adapter or '(base model)'}", flush=True)
        decoding = constrained_vs_free(engine, client, TICKETS[:3] + EXTRA[:1])
        print(f"constrained {decoding['constrained_tps']:.1f} tok/s vs unconstrained "
              f"{decoding['unconstrained_tps']:.1f} tok/s: ratio {decoding['ratio']:.2f}", flush=True)
        lat = latency(engine, client, TICKETS + EXTRA)
        print(f"latency p50 {lat['p50']:.0f} ms p95 {lat['p95']:.0f} ms (retrieval p50 "
              f"{lat['retrieval_p50']:.0f} ms, generation p50 {lat['generation_p50']:.0f} ms)", flush=True)
        load = load_test(engine, settings, args.requests)
        print(f"8 clients: {load['requests_per_s']:.3f} req/s, {load['errors']} errors", flush=True)

    section = f"""{SECTION}

`.venv/bin/python benchmarks/serve.py --requests {args.requests}` — {machine()}; run took {time.perf_counter() - began:.0f} s.
Model: SmolLM2-135M-Instruct + adapter `{adapter or 'none (base model)'}`, greedy, max {engine.max_new_tokens} new tokens,
k={engine.k} retrieved chunks, decoding constrained by xgrammar 0.2.8 to the answer schema.

| figure | value | goal |
|---|---|---|
| constrained tokens/s | {decoding['constrained_tps']:.1f} ({decoding['constrained_tokens']} tokens) | |
| unconstrained tokens/s (same prompts) | {decoding['unconstrained_tps']:.1f} ({decoding['unconstrained_tokens']} tokens) | |
| **constrained / unconstrained** (grammar compiled before timing; compiling costs ~1 s once per distinct set of citable ids, then cached) | **{decoding['ratio']:.2f}** | ≥ 0.9 |
| answer latency p50 / p95 ({lat['n']} tickets, one at a time) | {lat['p50']:.0f} / {lat['p95']:.0f} ms | |
| of which retrieval p50 / p95 | {lat['retrieval_p50']:.0f} / {lat['retrieval_p95']:.0f} ms | |
| of which generation p50 / p95 | {lat['generation_p50']:.0f} / {lat['generation_p95']:.0f} ms | |
| requests/s, 8 concurrent HTTP clients ({load['requests']} requests) | {load['requests_per_s']:.3f} | |
| errors under load | {load['errors']} | 0 |
| client-side latency under load p50 / p95 | {load['client_p50_s']:.1f} / {load['client_p95_s']:.1f} s | |

Generation dominates ({100 * (1 - lat['retrieval_share']):.0f}% of answer time): on 2 CPU cores the engine runs one generation
at a time, so 8 clients queue and throughput equals 1 / (answer time); latency under load grows with the queue.
"""
    update_results(args.out, SECTION, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
