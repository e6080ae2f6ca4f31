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


class PreferClosing:
    """A model that wants to cite nothing: after the grammar mask, every token that closes a list gets a
    large bonus (the release adapter did this on 4 of 24 sample tickets; the base model rarely does)."""

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer = tokenizer
        self.closing = [i for i in range(vocab_size) if tokenizer.decode([i]).lstrip().startswith(("]", "[]", "[ ]"))]

    def __call__(self, input_ids, scores):
        for row in range(input_ids.shape[0]):
            recent = self.tokenizer.decode(input_ids[row, -6:].tolist()).rstrip()
            if recent.endswith(('"citations":', '"citations": [', '"citations":[')):
                scores[row, self.closing] += 100.0  # masked (-inf) tokens stay masked
        return scores


@pytest.mark.integration
def test_answers_decoded_by_the_real_model_cite_a_retrieved_passage(monkeypatch):
    """Real model, tokenizer and grammar, the decision forced to "answer" (threshold 0) and the model
    pushed to close its citations empty: without the rule it does, with it the list opens with a
    retrieved id and the adjustment is reported."""
    from hybrid_assets.behaviour.evaluate import load_model
    from hybrid_assets.models.decision import DecisionRule
    from hybrid_assets.models.generation import CITATION_REQUIRED, Decoder
    from hybrid_assets.prompting import ContextPassage, build_messages

    labels = LabelSpace(("neutral",), ("billing", "other"), ("none", "tier_2"))
    model, tokenizer = load_model(None, None)
    decoder = Decoder(tokenizer, model.config.vocab_size, labels, 160)
    bias = PreferClosing(tokenizer, model.config.vocab_size)
    processors = Decoder.processors
    monkeypatch.setattr(Decoder, "processors", lambda self, citable, gate=None, cites=None, budget=None: [
        *processors(self, citable, gate, None, budget), bias, *([cites] if cites is not None else [])])
    passages = [ContextPassage("S1", "guides/billing.md", "Invoices are emailed on the renewal date."),
                ContextPassage("S2", "guides/labels.md", "Labels print at 4x6 inches.")]
    conversations = [build_messages(t, passages, labels) for t in ("When is my invoice sent?", "Why is my label blurry?")]

    def cited(row) -> str:
        assert row.decided["decision"] == "answer", row.text
        return row.text.split('"citations":', 1)[1].lstrip()

    monkeypatch.setattr(AnswerCites, "__call__", lambda self, input_ids, scores: scores)  # the rule off
    assert all(cited(row).startswith("[]") for row in decoder.generate(
        model, conversations, [("S1", "S2")] * 2, rule=DecisionRule(0.0)))
    monkeypatch.undo()
    monkeypatch.setattr(Decoder, "processors", lambda self, citable, gate=None, cites=None, budget=None: [
        *processors(self, citable, gate, None, budget), bias, *([cites] if cites is not None else [])])
    rows = decoder.generate(model, conversations, [("S1", "S2")] * 2, rule=DecisionRule(0.0))
    for row in rows:
        assert cited(row).lstrip("[").lstrip().startswith('"S'), row.text
        assert CITATION_REQUIRED in row.adjustments
