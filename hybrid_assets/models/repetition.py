"""A guard against the loops a small model falls into under greedy decoding ("We're sorry your parcel
was damaged, and we're sorry your parcel was damaged, ...").

Transformers' ``no_repeat_ngram_size`` and ``repetition_penalty`` look at the *prompt* too, so they
would stop the model from copying the retrieved context - the one thing a grounded answer must do.
This processor only looks at the tokens generated for the answer: an n-gram that already occurred in
this answer may not be written again. It subtracts a large finite penalty instead of setting -inf,
and runs after the grammar mask, so when the grammar allows nothing but a repeat, the repeat is still
chosen (the JSON stays valid) rather than an arbitrary token.
"""

from __future__ import annotations

DEFAULT_PENALTY = 50.0


class AnswerNgramGuard:
    """A transformers logits processor: penalise tokens that would repeat an n-gram of this answer."""

    def __init__(self, n: int, penalty: float = DEFAULT_PENALTY):
        if n < 2:
            raise ValueError(f"n must be >= 2, got {n}")
        self.n = n
        self.penalty = penalty
        self._prompt_length: int | None = None
        self._seen: list[dict[tuple[int, ...], set[int]]] = []  # per row: (n-1)-gram -> next tokens

    def __call__(self, input_ids, scores):
        if self._prompt_length is None:  # first step: everything so far is the prompt
            self._prompt_length = input_ids.shape[1]
            self._seen = [{} for _ in range(input_ids.shape[0])]
        generated = input_ids.shape[1] - self._prompt_length
        if generated < self.n - 1:
            return scores
        rows = input_ids[:, -self.n:].tolist() if generated >= self.n else None
        heads = input_ids[:, -(self.n - 1):].tolist()
        for row, seen in enumerate(self._seen):
            if rows is not None:  # record the n-gram that the last token completed
                *head, last = rows[row]
                seen.setdefault(tuple(head), set()).add(last)
            banned = seen.get(tuple(heads[row]))
            if banned:
                scores[row, list(banned)] -= self.penalty
        return scores
