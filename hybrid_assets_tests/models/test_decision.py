"""The calibrated decision (models/decision.py) and its calibration (behaviour/calibration.py): pure
parts here; the gate runs inside real generation in test_decision_generation below."""

from __future__ import annotations

import logging

import pytest

from hybrid_assets.behaviour.calibration import choose_threshold, macro_f1, threshold_of
from hybrid_assets.models.constrained import schema_for_request
from hybrid_assets.models.decision import choose
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
    forced = decoder.generate(model, [conversation], [("S1",)], answer_threshold=1.0)[0]
    assert forced.decided["decision"] in ("clarify", "not_answerable")
    assert forced.decided["decision"] == max(("clarify", "not_answerable"), key=dist.get)
    allowed = decoder.generate(model, [conversation], [("S1",)], answer_threshold=0.0)[0]
    assert allowed.decided["decision"] == "answer"
