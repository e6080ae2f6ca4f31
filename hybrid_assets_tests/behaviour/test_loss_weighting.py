"""Decision-token loss weighting (``TrainConfig.decision_weight``): the weights land on the first
``decision_tokens`` answer tokens of each row, and the step's normaliser equals the sum of the
weights the loss actually applies (so the weighted loss is a true weighted mean)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hybrid_assets.behaviour.sft import IGNORE_INDEX  # noqa: E402
from hybrid_assets.behaviour.train import TrainConfig, collate, step_weight_total  # noqa: E402

ROWS = [
    # 3 prompt tokens, 5 answer tokens, the first 2 of which are decisions
    {"input_ids": [1, 2, 3, 10, 11, 12, 13, 14], "labels": [IGNORE_INDEX] * 3 + [10, 11, 12, 13, 14], "decision_tokens": 2},
    # 2 prompt tokens, 3 answer tokens, no decisions recorded (e.g. an older dataset)
    {"input_ids": [4, 5, 20, 21, 22], "labels": [IGNORE_INDEX] * 2 + [20, 21, 22]},
]


def test_collate_weights_only_the_decision_tokens():
    input_ids, attention, labels, weights = collate(ROWS, pad_id=0, decision_weight=4.0)

    assert weights[0].tolist() == [1, 1, 1, 4, 4, 1, 1, 1]
    assert weights[1].tolist() == [1, 1, 1, 1, 1, 1, 1, 1]  # padding weight is irrelevant: its label is ignored
    assert labels[1, 5:].tolist() == [IGNORE_INDEX] * 3
    assert attention.sum().item() == 13


def test_step_normaliser_matches_the_applied_weights():
    for weight in (1.0, 4.0):
        _, _, labels, weights = collate(ROWS, pad_id=0, decision_weight=weight)
        mask = labels[:, 1:] != IGNORE_INDEX
        assert step_weight_total(ROWS, weight) == pytest.approx(float(weights[:, 1:][mask].sum()))
    assert step_weight_total(ROWS, 1.0) == 8  # every answer token once


def test_decision_weight_must_be_positive():
    with pytest.raises(ValueError, match="decision_weight"):
        TrainConfig(decision_weight=0)
