"""Metric definitions, checked on hand-computed cases."""

from __future__ import annotations

import pytest

from hybrid_assets.evaluation.metrics import abstention_scores, mean, set_precision_recall, token_f1


def test_token_f1_ignores_sign_off_and_case():
    gold = "Set the label size to 4x6 in Settings. — The Parcelwise Support Team"
    assert token_f1(gold, "set the LABEL size to 4x6 in settings") == pytest.approx(1.0)
    assert token_f1(gold, "— The Parcelwise Support Team") == 0.0
    # 3 common tokens (the, label, size) of 4 predicted and 8 gold -> P .75, R .375
    assert token_f1(gold, "the label size matters") == pytest.approx(2 * 0.75 * 0.375 / 1.125)


def test_abstention_scores_positive_class_is_not_answerable():
    gold = [False, False, True, True]
    predicted = [False, None, False, True]  # one hit, one miss (unparseable), one false alarm
    scores = abstention_scores(gold, predicted)
    assert scores == {"precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_set_precision_recall_and_mean_handle_empty_sets():
    assert set_precision_recall({"a", "b"}, {"a", "c", "d", "e"}) == (0.25, 0.5)
    assert set_precision_recall(set(), set()) == (None, None)
    assert mean([None, 1.0, 0.0]) == 0.5 and mean([None]) is None
