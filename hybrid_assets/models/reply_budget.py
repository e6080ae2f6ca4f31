"""A reply ends at a sentence, inside its budget: never cut by the token limit, never a loop of asides.

A small model sometimes keeps a reply going past what it has to say ("I've passed your ticket to our
Tier 2 team ..." re-worded four times) until the token budget cuts the answer mid-word; the answer is
then invalid JSON and the ticket gets no reply at all (the sample company, 2026-12-04: 1 of 24 hybrid
answers). The grammar bounds the reply's characters, not its sentences, and cannot see the token
budget. This logits processor, placed after the grammar mask, closes the reply string (the grammar
then closes the object) when, inside the reply:

* it has ``max_sentences`` complete sentences (the behaviour data's replies have 2 to 5; the tone
  guide: answer in the first two sentences, then the next step), or
* the tokens left are within ``reserve`` of the budget and the reply has just ended a sentence, or
* the tokens left are only what closing needs (``CLOSING_TOKENS``), wherever the reply is.

"Closing" masks every allowed token that does not begin with the quote; inside a JSON string the
grammar allows a bare quote only as its end. Nothing is masked when no such token is allowed.
"""

from __future__ import annotations

import math
import re

from hybrid_assets.models.decision import TokenPieces, torch_allowed

_REPLY_KEY = re.compile(r'"reply": ?"')
# A terminator followed by a space or an escaped newline (JSON text): the next sentence may begin.
_SENTENCE_END = re.compile(r'[.!?](?=\s|\\n)')
CLOSING_TOKENS = 4  # the quote, the brace, end of sequence, one spare
DEFAULT_MAX_SENTENCES = 5
DEFAULT_RESERVE = 48  # tokens: about one more sentence


def sentences_ended(reply: str) -> int:
    """Complete sentences in a reply written so far (a terminator at the very end counts too)."""
    return len(_SENTENCE_END.findall(reply)) + (1 if reply.rstrip().endswith((".", "!", "?")) and
                                                not reply.endswith((" ", "\n")) else 0)


class ReplyBudget:
    """Per row: the reply written so far (None until its key is seen). ``closed[row]`` says why a row's
    reply was closed (``"sentences"`` or ``"tokens"``), None when the model closed it itself. One
    instance per batch (``Decoder.generate`` makes it)."""

    def __init__(self, tokenizer, max_new_tokens: int, max_sentences: int = DEFAULT_MAX_SENTENCES,
                 reserve: int = DEFAULT_RESERVE):
        if max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
        self._piece = TokenPieces(tokenizer)
        self.max_new_tokens = max_new_tokens
        self.max_sentences = max_sentences
        self.reserve = reserve
        self._prompt_length: int | None = None
        self.closed: list[str | None] = []

    def __call__(self, input_ids, scores):
        rows = input_ids.shape[0]
        if self._prompt_length is None:
            self._prompt_length = input_ids.shape[1]
            self._tail = [""] * rows
            self._reply: list[str | None] = [None] * rows
            self._done = [False] * rows
            self.closed = [None] * rows
        elif input_ids.shape[1] > self._prompt_length:
            for row, token_id in enumerate(input_ids[:, -1].tolist()):
                self._follow(row, self._piece(token_id))
        left = self.max_new_tokens - (input_ids.shape[1] - self._prompt_length)
        for row in range(rows):
            reply = self._reply[row]
            if self._done[row] or reply is None:
                continue
            reason = self._reason(reply, left)
            if reason is None:
                continue
            allowed = torch_allowed(scores[row])
            closing = [t for t in allowed if self._piece(t).startswith('"')]
            if not closing:
                continue
            if int(scores[row].argmax()) not in closing:  # the model would have gone on: say so
                self.closed[row] = reason
            banned = [t for t in allowed if t not in set(closing)]
            if banned:
                scores[row, banned] = -math.inf
        return scores

    def _reason(self, reply: str, left: int) -> str | None:
        if left <= CLOSING_TOKENS:
            return "tokens"
        at_sentence_end = reply.rstrip().endswith((".", "!", "?")) and bool(reply.strip())
        if not at_sentence_end:
            return None
        if sentences_ended(reply) >= self.max_sentences:
            return "sentences"
        return "tokens" if left <= self.reserve else None

    def _follow(self, row: int, piece: str) -> None:
        if self._done[row]:
            return
        if self._reply[row] is not None:
            reply = self._reply[row] + piece
            # An unescaped quote ends the string; the grammar writes an inner quote as \".
            end = re.search(r'(?<!\\)"', reply)
            if end:
                self._done[row] = True
            self._reply[row] = reply
            return
        text = self._tail[row] + piece
        self._tail[row] = text[-64:]
        match = _REPLY_KEY.search(text)
        if match:
            self._reply[row] = text[match.end():]
            if re.search(r'(?<!\\)"', self._reply[row]):
                self._done[row] = True
