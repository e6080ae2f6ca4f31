"""QLoRA/LoRA training of the support adapter: a plain function, callable from Dagster or a CLI.

We use our own small torch loop instead of ``transformers.Trainer`` because on a 2-core CPU the
loop's details decide the wall time: the loss is computed from logits at the assistant positions
only (the 49k-word output layer over every prompt token costs as much memory as the rest of the
model), batches are length-grouped so little padding is computed, and the schedule of batches is a
pure function of (seed, epoch) so a resumed run sees exactly the batches an uninterrupted one would.

Checkpoints (adapter weights, optimizer, scheduler, step, RNG, loss so far) go to
``output_dir/checkpoints/step-NNNNNN`` every ``checkpoint_every`` steps; a rerun with the same data
and config continues from the latest one. The final adapter is saved in standard PEFT format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from hybrid_assets.behaviour.dataset import (DEFAULT_DEV_FRACTION, DEFAULT_EVAL_FRACTION, BehaviourDataset,
                                            load_behaviour_data, split_records)
from hybrid_assets.behaviour.sft import IGNORE_INDEX, build_sft_dataset
from hybrid_assets.models.base_model import compute_dtype, load_for_training, load_tokenizer
from hybrid_assets.schema import LabelSpace
from hybrid_assets.settings import Settings, apply_offline_env, load_settings

log = logging.getLogger(__name__)

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.pt"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
RESULT_FILE = "train_result.json"
# Architectures whose logits are exactly lm_head(final hidden state), so the loss may skip the
# output layer at prompt positions. Others (logit soft-capping, logit scaling) use the full forward.
PLAIN_HEAD_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3", "olmo2", "granite_moe"}


def knob(default, help: str):
    """A TrainConfig field with its help text: the one definition the Dagster run config and the CLI
    options are generated from (``defs/behaviour/assets.py``, ``cli.py``)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Training knobs. Defaults suit a 2-core CPU: 64 optimizer steps of 4 examples (~13 s each with NF4
    on 2 cores: ~14 min) sampled across the shuffled sample data."""
    base_model: str | None = knob(None, 'HF model id, local path or packaged alias (default: HYBRID_BASE_MODEL)')
    quantization: str = knob("nf4", "'nf4' = QLoRA (4-bit NF4 frozen base), 'none' = plain LoRA")
    lora_r: int = knob(16, 'LoRA rank')
    lora_alpha: int = knob(32, 'LoRA scaling alpha')
    lora_dropout: float = knob(0.05, 'LoRA dropout')
    target_modules: tuple[str, ...] = knob(DEFAULT_TARGET_MODULES, 'Modules that get LoRA adapters')
    # 1e-3, not the usual 2e-4: with a CPU budget of a few dozen steps, 2e-4 leaves the loss at ~1.5 and
    # the answers shapeless; 1e-3 reaches the same loss in a third of the steps (measured, 135M model).
    learning_rate: float = knob(1e-3, 'Peak learning rate (cosine schedule)')
    warmup_ratio: float = knob(0.05, 'Share of the steps spent warming the learning rate up')
    # A fixed step budget, not epochs: the CPU profile's wall time must not grow with the data (RAFT
    # examples, intent CSVs). 64 steps x 4 examples ~ 14 min on 2 cores; on a GPU use max_steps=0, epochs=2.
    max_steps: int = knob(64, 'Optimizer steps; 0 = run `epochs` passes over the train split')
    epochs: float = knob(1.0, 'Passes over the train split when max_steps is 0')
    # Micro-batches of 2: half the activation memory of 4 (peak RSS 20.3 GB -> 12.4 GB on CPU, measured)
    # and ~15% more tokens/s (less padding). 4 examples a step: more updates for the same compute.
    batch_size: int = knob(2, 'Examples per micro-batch')
    grad_accum: int = knob(2, 'Micro-batches per optimizer step')
    max_length: int = knob(1024, 'Max tokens per example (context passages are truncated first)')
    seed: int = knob(42, 'Random seed (data order, LoRA init)')
    eval_fraction: float = knob(DEFAULT_EVAL_FRACTION, 'Share of the records held out for evaluation (content-hash split)')
    # The decision threshold (models/decision.py) is chosen on this split, never on the eval split.
    dev_fraction: float = knob(DEFAULT_DEV_FRACTION, 'Share of the records held out from training to calibrate the decision threshold on')
    checkpoint_every: int = knob(10, 'Save a resumable checkpoint every N steps')
    keep_checkpoints: int = knob(2, 'Checkpoints kept')
    max_grad_norm: float = knob(1.0, 'Gradient clipping norm')
    gradient_checkpointing: bool = knob(False, 'Trade ~30% more compute for less activation memory')
    # Loss weight of the decision tokens (sentiment, category, decision, escalation level) relative
    # to the prose. They are ~25 of ~250 answer tokens, so plain SFT spends most of a small step budget
    # on the reply's wording while the decisions are what the gate and the agents depend on.
    # 1.0 = plain SFT. The loss stays a weighted mean, so the learning rate means the same.
    decision_weight: float = knob(4.0, 'Loss weight of the decision tokens (sentiment, category, decision, escalation level); 1 = plain SFT')
    # Off by default, measured 2026-12-03 (benchmarks/RESULTS.md): fitted on hidden states of examples
    # the adapter was trained on, the probes won on dev (decision macro F1 0.556 vs 0.493) and then
    # abstained on every held-out ticket. Calibration only: training is the same either way.
    decision_probes: bool = knob(False, 'Fit hidden-state probes for the decision and the escalation level at calibration (kept only if they beat the tokens on dev)')

    def __post_init__(self) -> None:
        if self.quantization not in ("nf4", "none"):
            raise ValueError(f"quantization must be 'nf4' or 'none', got {self.quantization!r}")
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length", "checkpoint_every",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if self.max_steps == 0 and self.epochs <= 0:
            raise ValueError("set max_steps > 0 or epochs > 0")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.decision_weight <= 0:
            raise ValueError(f"decision_weight must be > 0, got {self.decision_weight}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def knobs(cls) -> list[tuple[str, type, object, str]]:
        """(name, type, default, help) of every field, types resolved: what the generated Dagster
        config and CLI options are built from."""
        import typing

        hints = typing.get_type_hints(cls)
        return [(f.name, hints[f.name], f.default, f.metadata.get("help", "")) for f in fields(cls)]

    def fingerprint(self, dataset_version: str, base_model: str) -> str:
        """What a checkpoint must match to be resumed: everything that changes what one step computes.
        The run length (max_steps, epochs) and checkpoint cadence are left out, so a run can be extended."""
        relevant = {k: v for k, v in self.to_dict().items()
                    if k not in ("max_steps", "epochs", "checkpoint_every", "keep_checkpoints", "base_model",
                                 "decision_probes")}
        blob = json.dumps({"config": relevant, "data": dataset_version, "base": base_model}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Named training profiles (overrides of the TrainConfig defaults), one command each:
#   quick    ~15 min on 2 cores: a challenger to try a data change; rarely beats the release adapter
#   default  the Dagster job's and `hybrid-assets train`'s defaults (64 steps, ~30 min on 2 cores)
#   release  what produces the shipped adapter (adapters/release/): 192 steps of 4 examples, ~55 min on
#            2 cores, resumable from its checkpoints. On a GPU, run more epochs instead:
#            `--profile release --max-steps 0 --epochs 3` (the gate still decides whether it replaces it).
PROFILES: dict[str, dict] = {
    "quick": {"max_steps": 32},
    "default": {},
    "release": {"max_steps": 192},
}


def profile_config(profile: str = "default", **overrides) -> TrainConfig:
    """A TrainConfig from a named profile plus explicit overrides (None values are ignored)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown training profile {profile!r}; choose one of {sorted(PROFILES)}")
    knobs = {**PROFILES[profile], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**knobs)


@dataclass(frozen=True)
class StepLog:
    step: int
    total_steps: int
    loss: float
    learning_rate: float
    tokens: int
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    base_model: str
    dataset_version: str
    total_steps: int
    resumed_from_step: int
    steps_run: int  # optimizer steps this call ran (total_steps - resumed_from_step)
    loss_curve: tuple[tuple[int, float], ...]  # (step, mean token loss of that step), from step 1
    train_examples: int
    eval_examples: int
    skipped_examples: int  # too long even with the context passages truncated away
    tokens_per_s: float  # tokens (prompt + answer, no padding) per second of this run's steps
    seconds_per_step: float
    peak_rss_mb: float
    wall_s: float
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        data["loss_curve"] = [list(point) for point in self.loss_curve]
        return data


# -- batching -----------------------------------------------------------------------------------
def epoch_micro_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled, length-grouped micro-batches for one epoch, a pure function of (seed, epoch).

    Examples are shuffled, cut into mega-batches of 8 micro-batches, sorted by length inside each,
    and the micro-batches shuffled again: similar lengths share a batch (little padding) while the
    order stays random."""
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * 8
    batches = []
    for start in range(0, len(order), mega):
        group = sorted(order[start:start + mega], key=lambda i: lengths[i])
        batches.extend(group[i:i + batch_size] for i in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


def plan_steps(lengths: list[int], config: TrainConfig) -> list[list[list[int]]]:
    """All optimizer steps of the run, each a list of ``grad_accum`` (or fewer) micro-batches."""
    per_epoch = math.ceil(len(lengths) / config.batch_size)
    if config.max_steps:
        needed_micro = config.max_steps * config.grad_accum
    else:
        needed_micro = max(1, math.ceil(config.epochs * per_epoch))
    micro: list[list[int]] = []
    epoch = 0
    while len(micro) < needed_micro:
        micro.extend(epoch_micro_batches(lengths, config.batch_size, config.seed, epoch))
        epoch += 1
    micro = micro[:needed_micro]
    return [micro[i:i + config.grad_accum] for i in range(0, len(micro), config.grad_accum)]


def collate(rows: list[dict], pad_id: int, decision_weight: float = 1.0):
    """Padded (input_ids, attention, labels, weights); ``weights`` is the per-label loss weight:
    ``decision_weight`` on each row's first ``decision_tokens`` answer tokens, 1 elsewhere."""
    import torch

    width = max(len(row["input_ids"]) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    weights = torch.ones((len(rows), width), dtype=torch.float32)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[i, :n] = torch.tensor(row["input_ids"])
        labels[i, :n] = torch.tensor(row["labels"])
        attention[i, :n] = 1
        start = next((j for j, t in enumerate(row["labels"]) if t != IGNORE_INDEX), n)
        weights[i, start:start + row.get("decision_tokens", 0)] = decision_weight
    return input_ids, attention, labels, weights


def step_weight_total(rows: list[dict], decision_weight: float) -> float:
    """Sum of the loss weights of a step's answer tokens (the weighted-mean denominator).
    Labels are shifted by one in the loss, so the first label of a row never counts."""
    total = 0.0
    for row in rows:
        answer = sum(1 for t in row["labels"][1:] if t != IGNORE_INDEX)
        decisions = min(row.get("decision_tokens", 0), answer)
        total += answer + decisions * (decision_weight - 1.0)
    return total


# -- model --------------------------------------------------------------------------------------
def build_lora_model(config: TrainConfig, base_model: str, settings: Settings):
    """Base model (NF4 or plain, frozen) + fresh LoRA adapters; the seed fixes the LoRA init."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = load_for_training(base_model, config.quantization, settings)
    if config.quantization == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    torch.manual_seed(config.seed)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def loss_sum(model, input_ids, attention_mask, labels, weights=None):
    """(weighted sum of token cross-entropies over assistant tokens, plain sum, number of tokens).
    ``weights`` (same shape as labels) scales each token's loss; None = all 1."""
    import torch.nn.functional as F

    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    base = model.get_base_model()
    if base.config.model_type in PLAIN_HEAD_MODEL_TYPES:
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = base.get_output_embeddings()(hidden[:, :-1][mask])
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][mask]
    per_token = F.cross_entropy(logits.float(), targets[mask], reduction="none")
    plain = per_token.sum()
    weighted = plain if weights is None else (per_token * weights[:, 1:][mask]).sum()
    return weighted, plain, int(mask.sum())


def mixed_precision(device):
    """bf16 autocast where bf16 matmuls are fast (AMX CPUs, modern GPUs): ~8% faster steps on the
    2-core CPU; the LoRA weights and the optimizer stay float32."""
    import torch

    dtype = compute_dtype()
    return torch.autocast(device.type, dtype=dtype, enabled=dtype == torch.bfloat16)


def _lr_lambda(total_steps: int, warmup_ratio: float):
    warmup = max(1, int(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:  # linear warm-up, then cosine decay to 10% of the peak
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


# -- checkpoints --------------------------------------------------------------------------------
def _checkpoint_dirs(output_dir: Path) -> list[Path]:
    root = output_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).exists())


def save_checkpoint(output_dir: Path, model, optimizer, scheduler, step: int, state: dict, keep: int) -> Path:
    """Written to a hidden temp dir and renamed: a checkpoint either exists completely or not at all."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    root = output_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}
    save_file(weights, tmp / ADAPTER_WEIGHTS)
    rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({**state, "step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng}, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in _checkpoint_dirs(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_latest_checkpoint(output_dir: Path, fingerprint: str, model, optimizer, scheduler) -> dict | None:
    """Restore the newest checkpoint of this exact run (same fingerprint); None when there is none."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    for path in reversed(_checkpoint_dirs(output_dir)):
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != fingerprint:
            log.warning("ignoring checkpoint %s: it belongs to another data/config", path)
            continue
        set_peft_model_state_dict(model, load_file(path / ADAPTER_WEIGHTS, device=str(model.device)))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        random.setstate(state["rng"]["python"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        log.info("resuming from %s", path)
        return state
    return None


# -- the run ------------------------------------------------------------------------------------
def _return_freed_memory_if_large(limit_fraction: float = 0.7) -> None:
    """A safety valve: hand freed heap pages back to the OS once the process holds over 70% of the RAM.
    Batches of varying length fragment glibc's heap, so RSS creeps up although live tensors do not grow.
    Trimming costs ~25% speed (the pages are faulted in again), so it is not done below the limit."""
    try:
        import ctypes

        page = os.sysconf("SC_PAGE_SIZE")
        rss = int(Path("/proc/self/statm").read_text().split()[1]) * page
        if rss > limit_fraction * os.sysconf("SC_PHYS_PAGES") * page:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, ValueError, AttributeError):  # not Linux/glibc: nothing to do
        pass


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB (process lifetime)


class TrainingRun:
    """A prepared run: data split and tokenised, LoRA model built, steps planned. ``train()`` runs it.

    Split from ``train_adapter`` so that callers (tests, notebooks) can inspect the model before and
    after training without reaching into the loop."""
    def __init__(self, config: TrainConfig, data_dir: Path, output_dir: Path, *,
                 labels: LabelSpace | None = None, settings: Settings | None = None,
                 data: BehaviourDataset | None = None):
        self.started = time.perf_counter()
        apply_offline_env()
        import torch

        settings = settings or load_settings()
        self.config = config
        self.data_dir, self.output_dir = Path(data_dir), Path(output_dir)
        self.base_model = config.base_model or settings.base_model
        self.labels = labels or LabelSpace.from_file(self.data_dir / "labels.json")
        # ``data``: the validated records a caller already loaded (the Dagster dataset asset's output).
        self.data = data if data is not None else load_behaviour_data(self.data_dir, self.labels)
        if self.data.problems:
            log.warning("%d bad behaviour record(s) skipped, e.g. %s", len(self.data.problems), self.data.problems[0])
        self.split = split_records(self.data.records, config.eval_fraction, config.dev_fraction)
        if not self.split.train:
            raise ValueError(f"no valid training records in {self.data_dir}")

        random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.tokenizer = load_tokenizer(self.base_model, settings)
        train_set = build_sft_dataset(self.split.train, self.tokenizer, self.labels, config.max_length)
        if len(train_set) == 0:
            raise ValueError(f"no training example fits in max_length={config.max_length}")
        self.rows = train_set.to_list()
        self.plan = plan_steps([row["length"] for row in self.rows], config)
        self.model = build_lora_model(config, self.base_model, settings)
        self.fingerprint = config.fingerprint(self.data.version, self.base_model)

    def train(self, resume: bool = True, on_step: Callable[[StepLog], None] | None = None) -> TrainResult:
        import torch

        config, model, rows, output_dir = self.config, self.model, self.rows, self.output_dir
        total_steps = len(self.plan)
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, config.warmup_ratio))

        output_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            shutil.rmtree(output_dir / CHECKPOINTS, ignore_errors=True)
        restored = load_latest_checkpoint(output_dir, self.fingerprint, model, optimizer, scheduler) if resume else None
        start_step = min(restored["step"], total_steps) if restored else 0
        loss_curve = [tuple(point) for point in restored["loss_curve"]][:start_step] if restored else []

        pad_id = self.tokenizer.pad_token_id
        run_tokens, loop_started = 0, time.perf_counter()
        for step in range(start_step, total_steps):
            step_started = time.perf_counter()
            micro_batches = self.plan[step]
            # Normalise by the step's total (weighted) assistant tokens, so grad accumulation equals
            # one big batch. The logged loss is the plain per-token mean, comparable across weightings.
            step_rows = [rows[i] for batch in micro_batches for i in batch]
            step_weight = step_weight_total(step_rows, config.decision_weight)
            step_targets = step_weight_total(step_rows, 1.0)
            step_loss, step_tokens = 0.0, 0
            for indices in micro_batches:
                batch = collate([rows[i] for i in indices], pad_id, config.decision_weight)
                input_ids, attention, labels, weights = (t.to(model.device) for t in batch)
                with mixed_precision(model.device):
                    weighted, plain, _ = loss_sum(model, input_ids, attention, labels, weights)
                (weighted / step_weight).backward()
                step_loss += float(plain.detach())
                step_tokens += int(attention.sum())
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if model.device.type == "cpu":
                _return_freed_memory_if_large()

            run_tokens += step_tokens
            loss_curve.append((step + 1, step_loss / step_targets))
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == total_steps:
                save_checkpoint(output_dir, model, optimizer, scheduler, step + 1,
                                {"fingerprint": self.fingerprint, "loss_curve": loss_curve}, config.keep_checkpoints)
            if on_step is not None:
                on_step(StepLog(step + 1, total_steps, step_loss / step_targets, learning_rate, step_tokens,
                                time.perf_counter() - step_started))
        loop_s = time.perf_counter() - loop_started

        model.save_pretrained(output_dir)
        self.tokenizer.save_pretrained(output_dir)
        steps_run = total_steps - start_step
        result = TrainResult(
            output_dir=output_dir,
            base_model=self.base_model,
            dataset_version=self.data.version,
            total_steps=total_steps,
            resumed_from_step=start_step,
            steps_run=steps_run,
            loss_curve=tuple(loss_curve),
            train_examples=len(rows),
            eval_examples=len(self.split.eval),
            skipped_examples=len(self.split.train) - len(rows),
            tokens_per_s=run_tokens / loop_s if loop_s > 0 and run_tokens else 0.0,
            seconds_per_step=loop_s / steps_run if steps_run else 0.0,
            peak_rss_mb=_peak_rss_mb(),
            wall_s=time.perf_counter() - self.started,
            config={**config.to_dict(), "base_model": self.base_model},
        )
        (output_dir / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
        return result


def train_adapter(
    config: TrainConfig,
    data_dir: Path,
    output_dir: Path,
    resume: bool = True,
    *,
    labels: LabelSpace | None = None,
    settings: Settings | None = None,
    on_step: Callable[[StepLog], None] | None = None,
    data: BehaviourDataset | None = None,
) -> TrainResult:
    """Train a LoRA adapter on the behaviour data in ``data_dir`` and save it to ``output_dir``.

    ``resume=True`` continues from the newest matching checkpoint in ``output_dir/checkpoints``;
    ``resume=False`` deletes existing checkpoints first. ``on_step`` is called after every optimizer
    step, after that step's checkpoint (progress logging; raising from it interrupts the run the
    way a crash would)."""
    return TrainingRun(config, data_dir, output_dir, labels=labels, settings=settings, data=data).train(resume, on_step)
