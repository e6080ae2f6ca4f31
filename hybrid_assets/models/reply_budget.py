"""A reply ends at a sentence, signed, inside its budget: never cut by the token limit, never a loop.

A small model sometimes keeps a reply going past what it has to say ("I've passed your ticket to our
Tier 2 team ..." re-worded four times) until the token budget cuts the answer mid-word; the answer is
then invalid JSON and the ticket gets no reply at all (the sample company, 2026-12-04: 1 of 24 hybrid
answers; 2 of 24 replies reached the sign-off the tone guide asks for). The grammar bounds the reply's
characters, not its sentences, and cannot see the token budget. This logits processor, placed after
the grammar mask, finishes the reply - the sign-off (``prompting.sign_off``, one token at a time),
then the closing quote (the grammar then closes the object) - when, inside the reply:

* it has ``max_sentences`` complete sentences (the behaviour data's replies have 2 to 5; the tone
  guide: answer in the first two sentences, then the next step), or
* the tokens left are within ``reserve`` of the budget and the reply has just ended a sentence, or
* the tokens left are only what finishing needs, wherever the reply is (``finished_reply`` then drops
  the unfinished sentence);
* the same two for the reply's character bound (``max_chars``, the schema's: the grammar cannot hold
  it, see ``models/constrained.py``).

Each forced token must be one the grammar allows in this row; when it is not (the reply's character
bound, say), the processor closes the string instead. A reply that already holds the sign-off is
only closed. Nothing is masked when no closing token is allowed.
"""

from __future__ import annotations

import json
import math
import re

from hybrid_assets.models.decision import TokenPieces, torch_allowed

_REPLY_KEY = re.compile(r'"reply": ?"')
# A terminator followed by a space or an escaped newline (JSON text): the next sentence may begin.
_SENTENCE_END = re.compile(r'[.!?](?=\s|\\n)')
_TERMINATORS = (".", "!", "?")
CLOSING_TOKENS = 4  # the quote, the brace, end of sequence, one spare
DEFAULT_MAX_SENTENCES = 5
DEFAULT_RESERVE = 48  # tokens: about one more sentence
CHAR_RESERVE = 160  # characters: about one more sentence
CHAR_MARGIN = 32  # characters: more than one token writes
SENTENCES, TOKENS, LENGTH = "sentences", "tokens", "length"  # why a reply was finished


def sentences_ended(reply: str) -> int:
    """Complete sentences in a reply written so far (a terminator at the very end counts too)."""
    return len(_SENTENCE_END.findall(reply)) + (1 if reply.rstrip().endswith(_TERMINATORS) and
                                                not reply.endswith((" ", "\n")) else 0)


def finished_reply(reply: str, signature: str | None) -> str:
    """A reply the budget finished mid-sentence, without that sentence (kept when nothing else is left)."""
    body, signed = reply, ""
    if signature and reply.rstrip().endswith(signature):
        cut = reply.rstrip().rfind(signature)
        body, signed = reply[:cut].rstrip(), reply[cut:]
    if body.endswith(_TERMINATORS):
        return reply
    last = max(body.rfind(t) for t in _TERMINATORS)
    if last < 0:
        return reply
    return body[: last + 1] + ("\n\n" + signed if signed else "")


class ReplyBudget:
    """Per row: the reply written so far (None until its key is seen) and the tokens still to force.
    ``closed[row]`` says why a row's reply was finished (``SENTENCES`` / ``TOKENS``), None when the
    model finished it itself. One instance per batch (``Decoder.generate`` makes it)."""

    def __init__(self, tokenizer, max_new_tokens: int, max_sentences: int = DEFAULT_MAX_SENTENCES,
                 reserve: int = DEFAULT_RESERVE, signature: str | None = None, max_chars: int | None = None):
        if max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
        self._piece = TokenPieces(tokenizer)
        self.max_new_tokens = max_new_tokens
        self.max_sentences = max_sentences
        self.reserve = reserve
        self.signature = signature
        self.max_chars = max_chars
        # The sign-off as JSON string text (the newlines escaped), after a blank line.
        tail = json.dumps("\n\n" + signature, ensure_ascii=False)[1:-1] if signature else ""
        self._tail = tokenizer.encode(tail, add_special_tokens=False) if tail else []
        self._tail_chars = len(tail)
        self._prompt_length: int | None = None
        self.closed: list[str | None] = []

    def __call__(self, input_ids, scores):
        rows = input_ids.shape[0]
        if self._prompt_length is None:
            self._prompt_length = input_ids.shape[1]
            self._recent = [""] * rows
            self._reply: list[str | None] = [None] * rows
            self._done = [False] * rows
            self._queue: list[list[int] | None] = [None] * rows  # None: not finishing; []: the quote is next
            self._why: list[str | None] = [None] * rows
            self.closed = [None] * rows
        elif input_ids.shape[1] > self._prompt_length:
            for row, token_id in enumerate(input_ids[:, -1].tolist()):
                self._follow(row, self._piece(token_id))
        left = self.max_new_tokens - (input_ids.shape[1] - self._prompt_length)
        for row in range(rows):
            reply = self._reply[row]
            if self._done[row] or reply is None:
                continue
            if self._queue[row] is None:
                reason = self._reason(reply, left)
                if reason is None:
                    continue
                signed = self.signature is not None and self.signature in reply
                self._queue[row] = [] if signed else list(self._tail)
                self._why[row] = reason
            self._force(row, scores)
        return scores

    def _force(self, row: int, scores) -> None:
        """Mask all but the next token of the sign-off, or all but the closing quote once it is written."""
        allowed = torch_allowed(scores[row])
        queue = self._queue[row]
        if queue and queue[0] in allowed:
            keep = [queue[0]]
        else:
            keep = [t for t in allowed if self._piece(t).startswith('"')]
            if not keep:  # the grammar allows no end here: wait for the next sentence end
                self._queue[row] = None
                return
        if int(scores[row].argmax()) not in keep:  # the model would have gone on: report it
            self.closed[row] = self._why[row]
        banned = sorted(set(allowed) - set(keep))
        if banned:
            scores[row, banned] = -math.inf
        if queue and keep == [queue[0]]:
            queue.pop(0)
        else:
            self._queue[row] = []  # the string closes now (the sign-off could not be written here)

    def _reason(self, reply: str, left: int) -> str | None:
        # ``reply`` is JSON string text: never shorter than the reply it decodes to.
        room = self.max_chars - len(reply) - self._tail_chars if self.max_chars else None
        if left <= CLOSING_TOKENS + len(self._tail):
            return TOKENS
        if room is not None and room <= CHAR_MARGIN:
            return LENGTH
        if not (reply.rstrip().endswith(_TERMINATORS) and reply.strip()):
            return None
        if sentences_ended(reply) >= self.max_sentences:
            return SENTENCES
        if left <= self.reserve + len(self._tail):
            return TOKENS
        return LENGTH if room is not None and room <= CHAR_RESERVE else None

    def _follow(self, row: int, piece: str) -> None:
        if self._done[row]:
            return
        if self._reply[row] is not None:
            self._reply[row] += piece
            # An unescaped quote ends the string (the grammar writes an inner quote as \").
            if re.search(r'(?<!\\)"', self._reply[row]):
                self._done[row] = True
            return
        text = self._recent[row] + piece
        self._recent[row] = text[-64:]
        match = _REPLY_KEY.search(text)
        if match:
            self._reply[row] = text[match.end():]
            if re.search(r'(?<!\\)"', self._reply[row]):
                self._done[row] = True
