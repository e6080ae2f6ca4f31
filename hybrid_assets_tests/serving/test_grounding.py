"""Grounding rules applied after generation (pure logic): citations must be retrieved ids, an
not-answerable (or clarifying) answer cites nothing, and an answer that cites nothing is replaced by the
honest not-answerable answer. The constrained grammar only allows retrieved ids."""

from __future__ import annotations

from pathlib import Path

from hybrid_assets.schema import NOT_ANSWERABLE_REPLY, LabelSpace, fallback_answer
from hybrid_assets.models.constrained import schema_for_request
from hybrid_assets.serving.engine import enforce_grounding
from hybrid_assets.settings import PROJECT_ROOT

LABELS = LabelSpace.from_file(Path(PROJECT_ROOT / "data/behaviour/labels.json"))


def answer(**overrides) -> dict:
    base = {
        "sentiment": "neutral",
        "category": "labels",
        "decision": "answer",
        "escalation": {"level": "none", "reason": "Rule 5: documented workaround."},
        "citations": ["S1"],
        "resolution": "Share the workaround.",
        "reply": "Set the label size to 4x6. — The Parcelwise Support Team",
    }
    return {**base, **overrides}


def test_unknown_citations_are_dropped_and_reported():
    fixed, dropped, guards = enforce_grounding(answer(citations=["S1", "S9", "S1"]), {"S1", "S2"}, LABELS)
    assert fixed["citations"] == ["S1"] and dropped == ["S9"]
    assert "dropped_unknown_citations" in guards


def test_ungrounded_answer_becomes_honest_refusal():
    fixed, _, guards = enforce_grounding(answer(citations=["S7"]), {"S1"}, LABELS)
    assert fixed["decision"] == "not_answerable" and fixed["citations"] == []
    assert fixed["reply"] == NOT_ANSWERABLE_REPLY
    assert fixed["escalation"]["level"] == "tier_2"
    assert "ungrounded_answer_replaced" in guards


def test_unanswerable_answer_cites_nothing():
    fixed, _, guards = enforce_grounding(answer(decision="not_answerable", citations=["S1"]), {"S1"}, LABELS)
    assert fixed["citations"] == [] and guards == ["cleared_citations_of_not_answerable"]


def test_a_clarifying_question_cites_nothing_and_stays_a_question():
    fixed, _, guards = enforce_grounding(answer(decision="clarify", citations=["S1"], reply="Which order?"),
                                         {"S1"}, LABELS)
    assert fixed["decision"] == "clarify" and fixed["citations"] == [] and fixed["reply"] == "Which order?"
    assert guards == ["cleared_citations_of_clarify"]


def test_grounded_answer_is_untouched():
    original = answer(citations=["S2", "S1"])
    fixed, dropped, guards = enforce_grounding(original, {"S1", "S2"}, LABELS)
    assert fixed == original and dropped == [] and guards == []


def test_request_schema_only_allows_retrieved_ids():
    schema = schema_for_request(LABELS, ("S1", "S2"))
    assert schema["properties"]["citations"]["items"]["enum"] == ["S1", "S2"]
    assert schema_for_request(LABELS, ())["properties"]["citations"]["maxItems"] == 0
    # the shared schema is not mutated by per-request restrictions
    assert "enum" not in schema_for_request(LABELS, ())["properties"]["citations"]["items"]


# -- one not-answerable policy, derived from the label space ------------------------------------
OTHER_COMPANY = LabelSpace(
    sentiments=("calm", "upset"),
    categories=("orders", "misc"),
    escalation_levels=("none", "human_review", "legal"),
    company="Acme",
)


def test_a_label_space_without_tier_2_escalates_to_its_own_first_human_level():
    assert LABELS.not_answerable_level == "tier_2"
    assert OTHER_COMPANY.not_answerable_level == "human_review"
    assert LabelSpace(("a",), ("b",), ("none",)).not_answerable_level == "none"
    explicit = LabelSpace(("a",), ("b",), ("none", "x", "y"), no_docs_level="y")
    assert explicit.not_answerable_level == "y"


def test_an_unknown_no_docs_level_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="'no_docs_level' 'tier_2' is not one of the escalation_levels"):
        LabelSpace(("a",), ("b",), ("none", "x"), no_docs_level="tier_2")


def test_grounding_and_fallback_follow_another_companys_labels():
    ungrounded = {"sentiment": "upset", "category": "orders", "decision": "answer",
                  "escalation": {"level": "none", "reason": "r"}, "citations": [], "resolution": "x", "reply": "y"}
    fixed, _, guards = enforce_grounding(ungrounded, {"S1"}, OTHER_COMPANY)
    assert fixed["escalation"]["level"] == "human_review" and "ungrounded_answer_replaced" in guards
    assert (fixed["sentiment"], fixed["category"]) == ("upset", "orders")  # decided labels are kept
    legal = {**ungrounded, "escalation": {"level": "legal", "reason": "Rule 1: legal threat."}}
    assert enforce_grounding(legal, set(), OTHER_COMPANY)[0]["escalation"]["level"] == "legal"
    fallback = fallback_answer(OTHER_COMPANY, "cut")
    assert fallback["escalation"]["level"] == "human_review"
    assert fallback["sentiment"] in OTHER_COMPANY.sentiments and fallback["category"] in OTHER_COMPANY.categories
