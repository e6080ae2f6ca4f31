"""Many tenants (issue #13, item 3): N generated customers, one Weaviate tenant each, ingested with
the project's own ingest (``knowledge.pipeline.ingest_knowledge``: the sample company's documents
as the shared knowledge plus every customer's account file) into a real Weaviate.

Phases, all in one run on one server (its own, on ports 8486/8481 and a temp data folder, stopped at
the end; or the server of WEAVIATE_URL when set, which must not hold our collections yet):

1. ``--small`` (24) customers: ingest, then tenant-scoped query latency (A).
2. ``--tenants`` (1000) customers (the same 24 first): ingest time, Weaviate RSS (/proc) and this
   process's peak RSS, a no-change re-ingest, latency on the same 24 tenants (B) and on random tenants.
3. All but the ``--active`` (50) most recently queried tenants are deactivated (COLD); a query to a
   COLD tenant re-activates it on demand: its latency (first query) vs the next query, and it answers
   with the customer's own account.
4. Back to the 24 customers (the ingest removes the other tenants): latency again (A'). The ratio
   B / min(A, A') is the figure (the faster reference: the stricter reading); the goal is <= 2x.

Latency is measured two ways: ``pipeline.search`` with the customer id (what serving does: query
embedding, shared knowledge, tenant lookup/re-activation, the tenant's own hybrid search), and the
tenant's hybrid search alone with the vector given. Results go to the "## Tenants
(benchmarks/tenants.py)" section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/tenants.py [--tenants 1000] [--small 24] [--active 50] [--queries 100]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import machine, pct, update_results  # noqa: E402
from hybrid_assets.settings import apply_offline_env  # noqa: E402

apply_offline_env()

HTTP_PORT, GRPC_PORT = 8486, 8481  # gossip/raft: HTTP + 10..13
SECTION_HEADING = "## Tenants (benchmarks/tenants.py)"
SEED = 13
WARMUP = 10


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rss_mb(pid: int | None) -> tuple[float, float] | None:
    """(current RSS, peak RSS) of a process in MiB, from /proc/<pid>/status."""
    if pid is None:
        return None
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    except OSError:
        return None
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def own_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def questions(customer) -> list[str]:
    """What a customer asks about its own account (the tenant part of a ticket)."""
    return [f"open incidents and plan for {customer.company}", f"invoice {customer.invoice} dispute",
            "when is my renewal date and which plan am I on", f"status of incident {customer.incident}"]


@contextlib.contextmanager
def stack(tmp: Path, http_port: int, grpc_port: int):
    """Settings + client on a temp data folder; our own embedded server unless WEAVIATE_URL is set."""
    from hybrid_assets.settings import load_settings
    from hybrid_assets.store.client import open_client
    from hybrid_assets.store.collections import accounts_collection_name, knowledge_collection_name
    from hybrid_assets.store.server import EmbeddedServer

    data = tmp / "data"
    shutil.copytree(REPO / "data" / "knowledge" / "docs", data / "knowledge" / "docs")
    os.environ.update({"HYBRID_DATA_DIR": str(data), "WEAVIATE_HTTP_PORT": str(http_port),
                       "WEAVIATE_GRPC_PORT": str(grpc_port)})
    settings = load_settings()
    server = None
    if settings.embedded:
        server = EmbeddedServer(EmbeddedServer.from_settings(settings).binary, tmp / "weaviate", http_port, grpc_port)
        if server.is_ready():
            raise SystemExit(f"a Weaviate server already answers on {server.url}: pick other ports (--http-port/--grpc-port)")
        server.start()
    names = [knowledge_collection_name(settings.embedding_model), accounts_collection_name(settings.embedding_model)]
    try:
        with open_client(settings, start_embedded=False) as client:
            if not settings.embedded and any(client.collections.exists(n) for n in names):
                raise SystemExit(f"{settings.weaviate_url} already holds {' or '.join(names)}: this benchmark "
                                 "replaces their tenants; point WEAVIATE_URL at a server without them")
            try:
                yield settings, client, (server.pid() if server else None)
            finally:
                if not settings.embedded:  # leave a remote server as we found it
                    for name in names:
                        client.collections.delete(name)
    finally:
        if server:
            server.stop()


class Latency:
    """Tenant-scoped query timings, and which tenants were used last (for the COLD phase)."""

    def __init__(self, client, settings):
        from hybrid_assets.models.embedding import Embedder
        from hybrid_assets.store.collections import accounts_collection_name

        self.client, self.settings = client, settings
        self.embedder = Embedder(settings.embedding_model)
        self.accounts = accounts_collection_name(settings.embedding_model)
        self.recent: collections.OrderedDict[str, None] = collections.OrderedDict()

    def run(self, customers, n: int, rng: random.Random) -> dict[str, list[float]]:
        from hybrid_assets.knowledge.pipeline import search
        from hybrid_assets.store.collections import hybrid_search

        picks = [(c, rng.choice(questions(c))) for c in (rng.choice(customers) for _ in range(WARMUP + n))]
        vectors = self.embedder.embed([q for _, q in picks])
        accounts = self.client.collections.get(self.accounts)
        times: dict[str, list[float]] = {"search": [], "tenant": []}
        for i, ((customer, query), vector) in enumerate(zip(picks, vectors)):
            started = time.perf_counter()
            hits = search(self.client, self.settings, query, customer_id=customer.customer_id, k=5)
            full = time.perf_counter() - started
            started = time.perf_counter()
            own = hybrid_search(accounts, query, vector, 5, 0.6, tenant=customer.customer_id)
            alone = time.perf_counter() - started
            if not own or not any(h.tenant == customer.customer_id for h in hits):
                raise AssertionError(f"{customer.customer_id}: no own account hit for {query!r}")
            self.recent.pop(customer.customer_id, None)
            self.recent[customer.customer_id] = None
            if i >= WARMUP:
                times["search"].append(full * 1000)
                times["tenant"].append(alone * 1000)
        return times

    def most_recent(self, n: int) -> list[str]:
        return list(self.recent)[-n:]


def ingest(client, settings, customers, label: str) -> dict:
    from hybrid_assets.knowledge.pipeline import ingest_knowledge
    from hybrid_assets_tests.knowledge.accountfactory import write_customers

    write_customers(settings.accounts_dir, customers)
    started = time.perf_counter()
    report = ingest_knowledge(client, settings)
    seconds = time.perf_counter() - started
    accounts = report.accounts.values()
    figures = {"seconds": seconds, "tenants": len(report.accounts),
               "written_tenants": sum(1 for r in accounts if r.inserted),
               "chunks_written": sum(len(r.inserted) for r in accounts),
               "embed_s": sum(r.embed_seconds for r in accounts), "write_s": sum(r.write_seconds for r in accounts),
               "docs_written": len(report.documents.inserted)}
    say(f"ingest {label}: {seconds:.1f}s, {figures['tenants']} tenants, {figures['chunks_written']} account chunks "
        f"written in {figures['written_tenants']} tenants (embed {figures['embed_s']:.1f}s, write {figures['write_s']:.1f}s), "
        f"{figures['docs_written']} document chunks written")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000, help="customers (tenants) at scale")
    parser.add_argument("--small", type=int, default=24, help="customers of the reference run")
    parser.add_argument("--active", type=int, default=50, help="recently used tenants kept ACTIVE")
    parser.add_argument("--queries", type=int, default=100, help="timed queries per latency figure")
    parser.add_argument("--cold-queries", type=int, default=30, help="COLD tenants queried")
    parser.add_argument("--http-port", type=int, default=HTTP_PORT)
    parser.add_argument("--grpc-port", type=int, default=GRPC_PORT)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args(argv)
    if not 1 <= args.small < args.tenants or not 1 <= args.active < args.tenants - args.cold_queries:
        parser.error("need 1 <= --small < --tenants and 1 <= --active < --tenants - --cold-queries")

    from hybrid_assets.knowledge.pipeline import ingest_knowledge, search, set_tenant_activity, tenant_states
    from hybrid_assets.models.embedding import Embedder
    from hybrid_assets_tests.knowledge.accountfactory import make_customers

    run_started = time.perf_counter()
    customers = make_customers(args.tenants, seed=SEED)
    small = customers[: args.small]
    rng = random.Random(SEED)
    load: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), args.http_port, args.grpc_port) as (settings, client, pid):
        Embedder(settings.embedding_model).embed(["warm-up"])  # model load is not an ingest figure
        latency = Latency(client, settings)

        first = ingest(client, settings, small, f"{args.small} customers (+ the shared documents)")
        rss_small = rss_mb(pid)
        load["A"] = "%.1f" % os.getloadavg()[0]
        lat_a = latency.run(small, args.queries, rng)

        scale = ingest(client, settings, customers, f"{args.tenants} customers")
        rss_scale, peak_py = rss_mb(pid), own_peak_mb()
        started = time.perf_counter()
        again = ingest_knowledge(client, settings)
        noop_s = time.perf_counter() - started
        noop_writes = sum(len(r.inserted) + len(r.deleted) for r in again.accounts.values())
        say(f"no-change re-ingest at {args.tenants} tenants: {noop_s:.1f}s, {noop_writes} writes")
        load["B"] = "%.1f" % os.getloadavg()[0]
        lat_b = latency.run(small, args.queries, rng)
        lat_all = latency.run(customers, args.queries, rng)

        keep = latency.most_recent(args.active)
        cold = sorted({c.customer_id for c in customers} - set(keep))
        started = time.perf_counter()
        changed = set_tenant_activity(client, settings, cold, active=False)
        deactivate_s = time.perf_counter() - started
        states = tenant_states(client, settings)
        n_cold = sum(1 for s in states.values() if s == "INACTIVE")
        time.sleep(5)  # let the server release what the COLD tenants held before reading its RSS
        rss_cold = rss_mb(pid)
        say(f"deactivated {len(changed)} tenants in {deactivate_s:.1f}s; {n_cold} INACTIVE, {len(keep)} kept ACTIVE")

        by_id = {c.customer_id: c for c in customers}
        first_q, warm_q, answered = [], [], 0
        for name in rng.sample(cold, args.cold_queries):
            customer = by_id[name]
            query = f"open incidents and plan for {customer.company}"
            started = time.perf_counter()
            hits = search(client, settings, query, customer_id=name, k=5)
            first_q.append((time.perf_counter() - started) * 1000)
            answered += any(h.tenant == name and customer.company in h.text for h in hits)
            started = time.perf_counter()
            search(client, settings, query, customer_id=name, k=5)
            warm_q.append((time.perf_counter() - started) * 1000)
        states = tenant_states(client, settings)
        woke = sum(1 for name in cold if states[name] == "ACTIVE")
        still_cold = sum(1 for s in states.values() if s == "INACTIVE")
        say(f"COLD tenants queried: {args.cold_queries}, answered with own account: {answered}, "
            f"re-activated: {woke}, still INACTIVE: {still_cold}")

        back = ingest(client, settings, small, f"back to {args.small} customers (tenant removal)")
        load["A'"] = "%.1f" % os.getloadavg()[0]
        lat_a2 = latency.run(small, args.queries, rng)
        remaining = len(tenant_states(client, settings))
    run_s = time.perf_counter() - run_started

    def ms(values, q):
        return pct(values, q)

    def ratio(kind: str, q: float) -> float:
        # against the faster of the two references: A runs right after the fresh ingest, while the
        # server is still busy with it, and is the slower one in every run so far
        return ms(lat_b[kind], q) / min(ms(lat_a[kind], q), ms(lat_a2[kind], q))

    rows = []

    def row(name: str, value: str, goal: str = "—", passed: bool | None = None) -> None:
        result = "—" if passed is None else ("pass" if passed else "**FAIL**")
        rows.append(f"| {name} | {value} | {goal} | {result} |")
        print(f"{name}: {value}" + (f" (goal {goal}: {result})" if passed is not None else ""))

    mb = lambda pair: "n/a (remote server)" if pair is None else f"{pair[0]:.0f} MiB (peak {pair[1]:.0f} MiB)"  # noqa: E731
    row(f"Ingest, {args.small} customers + shared documents (fresh server)", f"{first['seconds']:.1f}s")
    row(f"Ingest, {args.small} → {args.tenants} customers ({scale['written_tenants']} new tenants, "
        f"{scale['chunks_written']} chunks)",
        f"{scale['seconds']:.1f}s = {scale['written_tenants'] / scale['seconds']:.1f} tenants/s "
        f"(embed {scale['embed_s']:.1f}s, write {scale['write_s']:.1f}s, rest: tenant creation + reading stored ids)")
    row(f"No-change re-ingest at {args.tenants} tenants", f"{noop_s:.1f}s, {noop_writes} writes", "0 writes",
        noop_writes == 0)
    row(f"Weaviate RSS at {args.small} tenants", mb(rss_small))
    row(f"Weaviate RSS at {args.tenants} tenants (all ACTIVE)", mb(rss_scale))
    row(f"Weaviate RSS with {n_cold} tenants COLD ({len(keep)} ACTIVE), 5 s after", mb(rss_cold))
    row("This process's peak RSS (embedding model included)", f"{peak_py:.0f} MiB")
    for kind, label in (("search", "pipeline.search (serving path)"), ("tenant", "tenant hybrid search alone")):
        for q, name in ((0.5, "p50"), (0.95, "p95")):
            row(f"{label} {name}: {args.small} tenants (A, A') / {args.tenants} tenants (B) / random of {args.tenants}",
                f"{ms(lat_a[kind], q):.1f}, {ms(lat_a2[kind], q):.1f} / {ms(lat_b[kind], q):.1f} / "
                f"{ms(lat_all[kind], q):.1f} ms")
            value = ratio(kind, q)
            row(f"{label} {name}, {args.tenants} / {args.small} tenants (B / min(A, A'))", f"{value:.2f}",
                "≤ 2", value <= 2)
    row(f"Deactivate {len(changed)} tenants (COLD)", f"{deactivate_s:.1f}s")
    row(f"Query to a COLD tenant (re-activated on demand), p50 / p95, {args.cold_queries} tenants",
        f"{ms(first_q, 0.5):.0f} / {ms(first_q, 0.95):.0f} ms (next query to it: {ms(warm_q, 0.5):.0f} / "
        f"{ms(warm_q, 0.95):.0f} ms)")
    row("COLD tenants that answered with their own account", f"{answered} of {args.cold_queries}",
        "all", answered == args.cold_queries)
    row("Tenants re-activated / left COLD after those queries", f"{woke} / {still_cold}",
        f"{args.cold_queries} / {n_cold - args.cold_queries}", woke == args.cold_queries and still_cold == n_cold - args.cold_queries)
    row(f"Ingest back to {args.small} customers (removes {args.tenants - args.small} tenants, COLD ones included)",
        f"{back['seconds']:.1f}s, {remaining} tenants left", str(args.small), remaining == args.small)

    where = "its own embedded Weaviate v1.35.2 (loopback, fresh temp data dir)" if pid else "the server of WEAVIATE_URL"
    given = [f"--{name.replace('_', '-')} {value}" for name, value in vars(args).items()
             if name != "out" and value != parser.get_default(name)]
    command = "`" + " ".join([".venv/bin/python benchmarks/tenants.py", *given]) + "`"
    section = "\n".join([
        SECTION_HEADING,
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}; load average at the latency phases A / B / A': {' / '.join(load.values())} "
        "(the host is shared: other processes' load moves the absolute figures)",
        f"- Data: {args.tenants} generated customers (`hybrid_assets_tests/knowledge/accountfactory.py`, seed {SEED}: "
        "id, company, plan, billing cycle, renewal date, usage, integrations, region, contact e-mail, one open incident, "
        "notes), 3 chunks each, one tenant each, plus the sample company's documents as the shared knowledge; "
        f"ingested with `knowledge.pipeline.ingest_knowledge` into {where}.",
        f"- Latency: {args.queries} timed queries per figure after {WARMUP} warm-up, k=5, alpha 0.6, each a customer's "
        "question about its own account; every query must return the customer's own account (checked). A = "
        f"{args.small} tenants before growing, B = the same {args.small} tenants at {args.tenants}, A' = after "
        "removing the others again; the ratio is B / min(A, A'), the stricter reading.",
        f"- COLD: all but the {args.active} most recently queried tenants set INACTIVE (`set_tenant_activity`); "
        f"{args.cold_queries} of them then queried through `pipeline.search`, which re-activates the asked tenant only.",
        "",
        "| Figure | Value | Goal | Result |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Reproduce: {command} (total run time {run_s / 60:.1f} min = {run_s:.0f}s).",
    ])
    update_results(args.out, SECTION_HEADING, section)
    say(f"wrote {SECTION_HEADING!r} to {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
