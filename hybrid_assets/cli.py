"""The ``hybrid-assets`` command line. Each command imports its heavy modules lazily."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hybrid_assets.behaviour.calibration import describe as describe_decision
from hybrid_assets.behaviour.pipeline import (DEFAULT_EVAL_LIMIT, comparison_table, promote_if_passing, recalibrate,
                                              train_candidate)
from hybrid_assets.behaviour.release import RELEASE_DIR
from hybrid_assets.behaviour.release import export_release as write_release
from hybrid_assets.behaviour.train import PROFILES, TrainConfig, profile_config
from hybrid_assets.evaluation.compare import bar_chart, markdown_table, write_report
from hybrid_assets.evaluation.datasets import DatasetFormatError
from hybrid_assets.evaluation.runner import DEFAULT_SAMPLE_LIMIT, evaluate_dataset, evaluate_sample
from hybrid_assets.evaluation.served_check import check_decision_as_served
from hybrid_assets.knowledge.indexing import IndexingError
from hybrid_assets.knowledge.pipeline import UnknownCustomer, ingest_knowledge
from hybrid_assets.knowledge.pipeline import search as run_search
from hybrid_assets.raft.pipeline import default_paths, generate_raft_file, snapshot_corpus
from hybrid_assets.raft.records import RaftConfig, RaftDataError, check_triples, load_snapshot, load_triples
from hybrid_assets.raft.synthesis import EndpointConfig, SynthesisDisabled, synthesise_triples, write_triples
from hybrid_assets.schema import LabelSpace
from hybrid_assets.serving.api import create_app
from hybrid_assets.serving.engine import AnswerEngine, load_labels
from hybrid_assets.settings import apply_offline_env, load_settings
from hybrid_assets.store.client import open_client
from hybrid_assets.store.collections import MAX_SEARCH_K
from hybrid_assets.store.cluster import DEFAULT_GRPC_BASE, DEFAULT_HTTP_BASE, LocalCluster
from hybrid_assets.store.server import EmbeddedServer, WeaviateUnavailable, is_ready


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(2)


def _weaviate_errors() -> tuple[type[Exception], ...]:
    from weaviate.exceptions import WeaviateBaseError

    return (WeaviateBaseError,)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@click.group()
def main() -> None:
    """hybrid_assets: support answers from a fine-tuned model grounded in Weaviate."""
    apply_offline_env()


@main.group()
def weaviate() -> None:
    """Manage the embedded Weaviate server."""


@weaviate.command("start")
def weaviate_start() -> None:
    """Start the embedded server (reuses one already running)."""
    server = EmbeddedServer.from_settings(load_settings())
    try:
        state = server.start()
    except WeaviateUnavailable as exc:
        _fail(str(exc))
    click.echo(f"weaviate {state} on {server.url} (gRPC {server.grpc_port}), data in {server.data_dir}")


@weaviate.command("stop")
def weaviate_stop() -> None:
    """Stop the embedded server."""
    stopped = EmbeddedServer.from_settings(load_settings()).stop()
    click.echo("weaviate stopped" if stopped else "weaviate was not running (no server started by us)")


@weaviate.command("status")
def weaviate_status() -> None:
    """Print the embedded server's status as JSON."""
    settings = load_settings()
    if not settings.embedded:
        click.echo(json.dumps({"url": settings.weaviate_url, "remote": True, "ready": is_ready(settings.weaviate_url, 5)}))
        return
    click.echo(json.dumps(EmbeddedServer.from_settings(settings).status(), indent=2))


@weaviate.group("cluster")
@click.option("--http-base", default=DEFAULT_HTTP_BASE, show_default=True, help="REST port of node1 (node i: +i-1)")
@click.option("--grpc-base", default=DEFAULT_GRPC_BASE, show_default=True, help="gRPC port of node1 (node i: +i-1)")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="one folder per node below it [default: <HYBRID_DATA_DIR>/weaviate-cluster]")
@click.pass_context
def weaviate_cluster(ctx, http_base: int, grpc_base: int, data_dir: Path | None) -> None:
    """A replicated three-node Weaviate cluster on loopback (then: WEAVIATE_URL=<node1>,
    HYBRID_WEAVIATE_REPLICATION_FACTOR=3)."""
    settings = load_settings()
    ctx.obj = LocalCluster(EmbeddedServer.from_settings(settings).binary,
                           (data_dir or settings.data_dir / "weaviate-cluster").resolve(), http_base, grpc_base)


@weaviate_cluster.command("start")
@click.pass_obj
def weaviate_cluster_start(cluster: LocalCluster) -> None:
    """Start the three nodes (reuses running ones) and wait until all are healthy."""
    try:
        state = cluster.start()
    except WeaviateUnavailable as exc:
        _fail(str(exc))
    click.echo(f"cluster {state}: {', '.join(n.url for n in cluster.nodes)}\n"
               f"use it with: WEAVIATE_URL={cluster.url} WEAVIATE_GRPC_URL={cluster.grpc_url} "
               "HYBRID_WEAVIATE_REPLICATION_FACTOR=3")


@weaviate_cluster.command("stop")
@click.pass_obj
def weaviate_cluster_stop(cluster: LocalCluster) -> None:
    """Stop every node."""
    stopped = cluster.stop()
    click.echo(f"stopped {', '.join(stopped)}" if stopped else "no node was running")


@weaviate_cluster.command("status")
@click.pass_obj
def weaviate_cluster_status(cluster: LocalCluster) -> None:
    """Each node's state and the membership as the cluster sees it, as JSON."""
    click.echo(json.dumps(cluster.status(), indent=2))


@weaviate_cluster.command("kill-node")
@click.argument("name")
@click.pass_obj
def weaviate_cluster_kill_node(cluster: LocalCluster, name: str) -> None:
    """SIGKILL one node (a crash, to watch the others keep answering); `start` brings it back."""
    click.echo(f"{name} killed" if cluster.kill_node(name) else f"{name} was not running")


@main.command()
def ingest() -> None:
    """Run the knowledge path once (parse, chunk, embed, sync) without Dagster."""
    settings = load_settings()
    try:
        with open_client(settings) as client:
            ingested = ingest_knowledge(client, settings, show_progress=True)
    except (IndexingError, WeaviateUnavailable) as exc:
        _fail(f"{exc}\nnothing already indexed was removed; rerun `hybrid-assets ingest` once Weaviate is healthy")
    except _weaviate_errors() as exc:
        _fail(f"Weaviate failed during ingest: {_first_line(exc)}\nnothing already indexed was removed; "
              "rerun `hybrid-assets ingest` once Weaviate is healthy")
    chunking, report = ingested.chunking, ingested.documents
    for doc_id, reason in sorted(chunking.failures.items()):
        click.secho(f"parse failure: {doc_id}: {reason}", fg="yellow")
    click.echo(
        f"documents: {chunking.chunk_count} chunks; {len(report.inserted)} written, {len(report.deleted)} deleted, "
        f"{report.unchanged_docs} documents unchanged; accounts: {len(ingested.accounts)} tenants"
    )


@main.command()
@click.argument("query")
@click.option("--customer", "customer_id", default=None, help="Customer id: also search that customer's own data.")
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(1, MAX_SEARCH_K), help="Number of chunks.")
@click.option("--alpha", default=0.6, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="0 = BM25 only, 1 = vector only.")
def search(query: str, customer_id: str | None, k: int, alpha: float) -> None:
    """Hybrid search: ranked chunks with scores and sources."""
    settings = load_settings()
    try:
        with open_client(settings) as client:
            hits = run_search(client, settings, query, customer_id=customer_id, k=k, alpha=alpha)
    except (UnknownCustomer, ValueError, WeaviateUnavailable) as exc:
        _fail(str(exc))
    except _weaviate_errors() as exc:
        _fail(f"Weaviate refused the search: {_first_line(exc)}")
    if not hits:
        click.echo("no results (is the knowledge indexed? run `hybrid-assets ingest` or `make demo`)")
    for rank, hit in enumerate(hits, 1):
        scope = f"tenant {hit.tenant}" if hit.tenant else "shared"
        click.secho(f"{rank}. {hit.score:.3f}  {hit.doc_id}  [{hit.section}]  ({scope}, id {hit.chunk_id})", bold=True)
        snippet = " ".join(hit.text.split())
        click.echo(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}")


@main.command()
@click.argument("ticket")
@click.option("--customer", "customer_id", default=None, help="Customer id (their own account data is searched too).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option("-k", "k", default=4, show_default=True, help="Chunks retrieved.")
@click.option("--no-adapter", is_flag=True, help="Use the base model without the promoted adapter.")
def ask(ticket: str, customer_id: str | None, as_json: bool, k: int, no_adapter: bool) -> None:
    """Answer one ticket: strict JSON answer + the cited sources."""
    settings = load_settings()
    engine = AnswerEngine(settings, load_labels(settings), k=k, use_adapter=not no_adapter)
    try:
        with open_client(settings) as client:
            result = engine.answer(client, ticket, customer_id)
    except (UnknownCustomer, ValueError, WeaviateUnavailable) as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    click.echo(json.dumps(result.answer, indent=2, ensure_ascii=False))
    click.secho(f"\nadapter: {result.adapter_version or '(base model)'}   collection: {result.collection}   "
                f"retrieval {result.retrieval_ms:.0f} ms, generation {result.generation_ms:.0f} ms", dim=True)
    for source in result.sources:
        click.echo(f"[{source['id']}] {source['doc_id']} — {source['section']} (chunk {source['chunk_id']})")
    if result.dropped_citations or result.guards:
        click.secho(f"dropped citations: {result.dropped_citations}; guards: {result.guards}", fg="yellow")


# The training knobs the CLI offers; each option's type, default and help come from TrainConfig (the one
# definition, shared with the Dagster run config). The rest stay at their defaults (or use Dagster's config).
CLI_TRAIN_KNOBS = ("max_steps", "epochs", "quantization", "base_model", "decision_weight", "learning_rate", "lora_r",
                   "batch_size", "grad_accum", "seed")


def train_options(command):
    knobs = {name: (kind, default, help_text) for name, kind, default, help_text in TrainConfig.knobs()}
    for name in reversed(CLI_TRAIN_KNOBS):
        kind, default, help_text = knobs[name]
        click_type = click.Choice(["nf4", "none"]) if name == "quantization" else \
            {int: int, float: float}.get(kind, str)
        shown = "" if default is None else f" [default: {default}]"
        command = click.option(f"--{name.replace('_', '-')}", name, type=click_type, default=None,
                               help=f"{help_text}.{shown}")(command)
    return command


@main.command()
@train_options
@click.option("--eval-limit", type=int, default=None, help="Eval records for base vs adapter (0 = whole eval split).")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="default", show_default=True,
              help="Named knob set (behaviour/train.py PROFILES): quick ~15 min, default ~30 min, release ~55 min "
                   "on 2 cores; explicit options override it.")
@click.option("--promote/--no-promote", default=True, show_default=True,
              help="Promote the adapter when it passes the gate (beats the base on the eval split, and is "
                   "not worse than the adapter in service).")
@click.option("--decision-probes/--no-decision-probes", "decision_probes", default=None,
              help="Fit hidden-state probes for the decision and the escalation level at calibration "
                   "(TrainConfig.decision_probes; off by default, see its comment).")
@click.option("--export-release", is_flag=True, default=False,
              help="When the adapter passes the gate, also write it to adapters/release/ (the shipped default "
                   "adapter, with its lineage and decision probe): how the release adapter is made.")
def train(eval_limit, profile, promote, export_release, **knobs) -> None:
    """Train a QLoRA adapter on data/behaviour, evaluate it against the base, register it (and promote it
    only if it passes the gate). Resumes an interrupted run with the same data and config."""
    if export_release and not promote:
        _fail("--export-release needs --promote: only an adapter that passed the gate is shipped")

    from tqdm import tqdm

    settings = load_settings()
    try:
        config = profile_config(profile, **knobs)
    except ValueError as exc:
        _fail(str(exc))
    bar = None

    def progress(step) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=step.total_steps, desc="training", unit="step", initial=step.step - 1)
        bar.set_postfix(loss=f"{step.loss:.3f}", refresh=False)
        bar.update(1)

    candidate = train_candidate(settings, config, on_step=progress,
                                eval_limit=DEFAULT_EVAL_LIMIT if eval_limit is None else eval_limit)
    if bar is not None:
        bar.close()
    result = candidate.train
    click.echo(f"adapter {candidate.version.version_id}: {result.total_steps} steps "
               f"({result.steps_run} run now), {result.tokens_per_s:.0f} tokens/s, {result.wall_s / 60:.1f} min")
    click.echo(f"eval subset: {candidate.eval_records} records\n"
               + comparison_table(candidate.base_metrics, candidate.adapter_metrics, candidate.champion_metrics))
    calibration = candidate.calibration
    click.echo(describe_decision(calibration))
    if not promote:
        click.echo("not promoted (--no-promote)")
        return
    passed, reasons = promote_if_passing(settings, candidate)
    click.echo(("PROMOTED " if passed else "NOT promoted: the gate failed ") + "; ".join(reasons))
    if not passed:
        sys.exit(1)
    if export_release:
        out = write_release(candidate.version, settings.release_adapter_dir or RELEASE_DIR)
        click.echo(f"release adapter written to {out} (commit it with data/behaviour: its lineage names that data)")


@main.command()
@click.option("--adapter", "adapter_dir", type=click.Path(path_type=Path, file_okay=False, exists=True),
              default=None, help="The adapter folder to recalibrate (default: the shipped adapters/release/).")
@click.option("--eval-limit", type=int, default=DEFAULT_EVAL_LIMIT, show_default=True,
              help="Held-out records the recalibrated decision is measured on (the gate's subset).")
@click.option("--as-served", is_flag=True,
              help="Only check the adapter's decision rule as served: its dev tickets through live retrieval "
                   "(Weaviate with the knowledge ingested), greedy vs its threshold vs its retrieval evidence; "
                   "the figures are recorded in its lineage.")
@click.option("--apply", is_flag=True, help="With --as-served: serve the rule with the best dev macro F1 as served "
              "(the dev split has no off-topic tickets: see evaluation/served_check.py).")
def calibrate(adapter_dir, eval_limit, as_served, apply) -> None:
    """Choose an adapter's decision calibration again on its dev split (threshold and retrieval
    evidence), measure it on the gate's eval records, and write both into its lineage.json."""
    settings = load_settings()
    adapter_dir = adapter_dir or settings.release_adapter_dir or RELEASE_DIR
    if as_served:
        try:
            with open_client(settings) as client:
                figures = check_decision_as_served(settings, client, adapter_dir, write=True, apply=apply,
                                                   progress=click.echo)
        except ValueError as exc:
            _fail(str(exc))
        for name, score in figures["dev_macro_f1_as_served"].items():
            click.echo(f"{name:>20}: dev macro F1 as served {score:.3f}")
        click.echo(f"best as served: {figures['chosen']} (in use: {figures['in_use_before']}; "
                   f"{'now served' if apply else 'not applied: --apply serves it'}); "
                   f"recorded in {Path(adapter_dir) / 'lineage.json'}")
        return
    try:
        result = recalibrate(settings, adapter_dir, eval_limit=eval_limit)
    except ValueError as exc:
        _fail(str(exc))
    click.echo(f"before: {describe_decision(result['before'])}")
    click.echo(f"now:    {describe_decision(result['calibration'])}")
    if result["adapter_metrics"]:
        click.echo(comparison_table(result["adapter_metrics"], result["metrics"]).replace(
            "| metric | base | adapter |", "| metric | calibration before | recalibrated |"))
    click.echo(f"written to {Path(adapter_dir) / 'lineage.json'}")


@main.group()
def raft() -> None:
    """RAFT training data: pin the corpus, check the triples, generate the behaviour file."""


def _raft_paths():
    return default_paths(load_settings())


@raft.command("snapshot")
@click.option("--docs", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Documents folder (default: the knowledge documents).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Snapshot file (default: data/raft/corpus_snapshot.jsonl).")
def raft_snapshot(docs, out) -> None:
    """Re-pin the corpus snapshot RAFT reads (never the live documents)."""
    paths = _raft_paths()
    try:
        stats = snapshot_corpus(docs or paths["docs"], out or paths["snapshot"], paths["cache"])
    except RaftDataError as exc:
        _fail(str(exc))
    click.echo(json.dumps(stats, indent=2))


_triples_option = click.option("--triples", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                               help="Triples file (default: data/raft/triples.jsonl).")
_snapshot_option = click.option("--snapshot", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                                default=None, help="Snapshot file (default: data/raft/corpus_snapshot.jsonl).")


@raft.command("check")
@_triples_option
@_snapshot_option
def raft_check(triples, snapshot) -> None:
    """Check that every triple resolves against the snapshot (exit 1 on problems)."""
    settings, paths = load_settings(), _raft_paths()
    try:
        rows = load_triples(triples or paths["triples"])
        problems = check_triples(rows, load_snapshot(snapshot or paths["snapshot"]),
                                 LabelSpace.from_file(settings.behaviour_dir / "labels.json"))
    except RaftDataError as exc:
        _fail(str(exc))
    for problem in problems:
        click.echo(problem)
    click.echo(f"{len(rows)} triples, {len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


@raft.command("generate")
@_triples_option
@_snapshot_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Behaviour file to write (default: data/behaviour/raft_examples.jsonl).")
@click.option("--distractors", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Hard negatives next to the oracle.")
@click.option("--p-no-oracle", type=click.FloatRange(0.0, 1.0), default=0.2, show_default=True,
              help="Fraction of examples whose oracle is left out (target: the not-answerable answer).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=0.6, show_default=True,
              help="Hybrid search weight: 0 = BM25 only, 1 = vector only.")
@click.option("--max-quote-similarity", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.75,
              show_default=True, help="A chunk restating the quote this closely is never a distractor.")
def raft_generate(triples, snapshot, out, distractors, p_no_oracle, seed, alpha, max_quote_similarity) -> None:
    """Mine hard negatives in Weaviate and write the RAFT behaviour file (atomically)."""
    settings, paths = load_settings(), _raft_paths()
    config = RaftConfig(distractors, p_no_oracle, seed, alpha, max_quote_similarity)
    try:
        with open_client(settings) as client:
            stats = generate_raft_file(triples or paths["triples"], snapshot or paths["snapshot"],
                                       out or paths["out"], client, config)
    except (RaftDataError, WeaviateUnavailable) as exc:
        _fail(str(exc))
    click.echo(json.dumps(stats, indent=2))


@raft.command("synthesize")
@_snapshot_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where the drafted triples go (default: data/raft/synthetic_triples.jsonl).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="Chunks to draft from (one request each).")
@click.option("--seed", type=int, default=0, show_default=True)
def raft_synthesize(snapshot, out, limit, seed) -> None:
    """Draft triples with an OpenAI-compatible endpoint (off unless HYBRID_SYNTH_BASE_URL is set); review them,
    then `raft generate --triples <file>`."""
    settings, paths = load_settings(), _raft_paths()
    out = out or paths["triples"].with_name("synthetic_triples.jsonl")
    try:
        endpoint = EndpointConfig.from_env()
    except SynthesisDisabled as exc:
        _fail(str(exc))
    labels = LabelSpace.from_file(settings.behaviour_dir / "labels.json")
    result = synthesise_triples(load_snapshot(snapshot or paths["snapshot"]), labels, endpoint, limit, seed)
    for reason in result.rejected:
        click.echo(f"rejected: {reason}")
    if result.triples:
        write_triples(out, result.triples)
    click.echo(f"{len(result.triples)} triple(s) written to {out}, {len(result.rejected)} rejected; review them, then "
               f"`hybrid-assets raft generate --triples {out} --out <behaviour file>`")
    sys.exit(0 if result.triples else 1)


@main.command("eval")
@click.option("--dataset", "dataset_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="An evaluation dataset (default: the sample company's held-out tickets).")
@click.option("--format", "fmt", type=click.Choice(["native", "mtrag", "clapnq", "intent-csv"]), default="native",
              show_default=True, help="Format of --dataset.")
@click.option("--limit", type=int, default=None, help="Evaluate a deterministic sample of this many items.")
@click.option("--adapter", "adapter_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Adapter folder (default: the promoted adapter).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("data/runs/eval_report.json"),
              show_default=True, help="Where to write the JSON report (a PNG chart is written beside it).")
def evaluate(dataset_path, fmt, limit, adapter_dir, out) -> None:
    """Base vs RAG-only vs fine-tune-only vs hybrid on one held-out set: a table, a chart, a JSON report."""
    settings = load_settings()
    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    try:
        with open_client(settings) as client:
            if dataset_path is None:
                report = evaluate_sample(settings, client, limit=limit or DEFAULT_SAMPLE_LIMIT,
                                         adapter_dir=adapter_dir, progress=echo)
            else:
                report = evaluate_dataset(settings, client, dataset_path, fmt, limit=limit, adapter_dir=adapter_dir,
                                          progress=echo)
    except (DatasetFormatError, WeaviateUnavailable, ValueError) as exc:
        _fail(str(exc))
    write_report(report, out)
    chart = bar_chart(report, out.with_suffix(".png"), f"{report['dataset']['name']} (n={report['n']})")
    click.echo(markdown_table(report))
    click.echo(f"\nbest overall: {report['best_overall']}; report {out}, chart {chart}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    """Run the HTTP API and the agent console (console at /, OpenAPI docs at /docs)."""
    import uvicorn

    uvicorn.run(create_app(load_settings()), host=host, port=port, workers=1)
