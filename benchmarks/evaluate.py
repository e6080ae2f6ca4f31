"""Evaluation benchmarks: the four-configuration table on the sample company, RAFT vs no-RAFT, and public
benchmarks (MTRAG, ClapNQ, Banking77). Each subcommand writes its own section of benchmarks/RESULTS.md
with the command that reproduces it and its run time.

Every run uses its own embedded Weaviate (ports 8779/50779, temp data folder, stopped at the end), so
the live `data/weaviate` is never touched. Public datasets are read from a path you give (they are
not part of the project): e.g. ../shared/benchmarks.

    .venv/bin/python benchmarks/evaluate.py sample [--limit 24] [--adapter DIR]
    .venv/bin/python benchmarks/evaluate.py tickets   # the demo's sample tickets, answered as served
    .venv/bin/python benchmarks/evaluate.py raft --without DIR --with DIR [--limit 24]
    .venv/bin/python benchmarks/evaluate.py mtrag  --shared ../shared/benchmarks [--limit 30]
    .venv/bin/python benchmarks/evaluate.py clapnq --shared ../shared/benchmarks [--limit 30]
    .venv/bin/python benchmarks/evaluate.py banking77 --shared ../shared/benchmarks [--train-rows 160] [--eval-rows 80]
    .venv/bin/python benchmarks/evaluate.py repetition [--n 6] [--limit 24]
    .venv/bin/python benchmarks/evaluate.py retrieval --dataset mtrag|clapnq --shared ../shared/benchmarks [--limit 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import common  # noqa: E402
from benchmarks.common import machine, update_results  # noqa: E402
from hybrid_assets.evaluation.compare import CONFIGURATIONS  # noqa: E402
from hybrid_assets.settings import apply_offline_env  # noqa: E402

HTTP_PORT, GRPC_PORT = 8779, 50779
OUT = REPO / "benchmarks" / "RESULTS.md"
REPORTS = REPO / "benchmarks" / "reports"
ALL_CONFIGS = tuple(c.name for c in CONFIGURATIONS)  # base, rag_only, finetune_only, hybrid


def private_stack(ingest_sample: bool):
    return common.private_stack(HTTP_PORT, GRPC_PORT, ingest_sample)


def say(line: str) -> None:
    print(line, flush=True)


def _save(report: dict, name: str) -> Path:
    from hybrid_assets.evaluation.compare import bar_chart, write_report

    path = write_report(report, REPORTS / f"{name}.json")
    bar_chart(report, path.with_suffix(".png"), f"{name} (n={report['n']})")
    return path


def _section(title: str, command: str, seconds: float, body: str) -> str:
    return (f"## {title}\n\n`{command}` — {machine()}; run took {seconds / 60:.1f} min.\n\n{body.strip()}\n")


def cmd_sample(args) -> None:
    from hybrid_assets.evaluation.compare import markdown_table, where_beaten
    from hybrid_assets.evaluation.runner import evaluate_sample

    started = time.perf_counter()
    if args.from_report:  # the report `make demo` / `hybrid-assets eval` already wrote: no second run
        report = json.loads(args.from_report.read_text(encoding="utf-8"))
        command = (f"make demo (its evaluation stage = hybrid-assets eval --limit {report['n']}); "
                   f"section written from {args.from_report} by benchmarks/evaluate.py sample --from-report")
        seconds = sum(c["seconds"] for c in report["configurations"].values())
    else:
        with private_stack(ingest_sample=True) as (settings, client):
            report = evaluate_sample(settings, client, limit=args.limit, adapter_dir=args.adapter, progress=say)
        command = f".venv/bin/python benchmarks/evaluate.py sample --limit {args.limit}"
        seconds = time.perf_counter() - started
    path = _save(report, "sample_company")
    say(markdown_table(report))
    hybrid_best = report["best_overall"] == "hybrid"
    body = f"""Held-out tickets of the sample company (n={report['n']}; the behaviour eval split, ticket records only),
live retrieval k={report['k']}, adapter `{Path(report['adapter']).name if report['adapter'] else 'none'}`
({report.get('adapter_status', 'promoted')}); all four run
through the serving engine with schema-constrained greedy decoding. Report: `{path.relative_to(REPO)}` (+ PNG).

{markdown_table(report)}

Best overall: **{report['best_overall']}**{'' if hybrid_best else ' — the hybrid is not the best configuration here; see the rows above'}.
Metrics where another configuration beats the hybrid: {'; '.join(where_beaten(report)) or 'none'}.
"""
    update_results(args.out, "## Four configurations on the sample company (benchmarks/evaluate.py sample)",
                   _section("Four configurations on the sample company (benchmarks/evaluate.py sample)",
                            command, seconds, body))


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def cmd_tickets(args) -> None:
    """``data/serving/sample_tickets.jsonl`` answered as ``make demo``'s serving job answers them (the
    engine's ``answer_many``, promoted adapter, live retrieval): the whole served answer per ticket."""
    from hybrid_assets.evaluation.metrics import repeats_a_run
    from hybrid_assets.evaluation.runner import adapter_for_evaluation
    from hybrid_assets.serving.engine import AnswerEngine, load_labels

    started = time.perf_counter()
    tickets = [json.loads(line) for line in (REPO / "data/serving/sample_tickets.jsonl").read_text(
        encoding="utf-8").splitlines() if line.strip()]
    with private_stack(ingest_sample=True) as (settings, client):
        adapter_for_evaluation(settings)  # on a fresh data folder: installs and promotes the release adapter
        results = AnswerEngine(settings, load_labels(settings)).answer_many(client, tickets)
    seconds = time.perf_counter() - started
    answered = [{"ticket": t["ticket"], "customer_id": t.get("customer_id"), "complete": r.complete,
                 "generated_tokens": r.generated_tokens, **r.to_dict()} for t, r in zip(tickets, results)]
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / "sample_tickets.json"
    path.write_text(json.dumps({"answers": answered}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    rows = []
    for item in answered:
        answer = item["answer"]
        cited = ", ".join(f"{s['id']} = {s['doc_id']}" for s in item["sources"]) or "none"
        rows.append(f"| {_cell(item['ticket'][:70])} ({item['customer_id'] or 'no customer'}) | {answer['decision']} · "
                    f"{answer['escalation']['level']} · {_cell(cited)} | {_cell(', '.join(item['guards']) or '—')} | "
                    f"{_cell(answer['reply'])} |")
    version = answered[0]["adapter_version"] if answered else None
    loops = sum(repeats_a_run(a["answer"]["reply"]) for a in answered)
    cut = sum(not a["complete"] for a in answered)
    body = f"""The {len(answered)} tickets of `data/serving/sample_tickets.jsonl`, answered as `make demo`'s serving job
answers them (one batched call of the engine, adapter `{version}`, live retrieval); the whole reply.
Replies that repeat a run of words or a sentence: {loops} of {len(answered)}; answers the token limit cut: {cut}.
Report: `{path.relative_to(REPO)}`.

| ticket (customer) | decision · level · cited | guards | reply |
|---|---|---|---|
{chr(10).join(rows)}
"""
    say(body)
    update_results(args.out, "## The sample tickets as served (benchmarks/evaluate.py tickets)",
                   _section("The sample tickets as served (benchmarks/evaluate.py tickets)",
                            ".venv/bin/python benchmarks/evaluate.py tickets", seconds, body))


def cmd_raft(args) -> None:
    from hybrid_assets.evaluation.compare import CONFIGURATIONS, compare, markdown_table
    from hybrid_assets.evaluation.runner import sample_cases
    from hybrid_assets.serving.engine import AnswerEngine, load_labels

    started = time.perf_counter()
    hybrid = [c for c in CONFIGURATIONS if c.name == "hybrid"]
    reports = {}
    with private_stack(ingest_sample=True) as (settings, client):
        engine = AnswerEngine(settings, load_labels(settings))
        cases = sample_cases(settings, args.limit)
        for label, adapter in (("without RAFT", args.without), ("with RAFT", args.with_raft)):
            reports[label] = compare(engine, client, cases, adapter, configurations=hybrid, progress=say)
    merged = {"n": len(cases), "configurations": {
        label: {**r["configurations"]["hybrid"], "name": label} for label, r in reports.items()}}
    seconds = time.perf_counter() - started
    path = _save({**merged, "best_overall": max(merged["configurations"], key=lambda n: merged["configurations"][n]["metrics"]["overall"])}, "raft_vs_no_raft")
    say(markdown_table(merged))
    body = f"""The hybrid configuration (adapter + retrieval) on the same held-out tickets (n={len(cases)}) with two adapters
trained with the same default config (64 steps x 4 examples): `{args.without.name}` on tickets + intents only, and
`{args.with_raft.name}` with the RAFT examples (`data/behaviour/raft_examples.jsonl`) added. Report: `{path.relative_to(REPO)}`.
The no-RAFT adapter was trained with `HYBRID_DATA_DIR=DIR .venv/bin/hybrid-assets train --no-promote`, where `DIR/behaviour`
is a copy of `data/behaviour` without `raft_examples.jsonl`.

{markdown_table(merged)}
"""
    update_results(args.out, "## RAFT vs no RAFT (benchmarks/evaluate.py raft)",
                   _section("RAFT vs no RAFT (benchmarks/evaluate.py raft)",
                            f".venv/bin/python benchmarks/evaluate.py raft --without {args.without} --with {args.with_raft} "
                            f"--limit {args.limit}", seconds, body))


def looping(reply: str, n: int = 8) -> bool:
    """True when the reply repeats a run of ``n`` words or a sentence (``evaluation.metrics``)."""
    from hybrid_assets.evaluation.metrics import repeats_a_run

    return repeats_a_run(reply, n)


def cmd_repetition(args) -> None:
    """The hybrid configuration with and without the answer n-gram guard (serving/repetition.py)."""
    import dataclasses

    from hybrid_assets.evaluation.compare import CONFIGURATIONS, compare, markdown_table
    from hybrid_assets.evaluation.runner import adapter_for_evaluation, sample_cases
    from hybrid_assets.serving.engine import AnswerEngine, load_labels

    started = time.perf_counter()
    hybrid = [c for c in CONFIGURATIONS if c.name == "hybrid"]
    reports, loops = {}, {}
    with private_stack(ingest_sample=True) as (settings, client):
        cases = sample_cases(settings, args.limit)
        adapter = adapter_for_evaluation(settings)
        for n in (0, args.n):
            label = f"guard n={n}" if n else "no guard"
            engine = AnswerEngine(dataclasses.replace(settings, answer_no_repeat_ngram=n), load_labels(settings))
            report = compare(engine, client, cases, adapter, configurations=hybrid, progress=say)
            reports[label] = report["configurations"]["hybrid"]
            loops[label] = sum(looping(a["answer"]["reply"]) for a in reports[label]["answers"]) / len(cases)
    merged = {"n": len(cases), "configurations": {label: {**r, "name": label} for label, r in reports.items()}}
    seconds = time.perf_counter() - started
    path = _save({**merged, "looping_replies": loops,
                  "best_overall": max(reports, key=lambda n: reports[n]["metrics"]["overall"])}, "repetition_guard")
    loop_line = ", ".join(f"{label}: {share:.2f}" for label, share in loops.items())
    say(markdown_table(merged))
    say(f"replies that repeat an 8-word run: {loop_line}")
    body = f"""The hybrid configuration (promoted adapter + retrieval) on the same held-out tickets (n={len(cases)}),
greedy and schema-constrained, without and with `HYBRID_NO_REPEAT_NGRAM={args.n}` (an answer may not repeat one of
its own {args.n}-grams; the prompt's n-grams stay free to copy). Share of replies that repeat an 8-word run:
{loop_line}. Report: `{path.relative_to(REPO)}`.

{markdown_table(merged)}
"""
    update_results(args.out, "## Answer n-gram guard (benchmarks/evaluate.py repetition)",
                   _section("Answer n-gram guard (benchmarks/evaluate.py repetition)",
                            f".venv/bin/python benchmarks/evaluate.py repetition --n {args.n} --limit {args.limit}",
                            seconds, body))


def _public(args, fmt: str, sub: str, title: str, note: str) -> None:
    from hybrid_assets.evaluation.compare import markdown_table
    from hybrid_assets.evaluation.runner import evaluate_dataset

    path = Path(args.shared) / sub
    started = time.perf_counter()
    with private_stack(ingest_sample=False) as (settings, client):
        report = evaluate_dataset(settings, client, path, fmt, limit=args.limit, adapter_dir=args.adapter,
                                  configurations=[c for c in CONFIGURATIONS if c.name in args.configs], progress=say)
    seconds = time.perf_counter() - started
    saved = _save(report, fmt)
    say(markdown_table(report))
    body = f"""{note} n={report['n']} items (deterministic sample, seed 0) over {report['dataset']['passages']} passages
ingested into their own collection; k={report['k']}; adapter `{Path(report['adapter']).name if report['adapter'] else 'none'}`
(trained on the sample company only — this measures transfer). Report: `{saved.relative_to(REPO)}`.

{markdown_table(report)}
{_curve_line(report.get("retrieval_recall_at"))}"""
    configs = "" if set(args.configs) == set(ALL_CONFIGS) else f" --configs {','.join(args.configs)}"
    update_results(args.out, f"## {title}", _section(title, f".venv/bin/python benchmarks/evaluate.py {fmt} --shared "
                                                            f"{args.shared} --limit {args.limit}{configs}", seconds, body))


def _curve_line(curve: dict | None) -> str:
    if not curve:
        return ""
    cells = ", ".join(f"@{k} {v:.3f}" for k, v in curve.items() if v is not None)
    return f"\nRetrieval alone (hybrid search over the whole corpus, relevance floor as served), recall {cells}.\n"


def cmd_retrieval(args) -> None:
    """Retrieval recall@k on a public dataset without generating anything (minutes, not an hour)."""
    from hybrid_assets.evaluation.datasets import load_eval_dataset
    from hybrid_assets.evaluation.runner import query_of, ingest_passages, retrieval_recall_curve
    from hybrid_assets.serving.retrieval import retrieve_from_collection

    path = Path(args.shared) / args.dataset
    started = time.perf_counter()
    full = load_eval_dataset(path, args.dataset)
    items = load_eval_dataset(path, args.dataset, limit=args.limit).items if args.limit else full.items
    with private_stack(ingest_sample=False) as (settings, client):
        collection = ingest_passages(client, settings, full)
        curve = retrieval_recall_curve(
            items, lambda item, k: retrieve_from_collection(client, settings, collection, query_of(item), k))
    seconds = time.perf_counter() - started
    say(_curve_line(curve))
    answerable = sum(1 for item in items if item.answerable and item.gold_passage_ids)
    title = f"{args.dataset} retrieval recall@k (benchmarks/evaluate.py retrieval)"
    body = f"""The same items as the `{args.dataset}` section (n={len(items)}, {answerable} answerable with gold passages),
{len(full.passages)} passages in their own collection, query = last two user turns.
{_curve_line(curve)}"""
    update_results(args.out, f"## {title}", _section(
        title, f".venv/bin/python benchmarks/evaluate.py retrieval --dataset {args.dataset} --shared {args.shared} "
               f"--limit {args.limit}", seconds, body))


def cmd_mtrag(args) -> None:
    _public(args, "mtrag", "mtrag", "MTRAG (benchmarks/evaluate.py mtrag)",
            "MTRAG human-reference subset (multi-turn; the search query is the last two user turns).")


def cmd_clapnq(args) -> None:
    _public(args, "clapnq", "clapnq", "ClapNQ (benchmarks/evaluate.py clapnq)",
            "ClapNQ dev, half answerable and half unanswerable (abstention is the point).")


def cmd_banking77(args) -> None:
    """Train an adapter on part of Banking77 train, measure category accuracy on a held-out part."""
    from hybrid_assets.behaviour.dataset import load_behaviour_data
    from hybrid_assets.behaviour.evaluate import evaluate_model
    from hybrid_assets.behaviour.train import TrainConfig, train_adapter
    from hybrid_assets.evaluation.datasets import load_eval_dataset, split_intent_items
    from hybrid_assets.schema import LabelSpace

    started = time.perf_counter()
    source = Path(args.shared) / "banking77" / "train.csv"
    dataset = load_eval_dataset(source, "intent-csv")
    train_items, eval_items = split_intent_items(dataset.items, eval_fraction=0.2, seed=0)
    sample = LabelSpace.from_file(REPO / "data" / "behaviour" / "labels.json")
    labels = LabelSpace(company="Banking77 bank", sentiments=sample.sentiments, categories=tuple(dataset.categories),
                        escalation_levels=sample.escalation_levels)
    import random

    rng = random.Random(0)
    train_rows = rng.sample(list(train_items), min(args.train_rows, len(train_items)))
    eval_rows = rng.sample(list(eval_items), min(args.eval_rows, len(eval_items)))
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for name, rows in (("train", train_rows), ("eval", eval_rows)):
            folder = Path(tmp) / name
            folder.mkdir()
            (folder / "labels.json").write_text(json.dumps({
                "company": labels.company, "sentiments": list(labels.sentiments),
                "categories": list(labels.categories), "escalation_levels": list(labels.escalation_levels)}))
            import csv

            with open(folder / "intents.csv", "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["text", "category"])
                writer.writerows([item.question, item.category] for item in rows)
            folders[name] = folder
        config = TrainConfig(max_steps=args.max_steps, batch_size=4, grad_accum=2, eval_fraction=0.0,
                             checkpoint_every=1000)
        result = train_adapter(config, folders["train"], Path(tmp) / "adapter", labels=labels,
                               on_step=lambda s: say(f"step {s.step}/{s.total_steps} loss {s.loss:.3f}"))
        records = list(load_behaviour_data(folders["eval"], labels).records)
        base_report = evaluate_model(None, None, records, labels, max_new_tokens=160)
        adapter_report = evaluate_model(None, Path(tmp) / "adapter", records, labels, max_new_tokens=160)
    base, adapter = base_report.metrics, adapter_report.metrics
    seconds = time.perf_counter() - started
    say(f"category as decided: base {base.category_accuracy:.3f}, adapter {adapter.category_accuracy:.3f}; "
        f"JSON validity: base {base.json_validity:.3f}, adapter {adapter.json_validity:.3f}")
    body = f"""An adapter trained on {len(train_rows)} rows of Banking77 train ({len(labels.categories)} intents; rows from the 80% side
of a content-hash split) for {result.total_steps} steps (QLoRA NF4, {result.wall_s / 60:.1f} min), evaluated on {len(records)} rows of the
held-out 20% (greedy, schema-constrained as served: the grammar allows only the 77 intent names, the model
picks one). Chance level is 1/77 = 0.013.

| model | category as decided | JSON validity |
|---|---|---|
| base SmolLM2-135M-Instruct | {base.category_accuracy:.3f} | {base.json_validity:.3f} |
| + Banking77 adapter | **{adapter.category_accuracy:.3f}** | {adapter.json_validity:.3f} |

Scored by the project's one decision scorer (`hybrid_assets/scoring.py`, as the promotion gate): the
category is the one the model wrote (the second field; the grammar allows only the 77 names), also
when the reply after it ran past the 160-token budget; JSON validity (answers completed within the
budget) is reported on its own.
"""
    update_results(args.out, "## Banking77 intents (benchmarks/evaluate.py banking77)",
                   _section("Banking77 intents (benchmarks/evaluate.py banking77)",
                            f".venv/bin/python benchmarks/evaluate.py banking77 --shared {args.shared} --train-rows "
                            f"{args.train_rows} --eval-rows {args.eval_rows} --max-steps {args.max_steps}", seconds, body))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sample")
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--adapter", type=Path, default=None)
    p.add_argument("--from-report", type=Path, default=None, help="write the section from an existing report")
    sub.add_parser("tickets")
    p = sub.add_parser("raft")
    p.add_argument("--without", type=Path, required=True)
    p.add_argument("--with", dest="with_raft", type=Path, required=True)
    p.add_argument("--limit", type=int, default=24)
    for name in ("mtrag", "clapnq"):
        p = sub.add_parser(name)
        p.add_argument("--shared", type=Path, required=True)
        p.add_argument("--limit", type=int, default=30)
        p.add_argument("--adapter", type=Path, default=None)
        p.add_argument("--configs", type=lambda v: tuple(v.split(",")), default=ALL_CONFIGS,
                       help=f"comma-separated configurations (default all: {','.join(ALL_CONFIGS)})")
    p = sub.add_parser("retrieval")
    p.add_argument("--dataset", choices=("mtrag", "clapnq"), required=True)
    p.add_argument("--shared", type=Path, required=True)
    p.add_argument("--limit", type=int, default=30)
    p = sub.add_parser("repetition")
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--limit", type=int, default=24)
    p = sub.add_parser("banking77")
    p.add_argument("--shared", type=Path, required=True)
    p.add_argument("--train-rows", type=int, default=160)
    p.add_argument("--eval-rows", type=int, default=80)
    p.add_argument("--max-steps", type=int, default=20)
    for p in sub.choices.values():
        p.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    apply_offline_env()
    {"sample": cmd_sample, "tickets": cmd_tickets, "raft": cmd_raft, "mtrag": cmd_mtrag, "clapnq": cmd_clapnq,
     "banking77": cmd_banking77, "repetition": cmd_repetition,
     "retrieval": cmd_retrieval}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
