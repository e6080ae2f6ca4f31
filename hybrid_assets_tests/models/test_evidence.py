"""The decision's retrieval evidence (models/decision.RetrievalEvidence, behaviour/evidence.py): how it
reweighs a distribution, how the gate applies it per row, how it is fitted on dev and read from a lineage."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from hybrid_assets.behaviour.calibration import decision_rule_of, describe, macro_f1
from hybrid_assets.behaviour.evidence import fit_evidence
from hybrid_assets.models.decision import DecisionGate, DecisionRule, RetrievalEvidence

# P(answer) rises with similarity only: sigmoid(20 * (s - 0.5))
BY_SIMILARITY = RetrievalEvidence(w_similarity=20.0, w_answer=0.0, bias=-10.0)


def test_the_evidence_replaces_p_answer_and_the_others_keep_their_proportions():
    mass = {"answer": 0.2, "clarify": 0.2, "not_answerable": 0.6}
    high = BY_SIMILARITY.reweigh(mass, 0.8)
    assert high["answer"] == pytest.approx(1 / (1 + math.exp(-6)))
    assert high["not_answerable"] / high["clarify"] == pytest.approx(3.0) and sum(high.values()) == pytest.approx(1.0)
    assert BY_SIMILARITY.reweigh(mass, 0.2)["answer"] < 0.01
    nothing_to_cite = {"answer": 0.0, "clarify": 0.3, "not_answerable": 0.7}
    assert BY_SIMILARITY.reweigh(nothing_to_cite, 0.9) == nothing_to_cite  # the grammar ruled "answer" out
    assert RetrievalEvidence.from_dict(BY_SIMILARITY.to_dict()) == BY_SIMILARITY


class _Pieces:
    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


PIECES = ['{"decision":', ' "', "answer", "clarify", "not_answerable", '"', "<pad>"]


def _decide(gate, preferences) -> str:
    """One row through the gate over a toy vocabulary: the key, the quote, then one value token."""
    import torch

    ids = [len(PIECES) - 1]
    gate(torch.tensor([ids]), torch.zeros(1, len(PIECES)))  # the prompt step
    for allowed in ([0], [1], [2, 3, 4]):
        scores = torch.full((1, len(PIECES)), -math.inf)
        for i in allowed:
            scores[0, i] = preferences.get(PIECES[i], 0.0)
        ids.append(int(gate(torch.tensor([ids]), scores).argmax()))
    return PIECES[ids[-1]]


def test_the_gate_answers_on_strong_retrieval_evidence_and_declines_on_weak():
    """The tokens prefer "not_answerable"; the best passage's similarity decides, per row."""
    prefer_declining = {"not_answerable": 2.0, "answer": 0.0, "clarify": -1.0}
    rule = DecisionRule(answer_threshold=0.9, evidence=BY_SIMILARITY)
    assert _decide(DecisionGate(_Pieces(PIECES), rule, similarities=[0.8]), prefer_declining) == "answer"
    prefer_answering = {"answer": 3.0, "not_answerable": 0.0, "clarify": -1.0}
    assert _decide(DecisionGate(_Pieces(PIECES), rule, similarities=[0.2]), prefer_answering) == "not_answerable"
    # no similarity known (a caller without retrieval): the tokens' threshold decides, as before
    assert _decide(DecisionGate(_Pieces(PIECES), rule, similarities=[None]), prefer_answering) == "answer"
    assert _decide(DecisionGate(_Pieces(PIECES), rule), prefer_declining) == "not_answerable"
    gate = DecisionGate(_Pieces(PIECES), rule, similarities=[0.8])
    _decide(gate, prefer_declining)
    assert gate.token_distributions["decision"][0]["not_answerable"] > 0.8  # the tokens' own is still recorded
    assert gate.probabilities[0]["answer"] > 0.9  # and the evidence's is what chose


def test_the_evidence_is_fitted_where_similarity_separates_and_scored_by_cross_validation():
    rng = np.random.default_rng(0)
    gold = ["answer"] * 30 + ["not_answerable"] * 15
    similarities = list(rng.uniform(0.55, 0.9, 30)) + list(rng.uniform(0.1, 0.45, 15))
    uninformative = [{"answer": p, "clarify": 0.0, "not_answerable": 1 - p} for p in rng.uniform(0.3, 0.7, 45)]
    evidence, figures = fit_evidence(gold, uninformative, similarities, macro_f1)
    assert evidence.w_similarity > 0 and figures["dev_macro_f1_cv"] > 0.9
    assert evidence.p_answer(0.8, 0.5) > 0.5 > evidence.p_answer(0.2, 0.5)
    noise = list(rng.uniform(0.1, 0.9, 45))
    assert fit_evidence(gold, uninformative, noise, macro_f1)[1]["dev_macro_f1_cv"] < 0.75
    assert fit_evidence(["answer"] * 10 + ["not_answerable"] * 3, uninformative[:13], similarities[:13],
                        macro_f1) is None  # too few of a class for the folds


def test_an_adapter_serves_its_evidence_only_when_calibration_chose_it(caplog):
    entry = {"method": "tokens", "answer_threshold": 0.4, "best_grid_threshold": 0.4, "dev_records": 54,
             "dev_macro_f1": 0.5, "dev_macro_f1_greedy": 0.43,
             "evidence": {**BY_SIMILARITY.to_dict(), "used": True, "dev_macro_f1_cv": 0.6}}
    lineage = {"metrics": {"decision_calibration": entry}}
    rule = decision_rule_of(None, lineage, "v1")
    assert rule.evidence == BY_SIMILARITY and rule.answer_threshold == 0.4
    assert "similarity" in describe(entry)
    unused = {**entry, "evidence": {**entry["evidence"], "used": False}}
    assert decision_rule_of(None, {"metrics": {"decision_calibration": unused}}, "v1").evidence is None
    assert "not better" in describe(unused)
    broken = {**entry, "evidence": {"used": True, "w_similarity": "x"}}
    with caplog.at_level(logging.WARNING):
        assert decision_rule_of(None, {"metrics": {"decision_calibration": broken}}, "v9").evidence is None
    assert "v9" in caplog.text and "evidence" in caplog.text
