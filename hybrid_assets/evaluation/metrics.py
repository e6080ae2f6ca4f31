"""Pure metric functions (no model, no Weaviate): each takes gold and predicted values."""

from __future__ import annotations

import re
from collections import Counter

_TOKEN = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
# The sign-off and greeting carry no answer content; leaving them in inflates F1 for any reply.
_BOILERPLATE = re.compile(r"—\s*the \w+ support team|^(hi|hello|thanks|thank you)[^.]*[.,]", re.I | re.M)


def answer_tokens(text: str) -> list[str]:
    return _TOKEN.findall(_BOILERPLATE.sub(" ", text).lower())


def token_f1(gold: str, predicted: str) -> float:
    """SQuAD-style token F1 between two replies (lower-cased word tokens, boilerplate removed)."""
    g, p = answer_tokens(gold), answer_tokens(predicted)
    if not g and not p:
        return 1.0
    common = sum((Counter(g) & Counter(p)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def precision_recall_f1(true_positive: int, predicted_positive: int, actual_positive: int) -> dict:
    precision = true_positive / predicted_positive if predicted_positive else 0.0
    recall = true_positive / actual_positive if actual_positive else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def decision_class_scores(gold: list[str], predicted: list[str | None], positive: str) -> dict:
    """Precision / recall / F1 of one decision class (``"not_answerable"``: abstention; ``"clarify"``:
    clarification) against the gold decisions. A missing prediction never counts as the class."""
    pairs = list(zip(gold, predicted, strict=True))
    tp = sum(1 for g, p in pairs if g == positive and p == positive)
    predicted_positive = sum(1 for _, p in pairs if p == positive)
    actual = sum(1 for g, _ in pairs if g == positive)
    return precision_recall_f1(tp, predicted_positive, actual)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def repeats_a_run(reply: str, n: int = 8) -> bool:
    """True when the reply loops: it repeats a run of ``n`` words, or a sentence (of 3+ words) it
    already said - the loops greedy decoding falls into ("... and we're sorry, and we're sorry ...")."""
    words = reply.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if len(grams) != len(set(grams)):
        return True
    sentences = [" ".join(answer_tokens(s)) for s in _SENTENCE_END.split(reply)]
    sentences = [s for s in sentences if len(s.split()) >= 3]
    return len(sentences) != len(set(sentences))


def set_precision_recall(gold: set[str], predicted: set[str]) -> tuple[float | None, float | None]:
    """Precision is undefined (None) with no prediction, recall with no gold item."""
    hit = len(gold & predicted)
    return (hit / len(predicted) if predicted else None, hit / len(gold) if gold else None)


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
