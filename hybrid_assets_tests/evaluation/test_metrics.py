"""Metric definitions, checked on hand-computed cases."""

from __future__ import annotations

import pytest

from hybrid_assets.evaluation.metrics import decision_class_scores, mean, repeats_a_run, set_precision_recall, token_f1


def test_token_f1_ignores_sign_off_and_case():
    gold = "Set the label size to 4x6 in Settings. — The Parcelwise Support Team"
    assert token_f1(gold, "set the LABEL size to 4x6 in settings") == pytest.approx(1.0)
    assert token_f1(gold, "— The Parcelwise Support Team") == 0.0
    # 3 common tokens (the, label, size) of 4 predicted and 8 gold -> P .75, R .375
    assert token_f1(gold, "the label size matters") == pytest.approx(2 * 0.75 * 0.375 / 1.125)


def test_decision_class_scores_count_only_the_positive_class():
    gold = ["not_answerable", "not_answerable", "answer", "answer", "clarify"]
    predicted = ["not_answerable", None, "not_answerable", "answer", "not_answerable"]
    # abstention: 1 hit, 1 miss (no prediction), 2 false alarms (one on a clarify item)
    assert decision_class_scores(gold, predicted, "not_answerable") == pytest.approx(
        {"precision": 1 / 3, "recall": 0.5, "f1": 0.4})
    assert decision_class_scores(gold, predicted, "clarify") == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert decision_class_scores(gold, ["clarify"] * 5, "clarify") == pytest.approx(
        {"precision": 0.2, "recall": 1.0, "f1": 2 * 0.2 / 1.2})


def test_a_reply_that_loops_is_caught_by_runs_and_by_repeated_sentences():
    loop = "I've passed your ticket to our documentation team. " * 3
    assert repeats_a_run(loop)
    assert repeats_a_run("We are sorry. Thanks for waiting. We are sorry.")  # a repeated short sentence
    assert not repeats_a_run("Thanks for asking. Labels above the allowance are charged at the extra rate. "
                             "Unused labels do not roll over.")
    assert not repeats_a_run("Thanks! Thanks!")  # too short to be a loop


def test_set_precision_recall_and_mean_handle_empty_sets():
    assert set_precision_recall({"a", "b"}, {"a", "c", "d", "e"}) == (0.25, 0.5)
    assert set_precision_recall(set(), set()) == (None, None)
    assert mean([None, 1.0, 0.0]) == 0.5 and mean([None]) is None
