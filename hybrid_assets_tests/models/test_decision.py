"""The calibrated decision (models/decision.py) and its calibration (behaviour/calibration.py): pure
parts here; the gate runs inside real generation in test_decision_generation below."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from hybrid_assets.behaviour.calibration import (accuracy, choose_threshold, decision_rule_of, describe, fit_probe,
                                                 macro_f1, threshold_of)
from hybrid_assets.models.constrained import schema_for_request
from hybrid_assets.models.decision import (LEVEL_PROBE_FILE, PROBE_FILE, DecisionGate, DecisionProbe, DecisionRule,
                                           LastHiddenState, choose, consistent, continues, restrict)
from hybrid_assets.schema import LabelSpace

LABELS = LabelSpace(("neutral",), ("billing", "other"), ("none", "tier_2"))


def test_choose_answers_only_above_the_threshold_else_the_likelier_of_the_other_two():
    confident = {"answer": 0.7, "clarify": 0.1, "not_answerable": 0.2}
    assert choose(confident, None) == "answer"  # no threshold: the model's own argmax
    assert choose(confident, 0.6) == "answer"
    assert choose(confident, 0.8) == "not_answerable"
    assert choose({"answer": 0.5, "clarify": 0.3, "not_answerable": 0.2}, 0.6) == "clarify"
    # nothing to cite: the grammar allowed no "answer" token, so its probability is 0
    assert choose({"answer": 0.0, "clarify": 0.4, "not_answerable": 0.6}, 0.1) == "not_answerable"


def test_the_threshold_is_the_one_with_the_best_dev_macro_f1_not_always_or_never_abstaining():
    gold = ["answer"] * 6 + ["not_answerable"] * 4
    # the model ranks well but is over-confident: every unanswerable item still has P(answer) 0.55-0.7
    dists = [{"answer": p, "clarify": 0.0, "not_answerable": 1 - p} for p in (0.95, 0.9, 0.9, 0.85, 0.8, 0.75)]
    dists += [{"answer": p, "clarify": 0.0, "not_answerable": 1 - p} for p in (0.7, 0.65, 0.6, 0.55)]
    result = choose_threshold(gold, dists)
    assert 0.7 < result["answer_threshold"] <= 0.75
    assert result["dev_macro_f1"] == 1.0 and result["dev_macro_f1_greedy"] < 0.5  # greedy never abstains
    assert result["dev_decisions"] == {"answer": 6, "not_answerable": 4} and result["dev_records"] == 10
    assert macro_f1(gold, ["answer"] * 10) < 0.5 and macro_f1(gold, ["not_answerable"] * 10) < 0.5


def test_a_threshold_that_does_not_beat_greedy_on_dev_is_not_used(caplog):
    gold = ["answer", "not_answerable", "answer", "not_answerable"]
    dists = [{"answer": 0.9, "clarify": 0.0, "not_answerable": 0.1}, {"answer": 0.2, "clarify": 0.0, "not_answerable": 0.8},
             {"answer": 0.6, "clarify": 0.0, "not_answerable": 0.4}, {"answer": 0.45, "clarify": 0.0, "not_answerable": 0.55}]
    result = choose_threshold(gold, dists)  # greedy is already perfect: no threshold can beat it
    assert result["answer_threshold"] is None and result["dev_macro_f1_greedy"] == 1.0
    with caplog.at_level(logging.WARNING):
        assert threshold_of({"metrics": {"decision_calibration": result}}, "v3") is None
    assert "v3" not in caplog.text  # calibrated on purpose: no warning


def test_an_adapter_without_a_threshold_falls_back_to_greedy_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert threshold_of({"metrics": {"decision_calibration": None}}, "v1") is None
        assert threshold_of(None, "trained-elsewhere") is None
    assert "v1" in caplog.text and "trained-elsewhere" in caplog.text and "greedy" in caplog.text
    assert threshold_of({"metrics": {"decision_calibration": {"answer_threshold": 0.65}}}, "v2") == 0.65


def test_with_nothing_retrieved_the_grammar_rules_out_answering():
    assert "answer" not in schema_for_request(LABELS, ())["properties"]["decision"]["enum"]
    assert schema_for_request(LABELS, ("S1",))["properties"]["decision"]["enum"] == [
        "answer", "clarify", "not_answerable"]


@pytest.mark.integration
def test_the_gate_reads_the_models_distribution_and_enforces_the_threshold():
    """Real model, real grammar: the distribution is recorded where the decision is written, and a
    threshold above P(answer) turns an answer into one of the other two decisions."""
    from hybrid_assets.behaviour.evaluate import load_model
    from hybrid_assets.models.generation import Decoder
    from hybrid_assets.prompting import ContextPassage, build_messages

    model, tokenizer = load_model(None, None)
    decoder = Decoder(tokenizer, model.config.vocab_size, LABELS, 40)  # up to just past the decision
    passages = [ContextPassage("S1", "guides/billing.md", "Invoices are emailed on the renewal date.")]
    conversation = build_messages("When is my invoice sent?", passages, LABELS)
    free = decoder.generate(model, [conversation], [("S1",)])[0]
    dist = free.decision_probabilities
    assert dist is not None and set(dist) == {"answer", "clarify", "not_answerable"}
    assert sum(dist.values()) == pytest.approx(1.0) and dist["answer"] > 0
    forced = decoder.generate(model, [conversation], [("S1",)], rule=DecisionRule(1.0))[0]
    assert forced.decided["decision"] in ("clarify", "not_answerable")
    assert forced.decided["decision"] == max(("clarify", "not_answerable"), key=dist.get)
    allowed = decoder.generate(model, [conversation], [("S1",)], rule=DecisionRule(0.0))[0]
    assert allowed.decided["decision"] == "answer"
    # A decision taken before generation (serving/clarity.py) is written for its row only, whatever the
    # rule would choose; the other row of the batch keeps the rule's.
    rows = decoder.generate(model, [conversation, conversation], [("S1",), ("S1",)], rule=DecisionRule(0.0),
                            decisions=["clarify", None])
    assert [row.decided["decision"] for row in rows] == ["clarify", "answer"]
    assert rows[0].decision_probabilities["answer"] > 0  # the model's own distribution is still recorded

    # A probe that puts (almost) everything on "not_answerable" overrides the tokens, whatever they
    # prefer; the features kept are the model's hidden state (its width), where the decision was taken.
    hidden = model.config.hidden_size
    refusing = DecisionProbe(("answer", "not_answerable"), np.zeros(hidden), np.ones(hidden),
                             np.zeros((2, hidden)), np.array([-5.0, 5.0]))
    probed = decoder.generate(model, [conversation], [("S1",)], rule=DecisionRule(probe=refusing), keep_features=True)[0]
    assert probed.decided["decision"] == "not_answerable"
    assert probed.decision_probabilities["not_answerable"] > 0.99
    features = probed.features["decision"]
    assert features.shape == (hidden,) and np.isfinite(features).all()
    assert free.features is None  # not kept unless asked
    # The level probe takes the escalation level the same way, after the decision (budget: past the level).
    decoder = Decoder(tokenizer, model.config.vocab_size, LABELS, 48)
    to_tier_2 = DecisionProbe(("none", "tier_2"), np.zeros(hidden), np.ones(hidden), np.zeros((2, hidden)),
                              np.array([-5.0, 5.0]))
    levelled = decoder.generate(model, [conversation], [("S1",)], rule=DecisionRule(0.0, level_probe=to_tier_2),
                                keep_features=True)[0]
    assert levelled.decided["decision"] == "answer" and levelled.decided["escalation_level"] == "tier_2"
    assert levelled.level_probabilities["tier_2"] > 0.99 and levelled.features["escalation_level"].shape == (hidden,)


def _clusters(rng, n, centre):
    return [rng.normal(centre, 0.5) for _ in range(n)]


def test_the_probe_learns_a_separable_decision_and_chooses_on_dev():
    rng = np.random.default_rng(0)
    a, na = np.zeros(16), np.zeros(16)
    a[0], na[0] = 3.0, -3.0
    train = _clusters(rng, 60, a) + _clusters(rng, 20, na)  # imbalanced, as the behaviour data is
    gold = ["answer"] * 60 + ["not_answerable"] * 20
    dev = _clusters(rng, 10, a) + _clusters(rng, 10, na)
    probe, figures = fit_probe(train, gold, dev, ["answer"] * 10 + ["not_answerable"] * 10)
    assert figures["dev_score"] == 1.0 and figures["train_values"] == {"answer": 60, "not_answerable": 20}
    dist = probe.probabilities(na)
    assert dist["not_answerable"] > 0.5 and set(dist) == {"answer", "not_answerable"}
    assert sum(dist.values()) == pytest.approx(1.0)
    # three escalation levels, chosen by dev accuracy (no answer threshold for a level)
    centres = [np.eye(16)[i] * 4 for i in range(3)]
    levels = ("none", "tier_2", "security")
    train = [x for c in centres for x in _clusters(rng, 20, c)]
    dev = [x for c in centres for x in _clusters(rng, 5, c)]
    probe, figures = fit_probe(train, [v for v in levels for _ in range(20)], dev, [v for v in levels for _ in range(5)],
                               score=accuracy)
    assert figures["dev_score"] == 1.0 and figures["answer_threshold"] is None and set(probe.values) == set(levels)


def test_a_probe_survives_its_file_and_rejects_shapes_that_do_not_fit(tmp_path):
    probe = DecisionProbe(("answer", "clarify", "not_answerable"), np.ones(4), np.full(4, 2.0),
                          np.arange(12.0).reshape(3, 4), np.array([0.1, 0.2, 0.3]))
    probe.save(tmp_path / PROBE_FILE)
    loaded = DecisionProbe.load(tmp_path / PROBE_FILE)
    x = np.array([1.0, -1.0, 0.5, 2.0])
    assert loaded.values == probe.values and loaded.probabilities(x) == pytest.approx(probe.probabilities(x))
    with pytest.raises(ValueError, match="do not fit"):
        DecisionProbe(("answer", "not_answerable"), np.ones(4), np.ones(4), np.ones((3, 4)), np.ones(2))
    maybe = DecisionProbe(("answer", "maybe"), np.ones(4), np.ones(4), np.ones((2, 4)), np.ones(2))
    with pytest.raises(ValueError, match="'maybe'"):
        DecisionGate(None, DecisionRule(probe=maybe), hidden=LastHiddenState())
    with pytest.raises(ValueError, match="escalation levels"):
        DecisionGate(None, DecisionRule(level_probe=probe), hidden=LastHiddenState())


def test_the_probe_only_chooses_among_the_values_the_grammar_allows():
    tokens = {"answer": 0.0, "clarify": 0.3, "not_answerable": 0.7}  # nothing retrieved: no "answer"
    assert restrict({"answer": 0.9, "clarify": 0.05, "not_answerable": 0.05}, tokens) == pytest.approx(
        {"answer": 0.0, "clarify": 0.5, "not_answerable": 0.5})
    assert restrict({"answer": 1.0, "clarify": 0.0, "not_answerable": 0.0}, tokens) == tokens


def test_an_adapter_calibrated_with_a_probe_serves_it_and_falls_back_without_its_file(tmp_path, caplog):
    lineage = {"metrics": {"decision_calibration": {"method": "probe", "answer_threshold": 0.6, "dev_records": 20,
                                                    "dev_macro_f1": 0.5, "dev_macro_f1_greedy": 0.4,
                                                    "probe": {"dev_macro_f1": 0.8, "train_examples": 90}}}}
    with caplog.at_level(logging.WARNING):
        assert decision_rule_of(tmp_path, lineage, "v9") == DecisionRule()  # the threshold was the probe's
    assert "v9" in caplog.text and PROBE_FILE in caplog.text and "greedy" in caplog.text
    assert threshold_of(lineage, "v9") is None
    DecisionProbe(("answer", "not_answerable"), np.zeros(2), np.ones(2), np.zeros((2, 2)), np.zeros(2)).save(
        tmp_path / PROBE_FILE)
    rule = decision_rule_of(tmp_path, lineage, "v9")
    assert rule.answer_threshold == 0.6 and rule.probe is not None and rule.probe.features == 2
    assert "probe" in describe(lineage["metrics"]["decision_calibration"]) and "0.800" in describe(
        lineage["metrics"]["decision_calibration"])
    tokens_only = {"metrics": {"decision_calibration": {"answer_threshold": 0.65}}}
    assert decision_rule_of(tmp_path, tokens_only, "v2") == DecisionRule(0.65)
    # a level probe is loaded only when calibration said it is used
    DecisionProbe(("none", "tier_2"), np.zeros(2), np.ones(2), np.zeros((2, 2)), np.zeros(2)).save(tmp_path / LEVEL_PROBE_FILE)
    assert decision_rule_of(tmp_path, tokens_only, "v2").level_probe is None
    used = {"metrics": {"decision_calibration": {"answer_threshold": 0.65, "level_probe": {"used": True}}}}
    assert decision_rule_of(tmp_path, used, "v2").level_probe.values == ("none", "tier_2")


@pytest.mark.parametrize("piece, values, expected", [
    ("tier", ("tier_2", "tier_3", "none"), ["tier_2", "tier_3"]),  # a shared prefix begins both
    (' "none', ("none", "no_docs"), ["none"]),
    ('none",', ("none", "no_docs"), ["none"]),  # the whole value and its closing quote
    ("no", ("none", "no_docs"), ["none", "no_docs"]),
    (' "', ("none",), []),  # only the quote
    ("x", ("none",), []),
])
def test_which_values_a_token_can_begin(piece, values, expected):
    assert consistent(piece, values) == expected


def test_a_chosen_value_is_continued_only_by_its_own_tokens():
    assert continues("_3", "_3") and continues('_3",', "_3") and continues("_", "_3")
    assert not continues("_2", "_3") and not continues("3", "_3")


class _Pieces:
    """A tokenizer for the gate alone: token id -> its text."""
    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


def _run_gate(gate, pieces, preferences, values=("tier_2", "tier_3", "none")):
    """Greedy decoding of one row over a toy vocabulary with a toy grammar: the key piece, the opening
    quote, then any piece that keeps the value a prefix of one of ``values``, then the closing quote.
    Tokens are scored by ``preferences``. Returns the value written (with its closing quote)."""
    import torch

    ids, written, phase = [len(pieces) - 1], "", "key"  # the prompt: one padding-like token
    gate(torch.tensor([ids]), torch.zeros(1, len(pieces)))  # the prompt step
    for _ in range(8):
        if phase == "key":
            allowed = [0]
        elif phase == "quote":
            allowed = [pieces.index(' "')]
        else:
            allowed = [i for i, p in enumerate(pieces) if p != ' "' and (
                any(v.startswith(written + p) for v in values) or (p == '"' and written in values))]
        scores = torch.full((1, len(pieces)), -math.inf)
        for i in allowed:
            scores[0, i] = preferences.get(pieces[i], 0.0)
        scores = gate(torch.tensor([ids]), scores)
        token = int(scores.argmax())
        ids.append(token)
        if phase == "value":
            written += pieces[token]
            if pieces[token] == '"':
                return written
        phase = {"key": "quote", "quote": "value"}.get(phase, phase)
    return written


def test_the_level_probe_writes_its_level_whole_even_through_a_shared_prefix():
    """Toy vocabulary, no model: the tokens prefer "tier_2", the probe chooses "tier_3" (same first
    token); the gate masks "_2" after "tier" and the value is written as the probe chose."""
    pieces = ['{"decision": "answer", "escalation": {"level":', ' "', "tier", "_2", "_3", '"', "none", "_", "<pad>"]
    levels = ("none", "tier_2", "tier_3")
    to_tier_3 = DecisionProbe(("none", "tier_2", "tier_3"), np.zeros(2), np.ones(2), np.zeros((3, 2)),
                              np.array([0.0, 0.0, 6.0]))
    hidden = LastHiddenState()
    hidden.value = __import__("torch").zeros(1, 2)
    gate = DecisionGate(_Pieces(pieces), DecisionRule(level_probe=to_tier_3), levels, hidden)
    prefer = {"tier": 3.0, "_2": 2.0, "_3": 1.0, '"': 0.5, "none": 0.0}
    assert _run_gate(gate, pieces, prefer) == 'tier_3"'
    assert gate.token_distributions["escalation_level"][0]["tier_2"] > 0  # the tokens' own was recorded
    plain = DecisionGate(_Pieces(pieces), DecisionRule(), levels)  # record only: the tokens' choice stands
    assert _run_gate(plain, pieces, prefer) == 'tier_2"'


def test_the_probes_are_opt_in_and_do_not_change_what_training_computes():
    """Measured: fitted on the train split's hidden states, the probes won on dev and abstained on every
    held-out ticket (RESULTS.md), so calibration fits them only when asked; a run with them resumes the
    same training checkpoints (the knob is calibration only)."""
    from hybrid_assets.behaviour.train import TrainConfig

    assert TrainConfig().decision_probes is False
    assert TrainConfig().fingerprint("data", "base") == TrainConfig(decision_probes=True).fingerprint("data", "base")
