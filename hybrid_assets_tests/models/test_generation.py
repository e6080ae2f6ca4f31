"""The shared decoding path's pure parts and the one scorer: a cut answer keeps the labels its
grammar-constrained prefix had decided, and validity is scored on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_assets.models.generation import parse_generation, read_decided
from hybrid_assets.schema import LabelSpace
from hybrid_assets.scoring import Scored, decision_scores
from hybrid_assets.serving.engine import truncated_answer
from hybrid_assets.settings import PROJECT_ROOT

LABELS = LabelSpace.from_file(Path(PROJECT_ROOT / "data/behaviour/labels.json"))
FULL = ('{"sentiment": "negative", "category": "billing", "decision": "answer", "escalation": {"level": '
        '"billing_specialist", "reason": "Rule 4."}, "citations": ["S1"], "resolution": "Refund.", "reply": "Sorry."}')


@pytest.mark.parametrize("cut, expected", [
    (FULL, {"sentiment": "negative", "category": "billing", "decision": "answer",
            "escalation_level": "billing_specialist"}),
    (FULL[: FULL.index('"resolution"') + 20], {"sentiment": "negative", "category": "billing", "decision": "answer",
                                              "escalation_level": "billing_specialist"}),
    (FULL[: FULL.index('"escalation"') + 20], {"sentiment": "negative", "category": "billing", "decision": "answer"}),
    (FULL[: FULL.index('"billing"') + 4], {"sentiment": "negative"}),  # cut inside a value: not decided
    ('{"sentiment": "negat', {}),
    ("", {}),
])
def test_decided_fields_are_read_from_the_prefix_of_a_cut_answer(cut, expected):
    assert read_decided(cut, LABELS) == expected


def test_a_value_outside_the_label_space_decides_nothing_after_it():
    text = '{"sentiment": "furious", "category": "billing"'
    assert read_decided(text, LABELS) == {}


def test_parse_generation_tells_complete_from_cut():
    complete = parse_generation(FULL, 60, LABELS)
    assert complete.complete and complete.answer["category"] == "billing" and complete.error is None
    cut = parse_generation(FULL[:120], 30, LABELS)
    assert not cut.complete and cut.answer is None and cut.error
    assert cut.decided["escalation_level"] == "billing_specialist"


def test_the_scorer_counts_decided_labels_and_reports_validity_apart():
    gold = {"sentiment": "negative", "category": "billing", "decision": "answer", "escalation_level": "billing_specialist"}
    rows = [
        Scored(gold, dict(gold), complete=True),
        Scored(gold, read_decided(FULL[:120], LABELS), complete=False),  # cut after the escalation level
        Scored(gold, {"sentiment": "negative"}, complete=False),  # cut early: the rest counts as wrong
        Scored({"category": "billing"}, {"category": "labels"}, complete=True),  # an intent row: category only
    ]
    scores = decision_scores(rows)
    assert scores["json_validity"] == 0.5
    assert scores["sentiment_accuracy"] == 1.0  # 3 of 3 rows that have a gold sentiment
    assert scores["category_accuracy"] == 0.5  # 2 of 4
    assert scores["escalation_accuracy"] == pytest.approx(2 / 3)
    assert scores["decision_accuracy"] == pytest.approx(2 / 3)
    assert decision_scores([Scored({"category": "billing"}, {}, True)])["sentiment_accuracy"] is None


def test_a_cut_served_answer_is_honest_but_keeps_its_decided_labels():
    answer = truncated_answer(read_decided(FULL[:120], LABELS), LABELS)
    assert answer["decision"] == "not_answerable" and answer["citations"] == []
    assert (answer["sentiment"], answer["category"]) == ("negative", "billing")
    assert answer["escalation"]["level"] == "billing_specialist"  # a level the ticket itself triggered stays
    docs_would_answer = truncated_answer({"sentiment": "neutral", "category": "labels", "decision": "answer",
                                          "escalation_level": "none"}, LABELS)
    assert docs_would_answer["escalation"]["level"] == "tier_2"  # no checked answer: a person looks at it
    assert truncated_answer({}, LABELS)["category"] == "other"


NOT_ANSWERABLE_NONE = ('{"sentiment": "neutral", "category": "returns", "decision": "not_answerable", "escalation": '
                       '{"level": "none", "reason": "Rule 5."}, "citations": [], "resolution": "Check.", "reply": "Hm."}')


def test_a_not_answerable_answer_is_never_routed_to_none():
    """Rule 5 ("none") means the documentation resolves the ticket; "not answerable" says it does not."""
    complete = parse_generation(NOT_ANSWERABLE_NONE, 60, LABELS)
    assert complete.answer["escalation"]["level"] == LABELS.not_answerable_level == "tier_2"
    assert complete.decided["escalation_level"] == "tier_2"
    assert complete.adjustments == ("escalation_follows_decision",)
    cut = parse_generation(NOT_ANSWERABLE_NONE[: NOT_ANSWERABLE_NONE.index('"reason"')], 30, LABELS)
    assert cut.decided["escalation_level"] == "tier_2" and cut.adjustments


@pytest.mark.parametrize("text", [
    NOT_ANSWERABLE_NONE.replace('"level": "none"', '"level": "security"'),  # a level the ticket triggered stays
    FULL,  # an answer keeps its level
    FULL.replace('"billing_specialist"', '"none"'),
])
def test_levels_the_policy_allows_are_left_alone(text):
    generation = parse_generation(text, 60, LABELS)
    assert generation.adjustments == ()
    assert generation.answer["escalation"]["level"] == __import__("json").loads(text)["escalation"]["level"]


def test_a_label_space_without_another_level_keeps_none():
    labels = LabelSpace(sentiments=("neutral",), categories=("returns",), escalation_levels=("none",))
    generation = parse_generation(NOT_ANSWERABLE_NONE, 60, labels)
    assert generation.answer["escalation"]["level"] == "none" and generation.adjustments == ()


def test_the_ragged_batch_is_used_only_where_it_is_generates_greedy_search():
    """``models/batched_greedy.py`` reproduces ``generate``'s greedy search for a plain decoder with a
    neutral generation config; a config that makes ``generate`` add processors of its own (a repetition
    penalty, say: some Hub models ship one) or layers a static cache cannot hold keep ``generate``."""
    from types import SimpleNamespace

    from transformers import GenerationConfig, LlamaConfig, MistralConfig

    from hybrid_assets.models import batched_greedy

    small = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=100)
    plain = SimpleNamespace(config=LlamaConfig(**small), generation_config=GenerationConfig(eos_token_id=2))
    assert batched_greedy.supported(plain)
    penalised = SimpleNamespace(config=plain.config,
                                generation_config=GenerationConfig(eos_token_id=2, repetition_penalty=1.1))
    assert not batched_greedy.supported(penalised)
    windowed = SimpleNamespace(config=MistralConfig(sliding_window=16, **small), generation_config=None)
    assert not batched_greedy.supported(windowed)
