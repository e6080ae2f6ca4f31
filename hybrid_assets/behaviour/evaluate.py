"""Evaluate a base model with or without an adapter on held-out behaviour records, and gate promotion.

Generation decodes as serving does: greedy, the same prompt builder, and the answer schema's grammar
(xgrammar), because the gate should judge the model users will get. Unconstrained, neither the base
nor a CPU-budget adapter (38 steps) writes valid JSON for these prompts (measured: 0/32 both; the
adapter learns the shape but a 135M model still slips on the nested object), so an unconstrained gate
would never promote anything. Under the grammar, JSON validity = the answer finished within the
token budget; a model that rambles until the budget runs out gets no valid answer. An answer that does
not parse counts as wrong for every field metric, so no model scores by producing fewer, luckier answers.
``constrained=False`` measures the raw model (what the weights learned).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hybrid_assets.behaviour.dataset import BehaviourRecord
from hybrid_assets.behaviour.sft import prompt_messages
from hybrid_assets.schema import LabelSpace, parse_answer
from hybrid_assets.settings import Settings, apply_offline_env

# The adapter must beat the base on each of these (or tie at a perfect 1.0).
GATE_METRICS = ("json_validity", "category_accuracy", "sentiment_accuracy", "escalation_accuracy")


@dataclass(frozen=True)
class Prediction:
    record_id: str
    text: str
    answer: dict | None  # None when the text does not parse as a valid answer
    error: str | None
    generated_tokens: int


@dataclass(frozen=True)
class EvalMetrics:
    n: int
    json_validity: float
    sentiment_accuracy: float
    category_accuracy: float
    escalation_accuracy: float
    answerable_accuracy: float
    mean_latency_s: float  # per record, amortised over its generation batch
    tokens_per_s: float  # generated tokens per second of generation
    generated_tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EvalReport:
    metrics: EvalMetrics
    predictions: tuple[Prediction, ...]
    adapter_dir: str | None


def score(records: Sequence[BehaviourRecord], predictions: Sequence[Prediction], seconds: float) -> EvalMetrics:
    """Field accuracies over all records; a prediction without a parsed answer is wrong everywhere."""
    n = len(records)
    if n == 0:
        raise ValueError("no records to score")
    hits = {"valid": 0, "sentiment": 0, "category": 0, "escalation": 0, "answerable": 0}
    for record, prediction in zip(records, predictions, strict=True):
        got, want = prediction.answer, record.answer
        if got is None:
            continue
        hits["valid"] += 1
        hits["sentiment"] += got["sentiment"] == want["sentiment"]
        hits["category"] += got["category"] == want["category"]
        hits["escalation"] += got["escalation"]["level"] == want["escalation"]["level"]
        hits["answerable"] += got["answerable"] == want["answerable"]
    tokens = sum(p.generated_tokens for p in predictions)
    return EvalMetrics(
        n=n,
        json_validity=hits["valid"] / n,
        sentiment_accuracy=hits["sentiment"] / n,
        category_accuracy=hits["category"] / n,
        escalation_accuracy=hits["escalation"] / n,
        answerable_accuracy=hits["answerable"] / n,
        mean_latency_s=seconds / n,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        generated_tokens=tokens,
    )


def _parse(text: str, labels: LabelSpace) -> tuple[dict | None, str | None]:
    try:
        return parse_answer(text.strip(), labels).model_dump(), None
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        return None, str(exc).splitlines()[0][:200]


def load_model(base_model: str | None, adapter_dir: Path | str | None, settings: Settings | None = None):
    """(model, tokenizer) for evaluation; the adapter is merged into the float base for speed."""
    apply_offline_env()
    from hybrid_assets.models.base_model import load_for_inference

    model, tokenizer = load_for_inference(base_model, settings)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        model.eval()
    return model, tokenizer


def generate_answers(model, tokenizer, records: Sequence[BehaviourRecord], labels: LabelSpace,
                     max_new_tokens: int, batch_size: int, constrained: bool = True) -> tuple[list[Prediction], float]:
    """Greedy, batched (left-padded; similar prompt lengths batched together). Returns predictions in
    record order and the total generation seconds. ``constrained`` decodes as serving does (grammar of
    the answer schema, citations limited to the record's context ids)."""
    import torch

    grammars = None
    if constrained:
        from hybrid_assets.models.constrained import GrammarCache

        grammars = GrammarCache(tokenizer, model.config.vocab_size)

    tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
    prompts = [tokenizer.apply_chat_template(prompt_messages(r, labels), add_generation_prompt=True, tokenize=False)
               for r in records]
    order = sorted(range(len(records)), key=lambda i: len(prompts[i]))
    results: dict[int, Prediction] = {}
    seconds = 0.0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
        processors = [grammars.logits_processor(labels, [tuple(c.id for c in records[i].context) for i in batch])] \
            if grammars else []
        started = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                    logits_processor=processors,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        seconds += time.perf_counter() - started
        new_tokens = output[:, encoded["input_ids"].shape[1]:]
        for row, index in zip(new_tokens.tolist(), batch):
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id) + 1]
            text = tokenizer.decode(row, skip_special_tokens=True)
            answer, error = _parse(text, labels)
            results[index] = Prediction(records[index].id, text, answer, error, len(row))
    return [results[i] for i in range(len(records))], seconds


def evaluate_model(
    base_model: str | None,
    adapter_dir: Path | str | None,
    records: Sequence[BehaviourRecord],
    labels: LabelSpace,
    max_new_tokens: int = 384,
    *,
    batch_size: int = 8,
    constrained: bool = True,
    settings: Settings | None = None,
) -> EvalReport:
    """Generate an answer for every record and score it (``adapter_dir=None`` evaluates the base)."""
    if not records:
        raise ValueError("no records to evaluate")
    model, tokenizer = load_model(base_model, adapter_dir, settings)
    predictions, seconds = generate_answers(model, tokenizer, records, labels, max_new_tokens, batch_size,
                                            constrained)
    return EvalReport(score(records, predictions, seconds), tuple(predictions),
                      str(adapter_dir) if adapter_dir is not None else None)


def _metric(metrics: EvalMetrics | Mapping, name: str) -> float:
    return float(metrics[name] if isinstance(metrics, Mapping) else getattr(metrics, name))


def promotion_gate(base_metrics: EvalMetrics | Mapping, adapter_metrics: EvalMetrics | Mapping) -> tuple[bool, list[str]]:
    """Pass only when the adapter beats the base on every GATE_METRICS entry: strictly better, or
    equal at a perfect 1.0 (which cannot be beaten). Returns one reason line per metric."""
    passed, reasons = True, []
    for name in GATE_METRICS:
        base, adapter = _metric(base_metrics, name), _metric(adapter_metrics, name)
        if adapter > base:
            reasons.append(f"{name}: adapter {adapter:.3f} > base {base:.3f}")
        elif adapter == base == 1.0:
            reasons.append(f"{name}: adapter and base both perfect (1.000)")
        else:
            passed = False
            reasons.append(f"{name}: adapter {adapter:.3f} does not beat base {base:.3f}")
    return passed, reasons


def promote_if_passing(registry, version_id: str, base_metrics, adapter_metrics) -> tuple[bool, list[str]]:
    """Promote ``version_id`` only when the gate passes; otherwise the registry is left untouched."""
    passed, reasons = promotion_gate(base_metrics, adapter_metrics)
    if passed:
        registry.promote(version_id)
    return passed, reasons
