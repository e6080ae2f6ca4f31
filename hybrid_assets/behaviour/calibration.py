"""Choose the decision threshold (``models/decision.py``) of a trained adapter on the dev split.

The dev split is held out from training and is not the eval split the gate and the evaluation report
(``dataset.split_records``), so the reported figures are not tuned on themselves. Each dev record is
decoded exactly as served (same prompt, grammar, guard) only up to its decision, which the gate
records as a distribution; the threshold is then replayed offline over a grid (``decision.choose``
is pure), keeping the one with the best macro F1 over the decision classes the dev split has - so
abstaining on everything, or never, scores badly. The result goes into the adapter's lineage.

Given the train split too (``TrainConfig.decision_probes``, off by default: see RESULTS.md), a decision probe (``models/decision.DecisionProbe``) is fitted on the
hidden states where the train examples' decisions are taken - class-balanced, so the many answerable
examples do not drown the rest - with its regularisation and threshold chosen on the same dev split.
The probe is kept (``method: probe``) only when its dev macro F1 beats the tokens' own (greedy or
thresholded); otherwise nothing changes. Choosing among three readings and a small grid on ~50 dev
records fits the dev split a little: the eval split, never seen here, is what the figures report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hybrid_assets.behaviour.dataset import BehaviourRecord
from hybrid_assets.behaviour.evaluate import generate_answers
from hybrid_assets.behaviour.evidence import context_similarities, fit_evidence
from hybrid_assets.models.decision import (DECISION, LEVEL, LEVEL_PROBE_FILE, PROBE_FILE, DecisionProbe,
                                          DecisionRule, RetrievalEvidence, choose)
from hybrid_assets.schema import DECISIONS, LabelSpace

log = logging.getLogger(__name__)

GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
# sentiment, category, decision and the escalation key are ~30-36 tokens (SmolLM2's tokenizer): the
# budget stops just past the escalation level.
DECISION_PREFIX_TOKENS = 48
MIN_DEV_RECORDS = 8
PROBE_C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)  # inverse L2 strength: ~500 examples, 576 features
MIN_PROBE_EXAMPLES = 40


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    scores = []
    for value in sorted(set(gold)):
        tp = sum(1 for g, p in zip(gold, predicted) if g == value == p)
        fp = sum(1 for g, p in zip(gold, predicted) if p == value != g)
        fn = sum(1 for g, p in zip(gold, predicted) if g == value != p)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


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


def decision_points(model, tokenizer, records: Sequence[BehaviourRecord], labels: LabelSpace,
                    no_repeat_ngram: int, batch_size: int = 8) -> tuple[list, list[dict]]:
    """Per record: the prediction up to just past its escalation level (the tokens' distributions, what
    it decided) and the hidden states where the decision and the level were taken (``{}`` where
    generation never got there)."""
    features: list = []
    predictions, _ = generate_answers(model, tokenizer, records, labels, DECISION_PREFIX_TOKENS, batch_size,
                                      no_repeat_ngram=no_repeat_ngram, features=features)
    return predictions, [f or {} for f in features]


def _probe_from(fitted, mean, scale) -> DecisionProbe:
    import numpy as np

    if len(fitted.classes_) > 2:
        return DecisionProbe(fitted.classes_.tolist(), mean, scale, fitted.coef_, fitted.intercept_)
    # binary: scikit-learn keeps one row (the second class); softmax over [-z/2, z/2] = sigmoid(z)
    z, b = fitted.coef_[0], fitted.intercept_[0]
    return DecisionProbe(fitted.classes_.tolist(), mean, scale, np.vstack([-z / 2, z / 2]), np.array([-b / 2, b / 2]))


def fit_probe(train_features: Sequence, train_gold: Sequence[str], dev_features: Sequence,
              dev_gold: Sequence[str], score=None) -> tuple[DecisionProbe, dict]:
    """The probe with the best dev score over ``PROBE_C_GRID`` x (argmax, ``GRID`` thresholds on
    P(answer)), and its figures. ``score(gold, predicted)``: macro F1 by default (the decision); the
    thresholds are tried only for the decision's values. Standardisation is fitted on train only."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    score = score or macro_f1
    x = np.stack(train_features).astype(np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = (x - mean) / scale
    thresholds = (None, *GRID) if set(train_gold) <= set(DECISIONS) else (None,)
    best = None
    for c in PROBE_C_GRID:
        fitted = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(x, list(train_gold))
        probe = _probe_from(fitted, mean, scale)
        dists = [probe.probabilities(f) for f in dev_features]
        for threshold in thresholds:
            predicted = [choose(d, threshold) if threshold is not None else max(d, key=d.get) for d in dists]
            value = score(dev_gold, predicted)
            key = (value, threshold is None, -abs((threshold or 0.5) - 0.5), -c)  # ties: argmax, mid, stronger L2
            if best is None or key > best[0]:
                best = (key, probe, c, threshold, value)
    _, probe, c, threshold, value = best
    return probe, {"C": c, "answer_threshold": threshold, "dev_score": round(value, 4),
                   "train_examples": len(train_gold),
                   "train_values": {v: list(train_gold).count(v) for v in sorted(set(train_gold))}}


def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> float:
    return sum(g == p for g, p in zip(gold, predicted)) / len(gold) if gold else 0.0


@dataclass(frozen=True)
class Calibrated:
    """What calibration hands the pipeline: the lineage entry, and the probes to save beside the
    adapter (``save``); a probe is None unless the entry says it is used."""

    entry: dict | None
    rule: DecisionRule = DecisionRule()

    def save(self, adapter_dir: Path) -> None:
        """Write the used probes into the adapter folder, removing any earlier ones (a resumed run's)."""
        for name, probe in ((PROBE_FILE, self.rule.probe), (LEVEL_PROBE_FILE, self.rule.level_probe)):
            (Path(adapter_dir) / name).unlink(missing_ok=True)
            if probe is not None:
                probe.save(Path(adapter_dir) / name)


def _pairs(features: Sequence[dict], gold: Sequence[str], field: str) -> tuple[list, list]:
    kept = [(f[field], g) for f, g in zip(features, gold) if f.get(field) is not None]
    return [f for f, _ in kept], [g for _, g in kept]


def _level_probe(train_records, train_features, dev_records, dev_features, dev_predictions) -> tuple:
    """The escalation-level probe and its figures, used only when its dev accuracy beats the level
    the tokens chose on the same dev records."""
    x, y = _pairs(train_features, [r.answer["escalation"]["level"] for r in train_records], LEVEL)
    dev_x, dev_y = _pairs(dev_features, [r.answer["escalation"]["level"] for r in dev_records], LEVEL)
    if len(set(y)) < 2 or len(y) < MIN_PROBE_EXAMPLES or not dev_y:
        return None, None
    tokens_levels = [p.decided.get(LEVEL) for p, f in zip(dev_predictions, dev_features) if f.get(LEVEL) is not None]
    probe, figures = fit_probe(x, y, dev_x, dev_y, score=accuracy)
    figures["dev_accuracy_tokens"] = round(accuracy(dev_y, tokens_levels), 4)
    figures["dev_records"] = len(dev_y)
    figures["used"] = figures["dev_score"] > figures["dev_accuracy_tokens"]
    return (probe if figures["used"] else None), figures


def calibrate(model, tokenizer, records: Sequence[BehaviourRecord], labels: LabelSpace,
              no_repeat_ngram: int = 0, train_records: Sequence[BehaviourRecord] = (),
              embedding_model: str | None = None) -> Calibrated:
    """The lineage's ``decision_calibration`` entry (None when the dev split is too small or has a
    single decision class: a threshold would be chosen on nothing, and serving decodes greedily).
    With ``train_records``, probes for the decision and the escalation level are fitted too, each
    kept when it beats the tokens on dev. With ``embedding_model``, the retrieval evidence
    (``behaviour/evidence.py``) is fitted too, and used when its cross-validated dev macro F1 beats
    the tokens' (a decision probe, when used, takes precedence: the evidence reads the tokens')."""
    # A record without context has nothing to cite, so the grammar already rules "answer" out
    # (``models/constrained.py``): it says nothing about where the threshold should be.
    records = [r for r in records if r.context]
    gold = [r.answer["decision"] for r in records]
    if len(records) < MIN_DEV_RECORDS or len(set(gold)) < 2:
        log.warning("decision calibration skipped: %d dev records with decisions %s (need %d and two kinds)",
                    len(records), sorted(set(gold)), MIN_DEV_RECORDS)
        return Calibrated(None)
    dev_predictions, dev_features = decision_points(model, tokenizer, records, labels, no_repeat_ngram)
    entry = {"method": "tokens", **choose_threshold(gold, [p.decision_probabilities for p in dev_predictions])}
    evidence = _evidence(entry, records, gold, dev_predictions, embedding_model) if embedding_model else None
    train_records = [r for r in train_records if r.context]
    if len({r.answer["decision"] for r in train_records}) < 2 or len(train_records) < MIN_PROBE_EXAMPLES:
        return Calibrated(entry, DecisionRule(entry["answer_threshold"], evidence=evidence))
    _, train_features = decision_points(model, tokenizer, train_records, labels, no_repeat_ngram)
    x, y = _pairs(train_features, [r.answer["decision"] for r in train_records], DECISION)
    dev_x, dev_y = _pairs(dev_features, gold, DECISION)
    probe, figures = fit_probe(x, y, dev_x, dev_y)
    figures["dev_macro_f1"] = figures.pop("dev_score")
    entry["probe"] = figures
    level_probe, entry["level_probe"] = _level_probe(train_records, train_features, records, dev_features,
                                                     dev_predictions)
    tokens_best = _tokens_best(entry)
    if figures["dev_macro_f1"] <= tokens_best:
        log.info("decision probe not used: dev macro F1 %.3f <= the tokens' %.3f", figures["dev_macro_f1"], tokens_best)
        return Calibrated(entry, DecisionRule(entry["answer_threshold"], None, level_probe, evidence))
    entry.update(method="probe", answer_threshold=figures["answer_threshold"])
    if entry.get("evidence"):
        entry["evidence"]["used"] = False  # it was fitted on the tokens' P(answer), not the probe's
    return Calibrated(entry, DecisionRule(figures["answer_threshold"], probe, level_probe))


def _tokens_best(entry: dict) -> float:
    """The tokens' best dev macro F1 (greedy or thresholded): what a probe or the evidence must beat."""
    return max(entry["dev_macro_f1"], entry["dev_macro_f1_greedy"])


def _evidence(entry: dict, records, gold, dev_predictions, embedding_model: str) -> RetrievalEvidence | None:
    """Fit the retrieval evidence on the dev records that reached their decision; record it in
    ``entry["evidence"]`` and return it when its cross-validated dev macro F1 beats the tokens' best."""
    kept = [(r, g, p.decision_probabilities) for r, g, p in zip(records, gold, dev_predictions)
            if p.decision_probabilities is not None]
    similarities = context_similarities([r for r, _, _ in kept], embedding_model)
    fitted = fit_evidence([g for _, g, _ in kept], [d for _, _, d in kept], similarities, macro_f1)
    if fitted is None:
        return None
    evidence, figures = fitted
    figures["used"] = figures["dev_macro_f1_cv"] > _tokens_best(entry)
    figures["embedding_model"] = embedding_model
    entry["evidence"] = figures
    return evidence if figures["used"] else None


def _load_probe(path: Path, version_id: str | None) -> DecisionProbe | None:
    try:
        return DecisionProbe.load(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file means the same: no probe
        log.warning("adapter %s was calibrated with a probe, but %s cannot be read (%s); that decision "
                    "falls back to greedy decoding", version_id or "?", path, exc)
        return None


def decision_rule_of(adapter_dir: Path | None, lineage: dict | None, version_id: str | None = None) -> DecisionRule:
    """The served decisions of an adapter folder. An adapter calibrated with a probe whose file is
    missing or unreadable falls back to greedy decoding for that field, with a warning (a threshold
    chosen for the probe's probabilities is not applied to the tokens')."""
    calibration = ((lineage or {}).get("metrics") or {}).get("decision_calibration") or {}
    folder = Path(adapter_dir or ".")
    level_probe = _load_probe(folder / LEVEL_PROBE_FILE, version_id) \
        if (calibration.get("level_probe") or {}).get("used") else None
    if calibration.get("method") != "probe":
        return DecisionRule(threshold_of(lineage, version_id), None, level_probe,
                            _evidence_of(calibration, version_id))
    probe = _load_probe(folder / PROBE_FILE, version_id)
    if probe is None:
        return DecisionRule(None, None, level_probe)
    threshold = calibration.get("answer_threshold")
    return DecisionRule(float(threshold) if isinstance(threshold, (int, float)) else None, probe, level_probe)


def _evidence_of(calibration: dict, version_id: str | None) -> RetrievalEvidence | None:
    raw = calibration.get("evidence") or {}
    if not raw.get("used"):
        return None
    try:
        return RetrievalEvidence.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("adapter %s: its retrieval evidence in the lineage cannot be read (%s); the decision "
                    "uses the tokens' threshold alone", version_id or "?", exc)
        return None


def threshold_of(lineage: dict | None, version_id: str | None = None) -> float | None:
    """The adapter's calibrated threshold, or None (with a warning naming the adapter) when its lineage
    has none: an adapter trained before calibration existed, or on a dev split too small for one."""
    calibration = ((lineage or {}).get("metrics") or {}).get("decision_calibration") or {}
    if calibration.get("method") == "probe":
        return None  # a threshold on the probe's probabilities, not the tokens' (see decision_rule_of)
    threshold = calibration.get("answer_threshold")
    if isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0:
        return float(threshold)
    if "best_grid_threshold" in calibration:
        return None  # calibrated, and no threshold beat greedy decoding on the dev split
    if version_id is not None or lineage is not None:
        log.warning("adapter %s has no decision threshold in its lineage (metrics.decision_calibration); "
                    "decisions fall back to greedy decoding", version_id or "?")
    return None


def describe(calibration: dict | None) -> str:
    """One line for the CLI, the demo and the Dagster metadata: how the adapter decides, and why."""
    if not calibration:
        return "decision: greedy (the dev split was too small to calibrate on)"
    threshold = calibration.get("answer_threshold")
    rule = f"answer when P(answer) >= {threshold}" if threshold is not None else "the likeliest value"
    dev = f"{calibration['dev_records']} dev records"
    tokens = f"tokens: greedy {calibration['dev_macro_f1_greedy']:.3f}, best threshold {calibration['dev_macro_f1']:.3f}"
    probe = calibration.get("probe")
    if calibration.get("method") == "probe":
        return (f"decision: probe on the hidden state, {rule} (dev macro F1 {probe['dev_macro_f1']:.3f} vs {tokens}; "
                f"{dev}, probe fitted on {probe['train_examples']} train examples)") + _describe_level(calibration)
    tail = f"; probe {probe['dev_macro_f1']:.3f}, not better" if probe else ""
    evidence = calibration.get("evidence")
    if evidence and evidence.get("used"):
        return (f"decision: the tokens' P(answer) with the best passage's similarity, answer when the evidence's "
                f"P(answer) >= 0.5 (cross-validated dev macro F1 {evidence['dev_macro_f1_cv']:.3f} vs {tokens}{tail}; "
                f"{dev})") + _describe_level(calibration)
    if evidence:
        tail += f"; retrieval evidence {evidence['dev_macro_f1_cv']:.3f} (cross-validated), not better"
    return f"decision: the tokens' own, {rule} (dev macro F1, {tokens}{tail}; {dev})" + _describe_level(calibration)


def _describe_level(calibration: dict) -> str:
    level = calibration.get("level_probe")
    if not level:
        return ""
    verdict = "probe used" if level["used"] else "the tokens' own kept"
    return (f"; escalation level: {verdict} (dev accuracy probe {level['dev_score']:.3f} vs tokens "
            f"{level['dev_accuracy_tokens']:.3f}, {level['dev_records']} dev records)")
