"""Grounding rules applied after generation (pure logic): citations must be retrieved ids, an
not-answerable (or clarifying) answer cites nothing, and an answer that cites nothing is replaced by the
honest not-answerable answer. The constrained grammar only allows retrieved ids."""

from __future__ import annotations

from pathlib import Path

from hybrid_assets.schema import NOT_ANSWERABLE_REPLY, LabelSpace, fallback_answer
from hybrid_assets.models.constrained import schema_for_request
from hybrid_assets.models.figures import check_figures, figures_in, without_sentences_holding
from hybrid_assets.serving.engine import enforce_grounding
from hybrid_assets.settings import PROJECT_ROOT

LABELS = LabelSpace.from_file(Path(PROJECT_ROOT / "data/behaviour/labels.json"))
LABEL_SIZE = "Label sizes: set the label size to 4x6 under Settings → Printing."
PASSAGES = {"S1": LABEL_SIZE, "S2": "Refunds for unused labels are issued within 14 days; fees over $1,250.00 need approval."}


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
    fixed, dropped, guards = enforce_grounding(answer(citations=["S1", "S9", "S1"]), PASSAGES, LABELS)
    assert fixed["citations"] == ["S1"] and dropped == ["S9"]
    assert "dropped_unknown_citations" in guards


def test_ungrounded_answer_becomes_honest_refusal():
    fixed, _, guards = enforce_grounding(answer(citations=["S7"]), {"S1": LABEL_SIZE}, LABELS)
    assert fixed["decision"] == "not_answerable" and fixed["citations"] == []
    assert fixed["reply"] == NOT_ANSWERABLE_REPLY
    assert fixed["escalation"]["level"] == "tier_2"
    assert "ungrounded_answer_replaced" in guards


def test_unanswerable_answer_cites_nothing():
    fixed, _, guards = enforce_grounding(answer(decision="not_answerable", citations=["S1"]), {"S1": LABEL_SIZE}, LABELS)
    assert fixed["citations"] == [] and guards == ["cleared_citations_of_not_answerable"]


def test_a_clarifying_question_cites_nothing_and_stays_a_question():
    fixed, _, guards = enforce_grounding(answer(decision="clarify", citations=["S1"], reply="Which order?"),
                                         {"S1": LABEL_SIZE}, LABELS)
    assert fixed["decision"] == "clarify" and fixed["citations"] == [] and fixed["reply"] == "Which order?"
    assert guards == ["cleared_citations_of_clarify"]


def test_grounded_answer_is_untouched():
    original = answer(citations=["S1"])
    fixed, dropped, guards = enforce_grounding(original, PASSAGES, LABELS)
    assert fixed == original and dropped == [] and guards == []


def test_an_answer_cites_the_passages_its_reply_draws_on_not_the_ids_the_model_wrote():
    """The model cited the refunds passage (S2) for a reply about label sizes: the reply's words are
    S1's, so S1 is cited instead; a reply drawing on both cites both, in retrieval order."""
    fixed, _, guards = enforce_grounding(answer(citations=["S2"]), PASSAGES, LABELS)
    assert fixed["citations"] == ["S1"] and guards == ["citations_attributed_to_the_reply"]
    both = answer(reply="Set the label size to 4x6. Refunds for unused labels are issued within 14 days.",
                  citations=["S2"])
    assert enforce_grounding(both, PASSAGES, LABELS)[0]["citations"] == ["S1", "S2"]
    # Only retrieved passages can be attributed: an answer never cites what was not retrieved for it.
    assert set(enforce_grounding(both, {"S2": PASSAGES["S2"]}, LABELS)[0]["citations"]) <= {"S2"}


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
    fixed, _, guards = enforce_grounding(ungrounded, {"S1": LABEL_SIZE}, OTHER_COMPANY)
    assert fixed["escalation"]["level"] == "human_review" and "ungrounded_answer_replaced" in guards
    assert (fixed["sentiment"], fixed["category"]) == ("upset", "orders")  # decided labels are kept
    legal = {**ungrounded, "escalation": {"level": "legal", "reason": "Rule 1: legal threat."}}
    assert enforce_grounding(legal, {}, OTHER_COMPANY)[0]["escalation"]["level"] == "legal"
    fallback = fallback_answer(OTHER_COMPANY, "cut")
    assert fallback["escalation"]["level"] == "human_review"
    assert fallback["sentiment"] in OTHER_COMPANY.sentiments and fallback["category"] in OTHER_COMPANY.categories


# -- figures: never an invented amount, limit or duration ----------------------------------------
def test_an_invented_amount_turns_the_answer_into_the_honest_one():
    """The drone ticket's reply promised "$500 per parcel", a figure no passage holds."""
    invented = answer(category="other", reply="Drone delivery to Antarctica costs $500 per parcel. — The Parcelwise "
                      "Support Team")
    fixed, _, guards = enforce_grounding(invented, PASSAGES, LABELS, given=["Can you ship by drone to Antarctica?"])
    assert guards == ["unsupported_figure_replaced"]
    assert fixed["decision"] == "not_answerable" and fixed["citations"] == [] and fixed["reply"] == NOT_ANSWERABLE_REPLY
    assert fixed["category"] == "other" and fixed["escalation"]["level"] == "tier_2"  # labels kept, policy applied


def test_an_invented_figure_beside_a_grounded_reply_drops_only_its_sentence():
    """The Zebra ticket's answer was right and cited, with one sentence promising a fix "within 48 hours":
    the sentence goes, the answer stays (declining would fail a ticket the documents answer)."""
    reply = ("Thanks for reporting this. Set the label size to 4x6 under Settings → Printing. A fix ships within "
             "48 hours.\n\n— The Parcelwise Support Team")
    invented = answer(reply=reply, resolution="Set the label size to 4x6. Fixed within 48 hours.")
    fixed, _, guards = enforce_grounding(invented, PASSAGES, LABELS, given=["My labels print too small"])
    assert guards == ["unsupported_figure_sentence_dropped"]
    assert fixed["decision"] == "answer" and fixed["citations"] == ["S1"]
    assert fixed["reply"] == ("Thanks for reporting this. Set the label size to 4x6 under Settings → Printing."
                              "\n\n— The Parcelwise Support Team")
    assert fixed["resolution"] == "Set the label size to 4x6."
    assert "48" not in fixed["reply"] + fixed["resolution"]


def test_what_is_left_must_still_say_what_the_cited_passage_says():
    """Only a greeting, an echo of the ticket and the sign-off left: the honest answer replaces it."""
    echo = answer(reply="Sorry your labels print too small! Label sizes are fixed in 48 hours.\n\n— The Parcelwise "
                  "Support Team", resolution="Share the workaround.")
    fixed, _, guards = enforce_grounding(echo, PASSAGES, LABELS, given=["My labels print too small"])
    assert guards == ["unsupported_figure_replaced"] and fixed["decision"] == "not_answerable"
    no_resolution = answer(reply="Set the label size to 4x6 under Settings → Printing.",
                           resolution="Refund $40 within 48 hours.")
    assert enforce_grounding(no_resolution, PASSAGES, LABELS)[2] == ["unsupported_figure_replaced"]


def test_sentences_split_at_ends_and_line_breaks_not_at_decimal_points():
    text = "Extra labels cost $0.08 each. Refunds take 9 days!\n1. Open Settings.\n\n— The Team"
    assert without_sentences_holding(text, {"9"}) == "Extra labels cost $0.08 each.\n1. Open Settings.\n\n— The Team"
    assert without_sentences_holding(text, figures_in("$0.08")).startswith("Refunds take 9 days!")
    assert without_sentences_holding(text, set()) == text


def test_a_figure_from_the_cited_passage_the_ticket_or_a_label_name_is_kept():
    grounded = answer(reply="Set the label size to 4x6 for order 88231; Tier 2 will follow up. — The Parcelwise "
                      "Support Team", resolution="1. Check printing.\n2. Escalate to tier 2 if it persists.")
    fixed, _, guards = enforce_grounding(grounded, PASSAGES, LABELS, given=["My order 88231 prints too small"])
    assert fixed == grounded and guards == []


def test_a_figure_only_an_uncited_retrieved_passage_holds_cites_that_passage():
    reply = answer(reply="Set the label size to 4x6 under Settings → Printing; 14 days. — The Parcelwise Support Team",
                   citations=["S1"])
    fixed, _, guards = enforce_grounding(reply, PASSAGES, LABELS)
    assert fixed["citations"] == ["S1", "S2"] and guards == ["cited_the_passage_holding_a_figure"]
    assert fixed["reply"] == reply["reply"]


def test_figures_compare_by_value_not_by_spelling():
    assert figures_in("Fees over $1,250.00, 20% off, 4x6 labels, KI-102, S1 and v2") == {"1250", "20", "4", "6", "102"}
    assert figures_in("1. Open settings\n2) Print") == set()  # list markers are layout
    check = check_figures(["It costs 1250 USD and takes 3 days"], {"S1": "fees over $1,250.00"}, {"S1": "x"})
    assert check.unsupported == ("3",) and check.cite_also == ()


def test_an_invented_figure_in_a_clarifying_question_is_not_served():
    question = answer(decision="clarify", citations=[], reply="Is this about your 3 warehouses?")
    fixed, _, guards = enforce_grounding(question, PASSAGES, LABELS, given=["Labels are wrong"])
    assert fixed["decision"] == "not_answerable" and guards == ["unsupported_figure_replaced"]


def test_a_figure_one_arithmetic_step_from_supported_ones_is_kept():
    passage = {"S1": "Starter includes 250 labels; each extra label is $0.08."}
    assert check_figures(["80 extra labels add $6.40"], passage, passage, ["We printed 330 labels"]).unsupported == ()
    chained = {"S1": "Growth is $99 with 1,500 labels; extra labels are $0.06."}
    assert check_figures(["3,500 extra labels cost $210, $309 in total"], chained, chained,
                         ["we print 5,000 labels"]).unsupported == ()
    assert check_figures(["it costs $7"], passage, passage, ["We printed 330 labels"]).unsupported == ("7",)


def test_two_document_figures_alone_derive_nothing():
    """A date and a limit would otherwise "support" an invented amount (250 x 2 = 500)."""
    passage = {"S1": "Since 2026-11-02, batches above 250 labels time out."}
    assert check_figures(["$500 per parcel"], passage, passage, ["Can you ship by drone?"]).unsupported == ("500",)


def test_a_cited_account_passage_holds_the_customers_own_figures():
    """Arithmetic on the customer's account facts is theirs, like the ticket's: 2950 used - 1500 included."""
    passages = {"S1": "Account C1008 — Account overview: plan: Growth labels included: 1500 monthly label usage: 2950",
                "S2": "Extra labels on Growth cost $0.06 each."}
    reply = answer(reply="You used 1450 labels beyond your plan, $87 at $0.06 each.", citations=["S1", "S2"])
    fixed, _, guards = enforce_grounding(reply, passages, LABELS, account_ids={"S1"})
    assert fixed["decision"] == "answer" and fixed["citations"] == ["S1", "S2"]
    assert not any("unsupported_figure" in guard for guard in guards)
    assert enforce_grounding(reply, passages, LABELS)[2][-1] == "unsupported_figure_replaced"  # as documents only
