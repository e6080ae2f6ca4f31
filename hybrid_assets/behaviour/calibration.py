"""Choose the decision threshold (``models/decision.py``) of a trained adapter on the dev split.

The dev split is held out from training and is not the eval split the gate and the evaluation report
(``dataset.split_records``), so the reported figures are not tuned on themselves. Each dev record is
decoded exactly as served (same prompt, grammar, guard) only up to its decision, which the gate
records as a distribution; the threshold is then replayed offline over a grid (``decision.choose``
is pure), keeping the one with the best macro F1 over the decision classes the dev split has - so
abstaining on everything, or never, scores badly. The result goes into the adapter's lineage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hybrid_assets.behaviour.dataset import BehaviourRecord
from hybrid_assets.behaviour.evaluate import generate_answers
from hybrid_assets.models.decision import choose
from hybrid_assets.schema import DECISIONS, LabelSpace

log = logging.getLogger(__name__)

GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
# sentiment + category + the decision key are ~25 tokens; the budget stops right after the decision.
DECISION_PREFIX_TOKENS = 40
MIN_DEV_RECORDS = 8


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    scores = []
    for value in sorted(set(gold)):
        tp = sum(1 for g, p in zip(gold, predicted) if g == value == p)
        fp = sum(1 for g, p in zip(gold, predicted) if p == value != g)
        fn = sum(1 for g, p in zip(gold, predicted) if g == value != p)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def decision_distributions(model, tokenizer, records: Sequence[BehaviourRecord], labels: LabelSpace,
                           no_repeat_ngram: int, batch_size: int = 8) -> list[dict | None]:
    """The model's distribution over the decision for each record (None where it never got there),
    through the gate's own decoding loop with a budget that stops just after the decision."""
    predictions, _ = generate_answers(model, tokenizer, records, labels, DECISION_PREFIX_TOKENS, batch_size,
                                      no_repeat_ngram=no_repeat_ngram)
    return [p.decision_probabilities for p in predictions]


def choose_threshold(gold: Sequence[str], distributions: Sequence[dict | None]) -> dict:
    """The grid threshold with the best dev macro F1 (ties: the one nearest 0.5), with the figures."""
    pairs = [(g, d) for g, d in zip(gold, distributions, strict=True) if d is not None]
    if not pairs:
        raise ValueError("no dev record reached its decision")
    gold_kept = [g for g, _ in pairs]
    greedy = macro_f1(gold_kept, [choose(d, None) for _, d in pairs])
    scored = [(macro_f1(gold_kept, [choose(d, t) for _, d in pairs]), -abs(t - 0.5), t) for t in GRID]
    best_f1, _, threshold = max(scored)
    # A threshold that does not beat the model's own argmax on dev is not used: decoding stays greedy
    # (measured 2026-12-02: the release candidate's best, 0.45, scored 0.566 against greedy's 0.570).
    return {
        "answer_threshold": threshold if best_f1 > greedy else None,
        "best_grid_threshold": threshold,
        "dev_records": len(pairs),
        "dev_decisions": {value: gold_kept.count(value) for value in DECISIONS if value in gold_kept},
        "dev_macro_f1": round(best_f1, 4),
        "dev_macro_f1_greedy": round(greedy, 4),
        "grid": {str(t): round(f1, 4) for f1, _, t in sorted(scored, key=lambda x: x[2])},
    }


def calibrate(model, tokenizer, records: Sequence[BehaviourRecord], labels: LabelSpace,
              no_repeat_ngram: int = 0) -> dict | None:
    """The lineage's ``decision_calibration`` entry, or None when the dev split is too small or has a
    single decision class (a threshold would be chosen on nothing): serving then decodes greedily."""
    # A record without context has nothing to cite, so the grammar already rules "answer" out
    # (``models/constrained.py``): it says nothing about where the threshold should be.
    records = [r for r in records if r.context]
    gold = [r.answer["decision"] for r in records]
    if len(records) < MIN_DEV_RECORDS or len(set(gold)) < 2:
        log.warning("decision calibration skipped: %d dev records with decisions %s (need %d and two kinds)",
                    len(records), sorted(set(gold)), MIN_DEV_RECORDS)
        return None
    return choose_threshold(gold, decision_distributions(model, tokenizer, records, labels, no_repeat_ngram))


def threshold_of(lineage: dict | None, version_id: str | None = None) -> float | None:
    """The adapter's calibrated threshold, or None (with a warning naming the adapter) when its lineage
    has none: an adapter trained before calibration existed, or on a dev split too small for one."""
    calibration = ((lineage or {}).get("metrics") or {}).get("decision_calibration") or {}
    threshold = calibration.get("answer_threshold")
    if isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0:
        return float(threshold)
    if "best_grid_threshold" in calibration:
        return None  # calibrated, and no threshold beat greedy decoding on the dev split
    if version_id is not None or lineage is not None:
        log.warning("adapter %s has no decision threshold in its lineage (metrics.decision_calibration); "
                    "decisions fall back to greedy decoding", version_id or "?")
    return None
