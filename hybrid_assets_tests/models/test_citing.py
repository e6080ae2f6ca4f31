"""An answer cannot close its citations empty (models/citing.py): a toy vocabulary for the rule, the
real model and grammar for the effect."""

from __future__ import annotations

import math

import pytest
import torch

from hybrid_assets.models.citing import AnswerCites
from hybrid_assets.schema import LabelSpace

PIECES = ['{"decision": "answer", "escalation": {"level": "none"}, "citations":', '{"decision": "clarify", '
          '"escalation": {"level": "none"}, "citations":', " []", " [", "]", '"S1"', "<pad>"]


class _Pieces:
    def decode(self, ids):
        return "".join(PIECES[i] for i in ids)


def _next(cites: AnswerCites, ids: list[int], allowed: list[str], prefer: str) -> str:
    scores = torch.full((1, len(PIECES)), -math.inf)
    for piece in allowed:
        scores[0, PIECES.index(piece)] = 5.0 if piece == prefer else 0.0
    return PIECES[int(cites(torch.tensor([ids]), scores).argmax())]


@pytest.mark.parametrize("prefix, expected", [(0, '"S1"'), (1, "]")])
def test_an_answer_cannot_close_its_citations_empty_and_the_other_decisions_can(prefix, expected):
    cites = AnswerCites(_Pieces())
    ids = [PIECES.index("<pad>")]
    cites(torch.tensor([ids]), torch.zeros(1, len(PIECES)))  # the prompt step
    ids.append(prefix)
    # straight after the key: " []" (an empty list in one token) is masked only for an answer
    assert _next(cites, ids, [" []", " ["], " []") == (" [" if prefix == 0 else " []")
    ids.append(PIECES.index(" ["))
    assert _next(cites, ids, ["]", '"S1"'], "]") == expected
    assert cites.forced == [prefix == 0]


def test_when_the_grammar_allows_only_the_empty_list_it_is_written():
    cites = AnswerCites(_Pieces())
    ids = [PIECES.index("<pad>")]
    cites(torch.tensor([ids]), torch.zeros(1, len(PIECES)))
    ids.append(0)
    assert _next(cites, ids, [" []"], " []") == " []" and cites.forced == [False]


@pytest.mark.integration
def test_answers_decoded_by_the_real_model_cite_a_retrieved_passage():
    """Real model and grammar, the decision forced to "answer" (threshold 0): the base model, which
    closes the list empty on tickets like these, writes an id; the adjustment is reported."""
    from hybrid_assets.behaviour.evaluate import load_model
    from hybrid_assets.models.decision import DecisionRule
    from hybrid_assets.models.generation import CITATION_REQUIRED, Decoder
    from hybrid_assets.prompting import ContextPassage, build_messages

    labels = LabelSpace(("neutral",), ("billing", "other"), ("none", "tier_2"))
    model, tokenizer = load_model(None, None)
    decoder = Decoder(tokenizer, model.config.vocab_size, labels, 160)
    passages = [ContextPassage("S1", "guides/billing.md", "Invoices are emailed on the renewal date."),
                ContextPassage("S2", "guides/labels.md", "Labels print at 4x6 inches.")]
    tickets = ["When is my invoice sent?", "Hi", "Why is my label blurry?", "Do you ship to Mars?"]
    rows = decoder.generate(model, [build_messages(t, passages, labels) for t in tickets], [("S1", "S2")] * 4,
                            rule=DecisionRule(0.0))
    for row in rows:
        assert row.decided["decision"] == "answer"
        cited = row.text.split('"citations":', 1)[1].lstrip().lstrip("[").lstrip()
        assert cited.startswith('"S'), row.text  # the list opened with an id, never closed empty
    # what the rule changed is reported with the answer (the base model closed at least one list empty)
    assert any(CITATION_REQUIRED in row.adjustments for row in rows)
