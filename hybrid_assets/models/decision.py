"""The calibrated decision: answer only when the model is confident enough that the context answers.

Greedy decoding takes the likeliest decision token, and a small fine-tuned model is over-confident in
"answer" (measured: the hybrid abstained on 2 of 26 unanswerable public questions). Under the grammar,
at the point where the answer's ``"decision": "`` has been written, only tokens that start one of the
three values are allowed; their probabilities, summed per value, are the model's own distribution
over the decision. ``DecisionGate`` records that distribution for every row and, given a threshold,
chooses "answer" only when P(answer) >= threshold (else the likelier of clarify / not_answerable),
by masking the other values' tokens. The threshold is chosen on a dev split held out from training
(``behaviour/calibration.py``) and stored in the adapter's lineage; without one the gate only records
(plain greedy).

The decision values start with distinct letters (a / c / n), so a token's value is its first letter:
this holds for every tokenisation the grammar allows.
"""

from __future__ import annotations

import math

from hybrid_assets.schema import ANSWER, DECISIONS

_KEY = '"decision":'
_BY_LETTER = {value[0]: value for value in DECISIONS}
assert len(_BY_LETTER) == len(DECISIONS), "decision values must start with distinct letters"


def choose(probabilities: dict[str, float], answer_threshold: float | None) -> str:
    """The decision the gate takes for one row's distribution (pure: the calibration replays it)."""
    allowed = {value: p for value, p in probabilities.items() if p > 0.0}
    if not allowed:
        return ANSWER
    if answer_threshold is None:
        return max(allowed, key=allowed.get)
    if ANSWER in allowed and (allowed[ANSWER] >= answer_threshold or len(allowed) == 1):
        return ANSWER
    others = {value: p for value, p in allowed.items() if value != ANSWER}
    return max(others, key=others.get)


class DecisionGate:
    """A transformers logits processor, placed after the grammar mask (it reads the masked scores).

    Per row: after ``"decision":`` is written, each allowed token either starts a value (its first
    letter after any quote / space) or only writes the quote / space; the distribution over the values
    is read at the first step that allows value-starting tokens, and from then on tokens that start
    another value than the chosen one are masked, until the value has begun."""

    def __init__(self, tokenizer, answer_threshold: float | None = None):
        self.tokenizer = tokenizer
        self.answer_threshold = answer_threshold
        self.probabilities: list[dict[str, float] | None] = []  # per row, once the decision is reached
        self._tail: list[str] = []  # per row: the end of the generated text
        self._state: list[str] = []  # "before" | "open" (after the key, value not begun) | "done"
        self._chosen: list[str | None] = []
        self._pieces: dict[int, str] = {}
        self._prompt_length: int | None = None

    def _piece(self, token_id: int) -> str:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self.tokenizer.decode([token_id])
        return piece

    def _value_of(self, token_id: int) -> str | None:
        """The decision value a token starts, or None when it writes only a quote / space."""
        return _BY_LETTER.get(self._piece(token_id).lstrip(' "')[:1], "") or None

    def __call__(self, input_ids, scores):
        import torch

        rows = input_ids.shape[0]
        if self._prompt_length is None:  # first step: everything so far is the prompt
            self._prompt_length = input_ids.shape[1]
            self._tail, self._state = [""] * rows, ["before"] * rows
            self._chosen, self.probabilities = [None] * rows, [None] * rows
        elif input_ids.shape[1] > self._prompt_length:
            last = input_ids[:, -1].tolist()
            for row in range(rows):
                if self._state[row] == "done":
                    continue
                self._tail[row] = (self._tail[row] + self._piece(last[row]))[-48:]
                if self._state[row] == "before" and _KEY in self._tail[row]:
                    self._state[row] = "open"
                    self._tail[row] = self._tail[row].split(_KEY, 1)[1]
                if self._state[row] == "open" and self._tail[row].lstrip(' "'):
                    self._state[row] = "done"  # the value has begun: the grammar completes it
        for row in range(rows):
            if self._state[row] != "open":
                continue
            allowed = torch.isfinite(scores[row]).nonzero().flatten().tolist()
            values = {token_id: self._value_of(token_id) for token_id in allowed}
            starting = [token_id for token_id in allowed if values[token_id] is not None]
            if not starting:
                continue  # only the quote / space can be written now
            if self._chosen[row] is None:
                probs = torch.softmax(scores[row][starting].float(), dim=0).tolist()
                mass = dict.fromkeys(DECISIONS, 0.0)
                for token_id, p in zip(starting, probs):
                    mass[values[token_id]] += p
                self.probabilities[row] = mass
                self._chosen[row] = choose(mass, self.answer_threshold)
            if self.answer_threshold is None:
                continue  # record only: greedy picks its own token
            banned = [token_id for token_id in starting if values[token_id] != self._chosen[row]]
            if banned:
                scores[row, banned] = -math.inf
        return scores
