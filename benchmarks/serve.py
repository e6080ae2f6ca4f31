"""Serving benchmark: answer latency, and the HTTP API under load.

Runs on a private copy of the sample data (its own embedded Weaviate on ports 8679/50679, stopped at
the end), with the promoted adapter of ``data/adapters`` when there is one (else the base model):

1. end-to-end answer latency p50/p95 over the sample tickets, split into retrieval and generation;
2. the HTTP API under 1, 4, 8 and 16 concurrent clients, batched (the API's scheduler, batch size 8)
   vs one at a time (batch size 1) in the same run: requests/s, client p50/p95, errors, the ratio at
   8 clients (goal >= 3), repeated; plus the tokens/s of one batch of 1, 4 and 8 rows.

    .venv/bin/python benchmarks/serve.py [--only latency|load] [--max-new-tokens 512] [--repeats 2]

The grammar's cost per decoded token (constrained / unconstrained on the same prompts and positions) is
``benchmarks/decoding.py``: dividing whole generations of very different lengths, as this script once
did, mixes prefill into the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
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
LOAD_SECTION = "## Serving under concurrent load: batched vs one at a time (benchmarks/serve.py)"
# clear of the test ports (8279+) that parallel sessions use
HTTP_PORT, GRPC_PORT, BATCHED_PORT, SINGLE_PORT = 8679, 50679, 8697, 8698
TICKETS = [json.loads(line) for line in (REPO / "data/serving/sample_tickets.jsonl").open()]
EXTRA = [
    {"ticket": "How long do refunds for voided labels take?", "customer_id": None},
    {"ticket": "Our Shopify orders with many line items arrive without their items. Known problem?", "customer_id": "C1004"},
    {"ticket": "Which plan do we have and when is our renewal?", "customer_id": "C1010"},
]


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


def _serve(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


def load_run(port: int, clients: int, n_requests: int) -> dict:
    """``n_requests`` POST /v1/answer from ``clients`` concurrent clients (each sends its next request
    when its answer arrives); requests/s, client latency, errors."""
    import httpx

    pool = (TICKETS + EXTRA) * (n_requests // len(TICKETS + EXTRA) + 1)
    errors, latencies, tokens, answers = [], [], [], {}

    def call(request: dict) -> None:
        started = time.perf_counter()
        try:
            response = httpx.post(f"http://127.0.0.1:{port}/v1/answer", json=request, timeout=1800)
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
            else:
                body = response.json()
                tokens.append(body["generated_tokens"])
                # Keyed by what was retrieved too: Weaviate's BM25 scores move when its memtables are flushed
                # (about a minute after the ingest), so a ticket's passages can change during a run.
                key = f"{request['ticket']} | {','.join(chunk['chunk_id'] for chunk in body['retrieved'])}"
                answers.setdefault(key, set()).add(json.dumps(body["answer"], sort_keys=True))
        except httpx.HTTPError as exc:
            errors.append(repr(exc))
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as executor:
        list(executor.map(call, pool[:n_requests]))
    wall = time.perf_counter() - started
    return {"clients": clients, "requests": n_requests, "errors": len(errors), "error_samples": errors[:3],
            "requests_per_s": n_requests / wall, "wall_s": wall, "p50_s": pct(latencies, 0.5),
            "p95_s": pct(latencies, 0.95), "tokens": sum(tokens),
            "answers": {ticket: sorted(texts) for ticket, texts in answers.items()}}


def batch_scaling(engine, client, sizes=(1, 4, 8)) -> list[dict]:
    """Tokens/s of one batch of 1, 4, 8 different requests (the engine alone, no HTTP): why batching
    pays (or does not) on this machine."""
    requests = TICKETS + EXTRA
    prepared = [engine.prepare(client, r) for r in requests]
    rows = []
    for size in sizes:
        batch = prepared[:size]
        started = time.perf_counter()
        results = engine.answer_prepared(batch)
        seconds = time.perf_counter() - started
        generated = sum(r.generated_tokens for r in results)
        rows.append({"rows": size, "seconds": seconds, "tokens": generated, "tokens_per_s": generated / seconds,
                     "prompt_tokens": sum(r.prompt_tokens for r in results)})
    return rows


def load_comparison(settings, client, max_new_tokens: int, repeats: int, clients_list=(1, 4, 8, 16)) -> dict:
    """Batched (HYBRID_SERVE_BATCH_SIZE=8) vs one at a time (batch size 1), the same engine behind two
    servers, interleaved per client count and repeated, so both modes see the same machine noise."""
    from hybrid_assets.serving.api import create_app
    from hybrid_assets.serving.engine import AnswerEngine, load_labels

    engine = AnswerEngine(settings, load_labels(settings), max_new_tokens=max_new_tokens)
    engine.answer(client, "warm-up: where is my parcel?")
    modes = {"batched": (BATCHED_PORT, 8), "one_at_a_time": (SINGLE_PORT, 1)}
    servers = {mode: _serve(create_app(dataclasses.replace(settings, serve_batch_size=size, serve_queue_size=64),
                                       engine=engine), port)
               for mode, (port, size) in modes.items()}
    runs: dict = {mode: {c: [] for c in clients_list} for mode in modes}
    try:
        for repeat in range(repeats):
            for clients in clients_list:
                for mode, (port, _) in modes.items():
                    run = load_run(port, clients, max(4, clients))
                    runs[mode][clients].append(run)
                    print(f"repeat {repeat + 1} {mode:>13} {clients:>2} clients: {run['requests_per_s']:.3f} req/s, "
                          f"p50 {run['p50_s']:.1f} s, p95 {run['p95_s']:.1f} s, {run['errors']} errors", flush=True)
        scaling = batch_scaling(engine, client)
    finally:
        for server, thread in servers.values():
            server.should_exit = True
            thread.join(timeout=30)
    return {"runs": runs, "scaling": scaling, "max_new_tokens": max_new_tokens, "repeats": repeats}


def load_section(load: dict, command: str, seconds: float) -> str:
    runs, repeats = load["runs"], load["repeats"]

    def spread(values, fmt):
        return f"{fmt.format(statistics.fmean(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"

    lines = []
    for clients in runs["batched"]:
        cells = []
        for mode in ("batched", "one_at_a_time"):
            got = runs[mode][clients]
            cells += [spread([r["requests_per_s"] for r in got], "{:.3f}"),
                      f"{statistics.fmean(r['p50_s'] for r in got):.1f} / {statistics.fmean(r['p95_s'] for r in got):.1f}"]
        ratios = [b["requests_per_s"] / s["requests_per_s"] for b, s in zip(runs["batched"][clients],
                                                                         runs["one_at_a_time"][clients])]
        errors = sum(r["errors"] for mode in runs for r in runs[mode][clients])
        lines.append(f"| {clients} | {' | '.join(cells)} | {spread(ratios, '{:.2f}')} | {errors} |")
    at8 = [b["requests_per_s"] / s["requests_per_s"] for b, s in zip(runs["batched"][8], runs["one_at_a_time"][8])]
    scaling = load["scaling"]
    one = scaling[0]["tokens_per_s"]
    scale_rows = "\n".join(f"| {r['rows']} | {r['prompt_tokens']} | {r['tokens']} | {r['seconds']:.1f} | "
                           f"{r['tokens_per_s']:.1f} | {r['tokens_per_s'] / one:.2f} |" for r in scaling)
    prompt_ratio = sum(r["prompt_tokens"] for r in scaling) / max(1, sum(r["tokens"] for r in scaling))
    samples = [e for mode in runs for c in runs[mode] for r in runs[mode][c] for e in r["error_samples"]][:3]
    same, compared = identical_answers(runs)
    budget = (f"**max {load['max_new_tokens']} new tokens**, the served budget" if load["max_new_tokens"] >= 512 else
              f"**max {load['max_new_tokens']} new tokens**: reduced from the served 512")
    return f"""{LOAD_SECTION}

`{command}` — {machine()}; run took {seconds:.0f} s.
The same engine (SmolLM2-135M-Instruct + the promoted adapter, greedy, schema-constrained,
{budget}) behind two uvicorn servers in one process: batched (`HYBRID_SERVE_BATCH_SIZE=8`) and one at a time (batch size 1). Per client
count, each client sends its next request when its answer arrives, max(4, clients) requests; the two modes alternate,
{repeats} repeats; mean (min–max) over the repeats.

| clients | batched req/s | batched p50 / p95 s | one-at-a-time req/s | one-at-a-time p50 / p95 s | batched / one-at-a-time | errors |
|---|---|---|---|---|---|---|
{chr(10).join(lines)}

**At 8 clients: batched / one-at-a-time = {statistics.fmean(at8):.2f}** (repeats: {', '.join(f'{r:.2f}' for r in at8)}; goal ≥ 3).
{('Error samples: ' + '; '.join(samples)) if samples else 'No errors.'}
Answers: for {same} of {compared} requests (a ticket with the passages retrieved for it) answered in both modes, every
batched answer (the whole answer JSON) is identical to its answer one at a time, i.e. alone (greedy).

Why the ratio is what it is — one batch through the engine (no HTTP), different tickets, the same budget:

| rows | prompt tokens | generated tokens | seconds | generated tokens/s | vs 1 row |
|---|---|---|---|---|---|
{scale_rows}

Each row is one batch's time through the engine alone (prompt tokens : generated tokens =
{prompt_ratio:.1f} : 1). Each prompt is prefilled alone and the rows then decode together over one preallocated
KV cache (`models/batched_greedy.py`): prefill is compute-bound, so a batch saves nothing on it, and
batching wins on the decoding steps, where one forward pass serves every row.
"""


def identical_answers(runs: dict) -> tuple[int, int]:
    """(requests - a ticket with the passages retrieved for it - whose every batched answer equals its one-at-a-time
    answer, such requests answered in both modes)."""
    def by_ticket(mode):
        merged: dict = {}
        for got in runs[mode].values():
            for run in got:
                for ticket, texts in run["answers"].items():
                    merged.setdefault(ticket, set()).update(texts)
        return merged

    batched, alone = by_ticket("batched"), by_ticket("one_at_a_time")
    common = sorted(set(batched) & set(alone))
    return sum(batched[t] == alone[t] and len(alone[t]) == 1 for t in common), len(common)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("latency", "load"), help="run one of the two sections")
    parser.add_argument("--max-new-tokens", type=int, default=512,
                        help="token budget of the load comparison (default: the served 512)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of the load comparison")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args(argv)
    apply_offline_env()
    began = time.perf_counter()
    with private_stack(HTTP_PORT, GRPC_PORT, ingest_sample=True) as (settings, client):
        if args.only != "load":
            latency_started = time.perf_counter()
            section = latency_section(settings, client)
            section = section.replace("RUN_SECONDS", f"{time.perf_counter() - latency_started:.0f}")
            update_results(args.out, SECTION, section)
        if args.only != "latency":
            load_started = time.perf_counter()
            load = load_comparison(settings, client, args.max_new_tokens, args.repeats)
            command = (f".venv/bin/python benchmarks/serve.py --only load --max-new-tokens {args.max_new_tokens} "
                       f"--repeats {args.repeats}")
            update_results(args.out, LOAD_SECTION, load_section(load, command, time.perf_counter() - load_started))
    print(f"done in {time.perf_counter() - began:.0f} s", flush=True)
    return 0


def latency_section(settings, client) -> str:
    from hybrid_assets.serving.engine import AnswerEngine, load_labels

    engine = AnswerEngine(settings, load_labels(settings))
    engine.answer(client, "warm-up: where is my parcel?")  # model load, grammar compile
    adapter = engine.adapter_version
    print(f"adapter: {adapter or '(base model)'}", flush=True)
    lat = latency(engine, client, TICKETS + EXTRA)
    print(f"latency p50 {lat['p50']:.0f} ms p95 {lat['p95']:.0f} ms (retrieval p50 "
          f"{lat['retrieval_p50']:.0f} ms, generation p50 {lat['generation_p50']:.0f} ms)", flush=True)
    return f"""{SECTION}

`.venv/bin/python benchmarks/serve.py --only latency` — {machine()}; run took RUN_SECONDS s.
Model: SmolLM2-135M-Instruct + adapter `{adapter or 'none (base model)'}`, greedy, max {engine.max_new_tokens} new tokens,
k={engine.k} retrieved chunks, decoding constrained by xgrammar 0.2.8 to the answer schema.

| figure | value | goal |
|---|---|---|
| answer latency p50 / p95 ({lat['n']} tickets, one at a time) | {lat['p50']:.0f} / {lat['p95']:.0f} ms | |
| of which retrieval p50 / p95 | {lat['retrieval_p50']:.0f} / {lat['retrieval_p95']:.0f} ms | |
| of which generation p50 / p95 | {lat['generation_p50']:.0f} / {lat['generation_p95']:.0f} ms | |

Generation dominates ({100 * (1 - lat['retrieval_share']):.0f}% of answer time, one request at a time). Concurrent
requests: the API's batching scheduler section; the grammar's cost per token: benchmarks/decoding.py.
"""


if __name__ == "__main__":
    raise SystemExit(main())
