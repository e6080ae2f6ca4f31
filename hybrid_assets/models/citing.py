"""An answer cites what it relies on, enforced while it is written, not only checked after.

The decision gate (``models/decision.py``) decides "answer" from the model's calibrated confidence;
a small model then sometimes closes the citations list empty, and the grounding check
(``serving/engine.enforce_grounding``) has to throw the answer away ("ungrounded_answer_replaced":
4 of the 24 sample tickets with the release adapter, one of them the Zebra known-issue ticket the
documents do answer). The grammar cannot say "at least one citation when the decision is answer"
(the two fields are separate), so this logits processor, placed after the grammar mask, does: in a
row whose decision is "answer", a token that would close the citations list with nothing in it is
masked, and the model writes its likeliest retrieved id instead. Nothing changes for the other
decisions, or when the grammar allows nothing else (no passage was retrieved).
"""

from __future__ import annotations

import math
import re

from hybrid_assets.models.decision import TokenPieces, torch_allowed
from hybrid_assets.schema import ANSWER

_ANSWERING = re.compile(r'"decision": ?"' + ANSWER + '"')
_CITATIONS_KEY = '"citations":'
_EMPTY_LIST = re.compile(r"^\s*\[\s*\]")


class AnswerCites:
    """Per row: the text written since the citations key (while no id has begun) and whether the
    decision was "answer". Stateless across ``generate`` calls only by construction: one instance per
    batch (``Decoder.generate`` makes it)."""

    def __init__(self, tokenizer):
        self._piece = TokenPieces(tokenizer)
        self._prompt_length: int | None = None
        self.forced: list[bool] = []  # per row: the likeliest token would have closed the list empty

    def __call__(self, input_ids, scores):
        rows = input_ids.shape[0]
        if self._prompt_length is None:
            self._prompt_length = input_ids.shape[1]
            self._tail = [""] * rows  # recent text, until the decision and the citations key are seen
            self._answering = [False] * rows
            self._list: list[str | None] = [None] * rows  # written since the key; None: not in the field
            self._done = [False] * rows
            self.forced = [False] * rows
        elif input_ids.shape[1] > self._prompt_length:
            for row, token_id in enumerate(input_ids[:, -1].tolist()):
                self._follow(row, self._piece(token_id))
        for row in range(rows):
            written = self._list[row]
            if self._done[row] or written is None or not self._answering[row]:
                continue
            allowed = torch_allowed(scores[row])
            banned = [t for t in allowed if _EMPTY_LIST.match(written + self._piece(t))]
            if banned and len(banned) < len(allowed):  # never mask every token
                if int(scores[row].argmax()) in banned:  # greedy would have closed it empty: report it
                    self.forced[row] = True
                scores[row, banned] = -math.inf
        return scores

    def _follow(self, row: int, piece: str) -> None:
        if self._done[row]:
            return
        if self._list[row] is not None:
            self._list[row] += piece
            if '"' in self._list[row] or "]" in self._list[row]:  # an id has begun, or the list closed
                self._done[row] = True
            return
        text = self._tail[row] + piece
        self._tail[row] = text[-64:]  # enough for a key split over several tokens
        if not self._answering[row] and _ANSWERING.search(text):
            self._answering[row] = True
        if _CITATIONS_KEY in text:
            self._list[row] = text.split(_CITATIONS_KEY, 1)[1]
            if '"' in self._list[row] or "]" in self._list[row]:
                self._done[row] = True
