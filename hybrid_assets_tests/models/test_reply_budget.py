"""A reply ends at a sentence inside its budget (models/reply_budget.py): a toy vocabulary for the rule,
the real model and grammar for the effect."""

from __future__ import annotations

import math

import pytest
import torch

from hybrid_assets.models.reply_budget import CLOSING_TOKENS, ReplyBudget, finished_reply, sentences_ended
from hybrid_assets.schema import LabelSpace

SIGNATURE = "— The X Support Team"
PIECES = ['{"resolution": "x", "reply": "', "Hi.", " We", " checked", ".", '"', '"}', "<pad>", ' "', "\\n\\n",
          SIGNATURE]


class _Pieces:
    def decode(self, ids):
        return "".join(PIECES[i] for i in ids)

    def encode(self, text, add_special_tokens=False):
        assert text == "\\n\\n" + SIGNATURE, text  # the sign-off as JSON string text
        return [PIECES.index("\\n\\n"), PIECES.index(SIGNATURE)]


def _step(budget: ReplyBudget, ids: list[int], allowed: list[str], prefer: str) -> str:
    scores = torch.full((1, len(PIECES)), -math.inf)
    for piece in allowed:
        scores[0, PIECES.index(piece)] = 5.0 if piece == prefer else 0.0
    chosen = PIECES[int(budget(torch.tensor([ids]), scores).argmax())]
    ids.append(PIECES.index(chosen))
    return chosen


def _started(budget: ReplyBudget) -> list[int]:
    ids = [PIECES.index("<pad>")]
    budget(torch.tensor([ids]), torch.zeros(1, len(PIECES)))  # the prompt step
    ids.append(0)  # the reply key has been written
    return ids


@pytest.mark.parametrize("reply, expected", [("", 0), ("Hi", 0), ("Hi.", 1), ("Hi. We", 1), ("Hi. We checked.", 2),
                                             ("Hi!\\nWe did? Yes", 2), ("Version 4.5 is out", 0)])
def test_sentences_are_counted_at_their_terminators(reply, expected):
    assert sentences_ended(reply) == expected


def test_the_reply_closes_once_it_has_its_sentences_and_not_before():
    budget = ReplyBudget(_Pieces(), max_new_tokens=100, max_sentences=2)
    ids = _started(budget)
    inside = ["Hi.", " We", " checked", ".", '"']
    assert _step(budget, ids, inside, "Hi.") == "Hi."  # one sentence: the model goes on
    assert _step(budget, ids, inside, " We") == " We"
    assert _step(budget, ids, inside, " checked") == " checked"  # mid-sentence: never closed
    assert _step(budget, ids, inside, ".") == "."
    assert budget.closed == [None]
    assert _step(budget, ids, inside, " We") == '"'  # two sentences written: the string is closed
    assert budget.closed == ["sentences"]
    assert _step(budget, ids, ['"}', " We"], " We") == " We"  # after the reply nothing is touched


def test_near_the_token_limit_the_reply_closes_at_its_next_sentence_end():
    budget = ReplyBudget(_Pieces(), max_new_tokens=20, max_sentences=5, reserve=18)
    ids = _started(budget)  # 1 token generated: 19 left
    inside = ["Hi.", " We", " checked", ".", '"']
    assert _step(budget, ids, inside, " We") == " We"
    assert _step(budget, ids, inside, " checked") == " checked"  # 18 left, but mid-sentence
    assert _step(budget, ids, inside, ".") == "."
    assert _step(budget, ids, inside, " We") == '"'  # within the reserve, at a sentence end
    assert budget.closed == ["tokens"]


def test_at_the_last_moment_the_reply_closes_wherever_it_is():
    budget = ReplyBudget(_Pieces(), max_new_tokens=CLOSING_TOKENS + 2, max_sentences=5, reserve=0)
    ids = _started(budget)
    inside = ["Hi.", " We", " checked", ".", '"']
    assert _step(budget, ids, inside, " We") == " We"
    assert _step(budget, ids, inside, " checked") == '"'  # only what closing needs is left
    assert budget.closed == ["tokens"]


def test_a_model_that_closes_by_itself_is_not_reported_and_nothing_is_masked_without_a_closing_token():
    budget = ReplyBudget(_Pieces(), max_new_tokens=100, max_sentences=1)
    ids = _started(budget)
    assert _step(budget, ids, ["Hi.", '"'], "Hi.") == "Hi."
    assert _step(budget, ids, [" We", " checked"], " We") == " We"  # no closing token allowed: untouched
    assert _step(budget, ids, ['"', " We"], '"') == '"' and budget.closed == [None]
    with pytest.raises(ValueError, match="max_sentences"):
        ReplyBudget(_Pieces(), 10, max_sentences=0)


def test_the_reply_is_signed_before_it_closes_unless_it_is_signed_already():
    budget = ReplyBudget(_Pieces(), max_new_tokens=100, max_sentences=1, signature=SIGNATURE)
    ids = _started(budget)
    everything = ["Hi.", " We", '"', "\\n\\n", SIGNATURE]
    assert _step(budget, ids, everything, "Hi.") == "Hi."
    assert _step(budget, ids, everything, " We") == "\\n\\n"  # one sentence: the sign-off is forced
    assert _step(budget, ids, everything, " We") == SIGNATURE
    assert _step(budget, ids, everything, " We") == '"'
    assert budget.closed == ["sentences"]

    signed = ReplyBudget(_Pieces(), max_new_tokens=100, max_sentences=1, signature=SIGNATURE)
    ids = _started(signed)
    for piece in ("Hi.", "\\n\\n", SIGNATURE):
        assert _step(signed, ids, everything, piece) == piece  # written by the model: not forced
    assert signed.closed == [None]


def test_a_sign_off_the_grammar_does_not_allow_here_gives_way_to_the_closing_quote():
    budget = ReplyBudget(_Pieces(), max_new_tokens=100, max_sentences=1, signature=SIGNATURE)
    ids = _started(budget)
    assert _step(budget, ids, ["Hi.", '"'], "Hi.") == "Hi."
    assert _step(budget, ids, [" We", '"'], " We") == '"'  # the sign-off is not allowed: closed as it is
    assert budget.closed == ["sentences"]


def test_the_reply_is_finished_before_its_character_bound():
    from hybrid_assets.models.reply_budget import CHAR_MARGIN

    # " We" is 3 characters: a bound that leaves room for the margin and a few tokens only
    budget = ReplyBudget(_Pieces(), max_new_tokens=100, max_sentences=5, max_chars=CHAR_MARGIN + 6)
    ids = _started(budget)
    inside = ["Hi.", " We", " checked", ".", '"']
    assert _step(budget, ids, inside, " We") == " We"
    assert _step(budget, ids, inside, " We") == " We"
    assert _step(budget, ids, inside, " We") == '"'  # 6 written: within the margin of the bound
    assert budget.closed == ["length"]


@pytest.mark.parametrize("reply, expected", [
    ("Hi. We checked the", "Hi."),
    (f"Hi. We checked the\n\n{SIGNATURE}", f"Hi.\n\n{SIGNATURE}"),
    (f"Hi. We checked.\n\n{SIGNATURE}", f"Hi. We checked.\n\n{SIGNATURE}"),
    ("no sentence ended", "no sentence ended"),
])
def test_a_reply_finished_mid_sentence_loses_that_sentence(reply, expected):
    assert finished_reply(reply, SIGNATURE) == expected


class NeverClose:
    """A model that never wants to end its reply: inside the reply string, every token beginning with a
    quote is pushed down hard (masked tokens stay masked). The release adapter did this on one sample
    ticket, re-wording the same hand-off until the token limit cut the answer."""

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer = tokenizer
        self.quotes = [i for i in range(vocab_size) if tokenizer.decode([i]).startswith('"')]

    def __call__(self, input_ids, scores):
        for row in range(input_ids.shape[0]):
            text = self.tokenizer.decode(input_ids[row, -200:].tolist())
            if '"reply":' in text and not text.rstrip().endswith("}"):
                scores[row, self.quotes] -= 1000.0
        return scores


@pytest.mark.integration
def test_the_real_model_pushed_to_ramble_ends_its_reply_at_a_sentence_and_the_answer_parses(monkeypatch):
    """Real model, tokenizer and grammar; the model is pushed never to close its reply. Without the
    budget the token limit cuts the answer (it does not parse); with it every answer parses, its reply
    ends with a sentence's terminator, within the sentence budget, and the adjustment is reported."""
    from hybrid_assets.behaviour.evaluate import load_model
    from hybrid_assets.models.generation import REPLY_CLOSED, Decoder
    from hybrid_assets.prompting import ContextPassage, build_messages, sign_off

    labels = LabelSpace(("neutral",), ("billing", "other"), ("none", "tier_2"))
    model, tokenizer = load_model(None, None)
    push = NeverClose(tokenizer, model.config.vocab_size)
    processors = Decoder.processors
    # the push goes after the grammar and before the budget, as a rambling model's own logits would
    monkeypatch.setattr(Decoder, "processors", lambda self, citable, gate=None, cites=None, budget=None: [
        *processors(self, citable, gate, cites, None), push, *([budget] if budget is not None else [])])
    passages = [ContextPassage("S1", "guides/billing.md", "Invoices are emailed on the renewal date.")]
    conversations = [build_messages("When is my invoice sent?", passages, labels)]

    unbounded = Decoder(tokenizer, model.config.vocab_size, labels, 120, reply_max_sentences=None)
    assert all(row.answer is None for row in unbounded.generate(model, conversations, [("S1",)]))

    bounded = Decoder(tokenizer, model.config.vocab_size, labels, 120, reply_max_sentences=2)
    for row in bounded.generate(model, conversations, [("S1",)]):
        assert row.answer is not None, row.text
        reply = row.answer["reply"]
        body = reply[: -len(sign_off(labels.company))].rstrip()
        assert body.endswith((".", "!", "?")) or body.count(".") == 0, reply  # ends at a sentence
        assert sentences_ended(reply) <= 2, reply
        assert reply.endswith(sign_off(labels.company)), reply
        assert set(row.adjustments) & set(REPLY_CLOSED.values()), row.adjustments
