"""Scoring of the four-configuration evaluation on hand-made answers (pure logic: the runs themselves are
exercised by the serving integration tests and `make demo`)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from hybrid_assets.evaluation.compare import (
    EvalCase,
    bar_chart,
    markdown_table,
    overall,
    score,
    where_beaten,
    write_report,
)
from hybrid_assets.evaluation.datasets import EvalItem
from hybrid_assets.scoring import decisions_of

GOLD_LABELS = {"sentiment": "negative", "category": "labels", "escalation": "none"}


def _answer(decision="answer", category="labels", sentiment="negative", level="none", reply="void the label today"):
    return {"sentiment": sentiment, "category": category, "decision": decision,
            "escalation": {"level": level, "reason": "r"}, "citations": [], "resolution": "x", "reply": reply}


def _result(answer, cited=(), retrieved=(), guards=(), decided=None):
    complete = "truncated_generation_replaced" not in guards
    return SimpleNamespace(answer=answer, sources=[{"doc_id": d} for d in cited],
                           retrieved=[{"doc_id": d} for d in retrieved], guards=list(guards),
                           decided=decisions_of(answer) if decided is None else decided, complete=complete)


CASES = [
    EvalCase(EvalItem("a", "q1", gold_passage_ids=("docs/a.md",), gold_answer="void the label today"), GOLD_LABELS),
    EvalCase(EvalItem("b", "q2", gold_passage_ids=("docs/b.md",), gold_answer="update the printer driver"),
             GOLD_LABELS),
    EvalCase(EvalItem("c", "q3", decision="not_answerable"), GOLD_LABELS),
]


def test_score_counts_each_metric_against_the_gold():
    results = [
        _result(_answer(), cited=["docs/a.md"], retrieved=["docs/a.md", "docs/x.md"]),  # right, cited gold
        _result(_answer(category="billing", reply="no idea"), cited=["docs/x.md"], retrieved=["docs/x.md"]),
        _result(_answer(decision="not_answerable", level="tier_2")),  # honest abstention
    ]
    metrics = score(CASES, results, retrieval=True)
    assert metrics["json_validity"] == 1.0
    assert metrics["category_accuracy"] == pytest.approx(2 / 3)
    assert metrics["escalation_accuracy"] == pytest.approx(2 / 3)
    assert metrics["answer_f1"] == pytest.approx(0.5)  # 1.0 and 0.0
    assert metrics["citation_precision"] == pytest.approx(0.5)
    assert metrics["citation_recall"] == pytest.approx(0.5)
    assert metrics["abstention_precision"] == 1.0 and metrics["abstention_recall"] == 1.0
    assert metrics["decision_accuracy"] == 1.0
    assert metrics["clarification_f1"] is None  # no gold "clarify" item in the set
    assert metrics["retrieval_recall_at_k"] == pytest.approx(0.5)
    assert metrics["repeated_reply_rate"] == 0.0 and metrics["truncated_rate"] == 0.0
    assert 0 < metrics["overall"] < 1


def test_clarification_and_loops_are_scored():
    cases = CASES[:2] + [EvalCase(EvalItem("d", "q4", decision="clarify", gold_answer="Which order?"), GOLD_LABELS)]
    loop = "Sorry about that. We are on it. Sorry about that. We are on it."
    results = [
        _result(_answer(), cited=["docs/a.md"]),
        _result(_answer(decision="clarify", reply=loop)),  # asked although the docs answer: a false alarm
        _result(_answer(decision="clarify", reply="Which order number?")),
    ]
    metrics = score(cases, results, retrieval=False)
    assert metrics["clarification_precision"] == 0.5 and metrics["clarification_recall"] == 1.0
    assert metrics["decision_accuracy"] == pytest.approx(2 / 3)
    assert metrics["abstention_f1"] is None  # no gold "not_answerable" item
    assert metrics["repeated_reply_rate"] == pytest.approx(1 / 3)


def test_truncation_invalidates_and_an_abstaining_answer_scores_no_f1():
    results = [
        _result(_answer(decision="not_answerable"), guards=["truncated_generation_replaced"]),
        _result(_answer(decision="not_answerable")),
        _result(_answer(decision="answer"), cited=["docs/a.md"]),  # answered the unanswerable one
    ]
    metrics = score(CASES, results, retrieval=False)
    assert metrics["json_validity"] == pytest.approx(2 / 3)
    assert metrics["answer_f1"] == 0.0
    assert metrics["abstention_precision"] == 0.0 and metrics["abstention_recall"] == 0.0
    assert metrics["citation_precision"] == 0.0  # citing for an unanswerable question is never precise
    assert metrics["retrieval_recall_at_k"] is None


def test_a_cut_answer_is_invalid_but_its_decided_labels_count():
    """The same scorer as the promotion gate: labels come from what the model decided, validity apart."""
    served = _answer(decision="not_answerable", category="other", sentiment="neutral", level="tier_2")  # the fallback shown
    decided = {"sentiment": "negative", "category": "labels"}  # the cut prefix had decided these two
    results = [_result(served, guards=["truncated_generation_replaced"], decided=decided)] + \
              [_result(_answer()) for _ in range(2)]
    metrics = score(CASES, results, retrieval=False)
    assert metrics["json_validity"] == pytest.approx(2 / 3)
    assert metrics["category_accuracy"] == 1.0 and metrics["sentiment_accuracy"] == 1.0
    assert metrics["escalation_accuracy"] == pytest.approx(2 / 3)  # never reached in the cut answer


def test_overall_gives_no_free_pass_for_citing_nothing():
    base = {name: 0.5 for name in ("json_validity", "sentiment_accuracy", "category_accuracy",
                                   "escalation_accuracy", "answer_f1", "citation_recall", "abstention_f1")}
    assert overall({**base, "citation_precision": None}) == pytest.approx(0.5 * 7 / 8)
    no_gold = {**base, "citation_precision": None, "citation_recall": None}
    assert overall(no_gold) == pytest.approx(0.5)


def test_table_chart_and_report(tmp_path):
    configs = {}
    for name, value in (("base", 0.2), ("hybrid", 0.8)):
        metrics = {m: value for m in ("overall", "json_validity", "category_accuracy")}
        metrics.update({"answer_f1": None, "mean_latency_s": 3.0})
        configs[name] = {"name": name, "n": 3, "metrics": metrics, "seconds": 9.0, "answers": []}
    report = {"n": 3, "configurations": configs, "best_overall": "hybrid"}
    table = markdown_table(report)
    assert table.splitlines()[0] == "| metric | base | hybrid |"
    assert "| overall | 0.200 | **0.800** |" in table
    assert "answer_f1" not in table  # undefined everywhere: not shown
    png = bar_chart(report, tmp_path / "chart.png", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = write_report(report, tmp_path / "r" / "report.json")
    assert json.loads(path.read_text())["best_overall"] == "hybrid"


def test_where_beaten_lists_only_metrics_another_configuration_wins():
    def config(name, **metrics):
        return {"name": name, "metrics": {"mean_latency_s": 1.0, **metrics}}

    report = {"configurations": {
        "base": config("base", overall=0.3, escalation_accuracy=0.6, answer_f1=None, mean_latency_s=0.1),
        "hybrid": config("hybrid", overall=0.5, escalation_accuracy=0.4, answer_f1=0.2),
        "rag_only": config("rag_only", overall=0.2, escalation_accuracy=0.5, answer_f1=0.2),
    }}
    assert where_beaten(report) == ["escalation_accuracy: hybrid 0.400 < base 0.600"]  # latency is not quality


def test_where_beaten_compares_loops_downwards_and_leaves_out_trade_off_halves():
    def config(name, **metrics):
        return {"name": name, "metrics": {"mean_latency_s": 1.0, **metrics}}

    report = {"configurations": {
        "base": config("base", abstention_recall=1.0, abstention_f1=0.5, repeated_reply_rate=0.0),
        "hybrid": config("hybrid", abstention_recall=0.8, abstention_f1=0.8, repeated_reply_rate=0.25),
    }}
    # always abstaining maximises recall alone; F1 is the figure that must not be beaten
    assert where_beaten(report) == ["repeated_reply_rate: hybrid 0.250 > base 0.000"]
    assert "| repeated_reply_rate | **0.000** | 0.250 |" in markdown_table(report)


def test_retrieval_recall_curve_counts_gold_in_the_top_k_of_answerable_items():
    from hybrid_assets.evaluation.runner import retrieval_recall_curve

    ranking = {"q1": ["d9", "d1", "d2"], "q2": ["d3", "d4", "d5"]}
    items = [
        EvalItem(id="a", question="q1", gold_passage_ids=("d1",)),
        EvalItem(id="b", question="q2", gold_passage_ids=("d7",)),
        EvalItem(id="c", question="q2", gold_passage_ids=(), decision="not_answerable"),  # not scored
    ]

    def search(item, k):
        return SimpleNamespace(hits={f"S{i}": SimpleNamespace(doc_id=d) for i, d in enumerate(ranking[item.question][:k], 1)})

    assert retrieval_recall_curve(items, search, ks=(1, 2, 3)) == {"1": 0.0, "2": 0.5, "3": 0.5}
