"""The decision rule checked as served (``evaluation/served_check.py``)."""

from __future__ import annotations

import shutil

from hybrid_assets.evaluation.served_check import EVIDENCE, GREEDY, THRESHOLD, check_decision_as_served, replay
from hybrid_assets.models.decision import RetrievalEvidence
from hybrid_assets.settings import PROJECT_ROOT


def test_each_candidate_rule_is_replayed_on_the_recorded_distributions():
    rows = [{"tokens": {"answer": 0.6, "clarify": 0.1, "not_answerable": 0.3}, "similarity": 0.2},
            {"tokens": {"answer": 0.35, "clarify": 0.05, "not_answerable": 0.6}, "similarity": 0.9},
            {"tokens": {"answer": 0.45, "clarify": 0.0, "not_answerable": 0.55}, "similarity": None}]
    # The evidence answers on similarity alone here: P(answer) = sigmoid(10 * (s - 0.5)).
    evidence = RetrievalEvidence(w_similarity=10.0, w_answer=0.0, bias=-5.0)
    decided = replay(rows, 0.4, evidence)
    assert decided[GREEDY] == ["answer", "not_answerable", "not_answerable"]
    assert decided[THRESHOLD] == ["answer", "not_answerable", "answer"]
    # low similarity declines, high answers; a row without one keeps the threshold
    assert decided[EVIDENCE] == ["not_answerable", "answer", "answer"]
    assert set(replay(rows, None, None)) == {GREEDY}


def test_the_release_adapters_rule_is_checked_on_its_dev_tickets_as_served(settings, client, tmp_path):
    """Real Weaviate with the sample knowledge, the real model with the shipped adapter: the first dev
    tickets are answered as served, every candidate rule is scored, and the best is kept in the lineage
    (a copy: the shipped adapter is not touched)."""
    import json

    from hybrid_assets.knowledge.pipeline import ingest_knowledge

    ingest_knowledge(client, settings)
    adapter = tmp_path / "release"
    shutil.copytree(PROJECT_ROOT / "adapters/release", adapter)
    before = json.loads((adapter / "lineage.json").read_text())["metrics"]["decision_calibration"]
    recorded = check_decision_as_served(settings, client, adapter, write=True, limit=4)
    entry = json.loads((adapter / "lineage.json").read_text())["metrics"]["decision_calibration"]
    assert entry["served_check"] == recorded and recorded["applied"] is False
    assert entry["evidence"]["used"] == before["evidence"]["used"]  # recorded, not applied
    figures = check_decision_as_served(settings, client, adapter, apply=True, limit=4)
    assert figures["dev_records"] == 4
    assert set(figures["dev_macro_f1_as_served"]) == {GREEDY, THRESHOLD, EVIDENCE}
    assert figures["chosen"] in figures["dev_macro_f1_as_served"]
    best = max(figures["dev_macro_f1_as_served"].values())
    assert figures["dev_macro_f1_as_served"][figures["chosen"]] == best
    entry = json.loads((adapter / "lineage.json").read_text())["metrics"]["decision_calibration"]
    assert entry["served_check"] == figures
    assert entry["evidence"]["used"] == (figures["chosen"] == EVIDENCE)
