"""CUDA check of the behaviour path, for a machine with an NVIDIA GPU: QLoRA (NF4 base, bitsandbytes
CUDA kernels, bf16 autocast) trains on the GPU, keeps the 4-bit base frozen, moves every LoRA matrix,
saves an adapter that reloads, and schema-constrained generation (xgrammar) runs on the GPU.

The CI machine has no GPU, so the test suite covers the CPU path only; this script is the GPU's check.
It exits non-zero on the first broken expectation and prints one JSON line of figures.

    .venv/bin/python benchmarks/cuda_check.py                       # the default base model
    .venv/bin/python benchmarks/cuda_check.py --tiny-from DIR       # a small random Llama with DIR's tokenizer

``--tiny-from`` exists for GPU machines that cannot receive the real weights (it checks the code path,
not answer quality): the model is random, so the figures of interest are that it runs, where, and how fast.
"""

from __future__ import annotations

import argparse
import tempfile
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def tiny_llama(source: Path, target: Path) -> Path:
    """A 2-layer random Llama with ``source``'s tokenizer and vocabulary (same chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig.from_pretrained(source)
    config.update({"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(target)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, target / name)
    return target


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"CUDA check FAILED: {message}")
    print(f"ok: {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=None, help="HF id, path or alias (default: HYBRID_BASE_MODEL)")
    parser.add_argument("--tiny-from", type=Path, default=None, help="build a tiny random Llama with this tokenizer")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "behaviour")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hybrid_assets_cuda_check")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here (JSON)")
    parser.add_argument("--allow-cpu", action="store_true", help="dry-run the script on a machine without a GPU")
    args = parser.parse_args(argv)

    import bitsandbytes as bnb
    import torch

    from hybrid_assets.behaviour.evaluate import evaluate_model
    from hybrid_assets.behaviour.train import TrainConfig, TrainingRun

    on_gpu = torch.cuda.is_available()
    check(on_gpu or args.allow_cpu, f"torch {torch.__version__} sees a GPU" if on_gpu else "dry run on the CPU")
    device = "cuda" if on_gpu else "cpu"
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    base = str(tiny_llama(args.tiny_from, args.work / "tiny")) if args.tiny_from else args.base_model

    config = TrainConfig(base_model=base, max_steps=args.steps, batch_size=4, grad_accum=1,
                         checkpoint_every=args.steps, max_length=1024)
    started = time.perf_counter()
    run = TrainingRun(config, args.data, args.work / "adapter")
    model = run.model
    layer = model.get_base_model().model.layers[0]
    check(next(model.parameters()).device.type == device, f"the model is on the {device}")
    check(isinstance(layer.self_attn.q_proj.base_layer, bnb.nn.Linear4bit)
          and layer.self_attn.q_proj.base_layer.weight.quant_state.quant_type == "nf4", "the base is NF4 (QLoRA)")
    base_before = layer.mlp.down_proj.base_layer.weight.data.clone()
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    result = run.train()
    train_s = time.perf_counter() - started
    check(torch.equal(base_before, layer.mlp.down_proj.base_layer.weight.data), "the 4-bit base stayed frozen")
    moved = [n for n, p in model.named_parameters() if "lora_" in n and not torch.equal(p, lora_before[n])]
    check(len(moved) == len(lora_before) > 0, f"all {len(lora_before)} LoRA matrices moved")
    losses = [loss for _, loss in result.loss_curve]
    check(all(0 < loss < 50 for loss in losses), f"finite losses {losses[0]:.3f} -> {losses[-1]:.3f}")
    peak_train_mb = torch.cuda.max_memory_allocated() / 2**20 if on_gpu else 0.0

    records = list(run.split.eval)[:8]
    labels = run.labels
    del run, model
    if on_gpu:
        torch.cuda.empty_cache()
    report = evaluate_model(base, args.work / "adapter", records, labels, max_new_tokens=96, constrained=True)
    check(report.metrics.generated_tokens > 0, f"constrained generation on the {device} wrote "
          f"{report.metrics.generated_tokens} tokens for {len(records)} records")

    figures = {
        "gpu": torch.cuda.get_device_name(0) if on_gpu else "none (dry run)",
        "torch": torch.__version__,
        "bitsandbytes": bnb.__version__,
        "base_model": "tiny random Llama (2 layers, hidden 128)" if args.tiny_from else base,
        "steps": result.steps_run,
        "train_examples": result.train_examples,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "seconds_per_step": round(result.seconds_per_step, 3),
        "train_wall_s": round(train_s, 1),
        "peak_gpu_mb_training": round(peak_train_mb, 1),
        "loss_first_last": [round(losses[0], 3), round(losses[-1], 3)],
        "generation_tokens_per_s": round(report.metrics.tokens_per_s, 1),
        "json_validity": report.metrics.json_validity,
    }
    line = json.dumps(figures)
    print(line, flush=True)
    if args.out:
        args.out.write_text(line + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
