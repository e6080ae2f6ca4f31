"""Training benchmark: our QLoRA loop vs a plain TRL ``SFTTrainer`` on the same model, data and settings.

Both sides get the identical NF4-quantised SmolLM2 + LoRA model (``build_lora_model``), the identical
tokenised SFT rows (chat template, loss on assistant tokens only), batch size, gradient
accumulation, learning-rate schedule, max length and seed. Each side runs in its own process (so its
peak RSS is its own) for ``--steps`` optimizer steps; the first step is warm-up and not timed.

Figure: tokens/s = non-padding tokens fed to the model / seconds of the timed steps. Ratio = ours / TRL
(goal >= 1.0). Results go to the "## Training (benchmarks/train.py)" section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/train.py [--steps 6] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import machine, update_results  # noqa: E402
from hybrid_assets.settings import apply_offline_env, load_settings  # noqa: E402

SECTION = "## Training (benchmarks/train.py)"


def _config(steps: int):
    from hybrid_assets.behaviour.train import TrainConfig

    return TrainConfig(max_steps=steps, checkpoint_every=10_000)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(steps: int, out: Path) -> dict:
    from hybrid_assets.behaviour.train import TrainingRun

    settings = load_settings()
    run = TrainingRun(_config(steps), settings.behaviour_dir, out)
    logs = []
    run.train(resume=False, on_step=logs.append)
    timed = logs[1:]
    return {"tokens": sum(s.tokens for s in timed), "seconds": sum(s.seconds for s in timed),
            "steps": len(timed), "peak_rss_mb": _peak_rss_mb(), "final_loss": logs[-1].loss}


def run_trl(steps: int, out: Path, variant: str = "group_by_length") -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from hybrid_assets.models.base_model import compute_dtype
    from hybrid_assets.behaviour.sft import IGNORE_INDEX
    from hybrid_assets.behaviour.train import TrainingRun

    settings = load_settings()
    config = _config(steps)
    run = TrainingRun(config, settings.behaviour_dir, out)  # same rows and the same LoRA model
    dataset = Dataset.from_dict({
        "input_ids": [row["input_ids"] for row in run.rows],
        "completion_mask": [[int(label != IGNORE_INDEX) for label in row["labels"]] for row in run.rows],
        "length": [len(row["input_ids"]) for row in run.rows],
    })
    class StepTimer(TrainerCallback):
        def __init__(self):
            self.step_started, self.seconds, self.tokens, self.steps, self.loss = 0.0, 0.0, 0, 0, None

        def on_step_begin(self, args, state, control, **kwargs):
            self.seen_before = state.num_input_tokens_seen
            self.step_started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step > 1:  # step 1 is warm-up, as for our loop
                self.seconds += time.perf_counter() - self.step_started
                self.tokens += state.num_input_tokens_seen - self.seen_before
                self.steps += 1

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = logs["loss"]

    timer = StepTimer()
    args = SFTConfig(
        output_dir=str(out / "trl"),
        max_steps=steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(steps * config.warmup_ratio)),  # ours: the same linear warm-up length
        max_grad_norm=config.max_grad_norm,
        # padding_free does not truncate; our rows are already cut to max_length by the SFT builder
        max_length=None if variant == "padding_free" else config.max_length,
        seed=config.seed,
        bf16=compute_dtype() == torch.bfloat16,
        use_cpu=not torch.cuda.is_available(),
        completion_only_loss=True,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        gradient_checkpointing=config.gradient_checkpointing,
        include_num_input_tokens_seen="non_padding",  # the same token count as ours: no padding
        # Equal batching: ours groups similar lengths into a batch; TRL's group_by_length does the same,
        # and padding_free (TRL's packing of a batch into one row) computes no padding at all.
        train_sampling_strategy="group_by_length",
        padding_free=variant == "padding_free",
    )
    trainer = SFTTrainer(model=run.model, args=args, train_dataset=dataset, processing_class=run.tokenizer,
                         callbacks=[timer])
    trainer.train()
    return {"tokens": timer.tokens, "seconds": timer.seconds, "steps": timer.steps, "peak_rss_mb": _peak_rss_mb(),
            "final_loss": timer.loss}


SIDES = ("ours", "trl", "trl_padding_free")


def worker(side: str, steps: int) -> None:
    apply_offline_env()
    with tempfile.TemporaryDirectory() as tmp:
        if side == "ours":
            result = run_ours(steps, Path(tmp))
        else:
            result = run_trl(steps, Path(tmp), "padding_free" if side == "trl_padding_free" else "group_by_length")
    print("RESULT " + json.dumps(result), flush=True)


def measure(side: str, steps: int) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", side, "--steps", str(steps)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{side} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_s"] = time.perf_counter() - started
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    print(f"{side}: {result['tokens_per_s']:.1f} tokens/s over {result['steps']} timed steps, "
          f"peak RSS {result['peak_rss_mb']:.0f} MB, process wall {result['wall_s']:.0f}s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per side (the first is warm-up)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.steps)
        return 0
    started = time.perf_counter()
    # Interleaved, ours measured twice: the spread between its two runs is the machine's noise.
    runs = {"ours": measure("ours", args.steps), "trl": measure("trl", args.steps)}
    try:
        runs["trl_padding_free"] = measure("trl_padding_free", args.steps)
    except SystemExit as exc:  # reported, not hidden: TRL may refuse padding-free without flash attention
        runs["trl_padding_free"] = {"error": str(exc).strip().splitlines()[-1][:200]}
    runs["ours_again"] = measure("ours", args.steps)
    ours_tps = [runs[name]["tokens_per_s"] for name in ("ours", "ours_again")]
    trl_best = max(r["tokens_per_s"] for name, r in runs.items() if name.startswith("trl") and "error" not in r)
    ratio_low, ratio_high = min(ours_tps) / trl_best, max(ours_tps) / trl_best
    print(f"ratio ours / best TRL = {ratio_low:.2f}-{ratio_high:.2f}")
    cfg = _config(args.steps)

    def row(label: str, result: dict) -> str:
        if "error" in result:
            return f"| {label} | failed: {result['error']} | | | |"
        loss = result["final_loss"]
        return (f"| {label} | {result['tokens_per_s']:.1f} | {result['steps']} | {result['peak_rss_mb']:.0f} | "
                f"{'' if loss is None else round(loss, 3)} |")

    section = f"""{SECTION}

`.venv/bin/python benchmarks/train.py --steps {args.steps}` — {machine()}; run took {time.perf_counter() - started:.0f} s.
Same NF4 SmolLM2-135M + LoRA (r={cfg.lora_r}, 7 projections), same tokenised rows of `data/behaviour`
(assistant-only loss), batch {cfg.batch_size} x accumulation {cfg.grad_accum}, max length {cfg.max_length},
lr {cfg.learning_rate} cosine, seed {cfg.seed}; {args.steps} optimizer steps each, the first one untimed.
Equal batching: TRL runs with `train_sampling_strategy="group_by_length"` (ours groups lengths the same
way), and once more with `padding_free=True` (no padding computed at all). Ours ran first and last, so
the spread of its two figures is the machine's noise over the run.

| path | tokens/s | timed steps | peak RSS (MB) | loss at last step |
|---|---|---|---|---|
{row("ours (`hybrid_assets.behaviour.train`), first", runs["ours"])}
{row("TRL `SFTTrainer` (trl 1.16.0), group_by_length", runs["trl"])}
{row("TRL `SFTTrainer`, group_by_length + padding_free", runs["trl_padding_free"])}
{row("ours, again at the end", runs["ours_again"])}

**Ratio ours / the faster TRL configuration: {ratio_low:.2f}-{ratio_high:.2f}.** With batching equal, what is
left is the output layer: ours computes logits only at the assistant positions that carry loss (and
weights the decision tokens), TRL computes them for every position and then masks the loss.
"""
    update_results(args.out, SECTION, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
