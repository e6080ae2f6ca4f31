"""Evaluate a base model with or without an adapter on held-out behaviour records, and gate promotion.

Generation is serving's own decoding path (``models/generation.py``: greedy, the schema grammar, the
n-gram guard when ``HYBRID_NO_REPEAT_NGRAM`` is set), because the gate should judge the model users
will get. Unconstrained, neither the base nor a CPU-budget adapter (38 steps) writes valid JSON for
these prompts (measured: 0/32 both), so an unconstrained gate would never promote anything.

Scoring is the shared decision scorer (``hybrid_assets/scoring.py``): JSON validity = the answer
finished within the token budget, reported on its own; each label accuracy counts what the model
decided, also in the prefix of an answer the budget cut. ``constrained=False`` measures the raw model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hybrid_assets.behaviour.dataset import BehaviourRecord
from hybrid_assets.behaviour.evidence import context_similarities
from hybrid_assets.behaviour.sft import prompt_messages
from hybrid_assets.models.base_model import load_for_inference
from hybrid_assets.models.decision import DecisionRule
from hybrid_assets.models.generation import Decoder, parse_generation
from hybrid_assets.schema import LabelSpace
from hybrid_assets.scoring import Scored, decision_scores, decisions_of
from hybrid_assets.settings import Settings, apply_offline_env, load_settings

# The adapter must beat the base on each of these (or tie at a perfect 1.0).
GATE_METRICS = ("json_validity", "category_accuracy", "sentiment_accuracy", "escalation_accuracy")
# Champion / challenger: a candidate replaces the adapter in service only if its mean over these, on
# the same eval records, is at least the champion's - so a quick adapter never replaces a better one.
CHAMPION_METRICS = GATE_METRICS + ("decision_accuracy",)


@dataclass(frozen=True)
class Prediction:
    record_id: str
    text: str
    answer: dict | None  # None when the text does not parse as a valid answer
    error: str | None
    generated_tokens: int
    decided: dict | None = None  # the decision fields, also from a cut answer's prefix (None: read from text)
    decision_probabilities: dict | None = None  # the model's distribution where it decided (models/decision.py)


@dataclass(frozen=True)
class EvalMetrics:
    n: int
    json_validity: float
    sentiment_accuracy: float
    category_accuracy: float
    escalation_accuracy: float
    decision_accuracy: float
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


def score(records: Sequence[BehaviourRecord], predictions: Sequence[Prediction], seconds: float,
          labels: LabelSpace | None = None) -> EvalMetrics:
    """JSON validity and the decision accuracies over all records (``hybrid_assets/scoring.py``)."""
    n = len(records)
    if n == 0:
        raise ValueError("no records to score")
    rows = []
    for record, prediction in zip(records, predictions, strict=True):
        decided = prediction.decided
        if decided is None:  # a prediction made elsewhere: read its text as generation would
            decided = parse_generation(prediction.text, prediction.generated_tokens, labels).decided if labels \
                else (decisions_of(prediction.answer) if prediction.answer else {})
        rows.append(Scored(decisions_of(record.answer), decided, prediction.answer is not None))
    scores = decision_scores(rows)
    tokens = sum(p.generated_tokens for p in predictions)
    return EvalMetrics(
        n=n,
        json_validity=scores["json_validity"],
        sentiment_accuracy=scores["sentiment_accuracy"],
        category_accuracy=scores["category_accuracy"],
        escalation_accuracy=scores["escalation_accuracy"],
        decision_accuracy=scores["decision_accuracy"],
        mean_latency_s=seconds / n,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        generated_tokens=tokens,
    )


def load_model(base_model: str | None, adapter_dir: Path | str | None, settings: Settings | None = None):
    """(model, tokenizer) for evaluation; the adapter is merged into the float base for speed."""
    apply_offline_env()

    model, tokenizer = load_for_inference(base_model, settings)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        model.eval()
    return model, tokenizer


def generate_answers(model, tokenizer, records: Sequence[BehaviourRecord], labels: LabelSpace,
                     max_new_tokens: int, batch_size: int, constrained: bool = True,
                     no_repeat_ngram: int | None = None,
                     rule: DecisionRule | None = None,
                     features: list | None = None,
                     similarities: Sequence[float | None] | None = None) -> tuple[list[Prediction], float]:
    """Every record through the shared decoder, in batches of similar prompt length (less padding).
    Returns predictions in record order and the total generation seconds. ``no_repeat_ngram``
    defaults to the served setting (``HYBRID_NO_REPEAT_NGRAM``); ``rule`` is the adapter's calibrated
    decisions (``models/decision.DecisionRule``), as serving applies it. ``features``: when a list is
    given, it receives each record's hidden states at its decision and level (``Generation.features``),
    in record order. ``similarities``: each record's best passage's similarity to its ticket, which a
    rule's retrieval evidence reads; measured here (``behaviour/evidence.py``) when the rule has
    evidence and none are given."""
    if no_repeat_ngram is None:
        no_repeat_ngram = load_settings().answer_no_repeat_ngram
    if similarities is None and rule is not None and rule.evidence is not None:
        similarities = context_similarities(records, load_settings().embedding_model)
    decoder = Decoder(tokenizer, model.config.vocab_size, labels, max_new_tokens, no_repeat_ngram, constrained)
    conversations = [prompt_messages(r, labels) for r in records]
    order = sorted(range(len(records)), key=lambda i: sum(len(m["content"]) for m in conversations[i]))
    results: dict[int, Prediction] = {}
    kept: dict[int, object] = {}
    seconds = 0.0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        citable = [tuple(c.id for c in records[i].context) for i in batch]
        decoder.prepare(citable)  # compile grammars outside the timed part (cached per id set)
        started = time.perf_counter()
        generated = decoder.generate(model, [conversations[i] for i in batch], citable,
                                     rule=rule, keep_features=features is not None,
                                     similarities=[similarities[i] for i in batch] if similarities is not None else None)
        seconds += time.perf_counter() - started
        for index, generation in zip(batch, generated):
            kept[index] = generation.features
            results[index] = Prediction(records[index].id, generation.text, generation.answer, generation.error,
                                        generation.tokens, generation.decided, generation.decision_probabilities)
    if features is not None:
        features.extend(kept[i] for i in range(len(records)))
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
    rule: DecisionRule | None = None,
    loaded: tuple | None = None,
) -> EvalReport:
    """Generate an answer for every record and score it (``adapter_dir=None`` evaluates the base).
    ``loaded``: the (model, tokenizer) of ``load_model`` when the caller already holds them."""
    if not records:
        raise ValueError("no records to evaluate")
    model, tokenizer = loaded or load_model(base_model, adapter_dir, settings)
    predictions, seconds = generate_answers(model, tokenizer, records, labels, max_new_tokens, batch_size,
                                            constrained, rule=rule)
    return EvalReport(score(records, predictions, seconds, labels), tuple(predictions),
                      str(adapter_dir) if adapter_dir is not None else None)


def _metric(metrics: EvalMetrics | Mapping, name: str) -> float:
    return float(metrics[name] if isinstance(metrics, Mapping) else getattr(metrics, name))


def promotion_gate(base_metrics: EvalMetrics | Mapping, adapter_metrics: EvalMetrics | Mapping,
                   champion_metrics: EvalMetrics | Mapping | None = None) -> tuple[bool, list[str]]:
    """Pass only when the adapter beats the base on every GATE_METRICS entry (strictly better, or
    equal at a perfect 1.0, which cannot be beaten) and, when an adapter is in service, scores at least
    the champion's mean over CHAMPION_METRICS on the same records. One reason line per check."""
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
    if champion_metrics is not None:
        challenger, champion = (sum(_metric(m, n) for n in CHAMPION_METRICS) / len(CHAMPION_METRICS)
                                for m in (adapter_metrics, champion_metrics))
        if challenger >= champion:
            reasons.append(f"champion: candidate mean {challenger:.3f} >= adapter in service {champion:.3f}")
        else:
            passed = False
            reasons.append(f"champion: candidate mean {challenger:.3f} < adapter in service {champion:.3f} "
                           f"(mean of {', '.join(CHAMPION_METRICS)})")
    return passed, reasons


def promote_if_passing(registry, version_id: str, base_metrics, adapter_metrics,
                       champion_metrics=None) -> tuple[bool, list[str]]:
    """Promote ``version_id`` only when the gate passes; otherwise the registry is left untouched."""
    passed, reasons = promotion_gate(base_metrics, adapter_metrics, champion_metrics)
    if passed:
        registry.promote(version_id)
    return passed, reasons
