"""Shared by the benchmark scripts: a one-line machine description, percentiles, RESULTS.md updates
that replace only the script's own section (so each script can be rerun alone), and a private stack
(data copy + own Weaviate) so a benchmark never touches the live data/weaviate."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def private_stack(http_port: int, grpc_port: int, ingest_sample: bool):
    """Yield (settings, client) on a temp copy of data/ (knowledge, behaviour, serving, adapters; no staging)
    served by its own embedded Weaviate on the given ports, stopped and deleted at the end. With
    ``ingest_sample`` the sample company's documents and accounts are ingested first."""
    from hybrid_assets.knowledge.pipeline import ingest_knowledge
    from hybrid_assets.settings import load_settings
    from hybrid_assets.store.client import open_client
    from hybrid_assets.store.server import EmbeddedServer

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for part in ("knowledge/docs", "knowledge/accounts", "behaviour", "serving", "adapters"):
            if (REPO / "data" / part).exists():
                shutil.copytree(REPO / "data" / part, data / part, ignore=shutil.ignore_patterns("staging"))
        os.environ.update({"HYBRID_DATA_DIR": str(data), "WEAVIATE_HTTP_PORT": str(http_port),
                           "WEAVIATE_GRPC_PORT": str(grpc_port)})
        for name in ("WEAVIATE_URL", "HYBRID_API_TOKEN"):  # never a remote server, never a token
            os.environ.pop(name, None)
        settings = load_settings()
        server = EmbeddedServer(binary=EmbeddedServer.from_settings(settings).binary, data_dir=Path(tmp) / "weaviate",
                                http_port=http_port, grpc_port=grpc_port)
        server.start()
        try:
            with open_client(settings, start_embedded=False) as client:
                if ingest_sample:
                    ingest_knowledge(client, settings)
                yield settings, client
        finally:
            server.stop()


def machine() -> str:
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    try:  # nvidia-smi, not torch: this module must stay cheap to import
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        gpus = []
    return f"{cores}-core CPU ({model}){mem}, " + (f"GPU: {', '.join(gpus)}" if gpus else "no GPU")


def pct(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 1]."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def update_results(out: Path, heading: str, section: str) -> None:
    """Replace the section that starts with ``heading`` (up to the next '## ') or append it."""
    text = out.read_text(encoding="utf-8") if out.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    new = section.rstrip("\n").splitlines()
    if start is None:
        lines = lines + ([""] if lines and lines[-1].strip() else []) + new
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = lines[end:]
        lines = lines[:start] + new + ([""] + tail if tail else [])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
