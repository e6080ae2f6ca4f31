"""The one scorer of the answer's decisions, shared by the promotion gate and the evaluation.

Validity and the labels are scored separately: ``json_validity`` is the share of answers completed
within the token budget, and each label accuracy counts what the model *decided*, read from the
answer, or from the grammar-constrained prefix of an answer the budget cut (``models/generation.py``).
So a model that decides well but writes long replies is not scored as if it had decided nothing, and
one that finishes more answers does not score better labels by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DECISIONS = ("sentiment", "category", "escalation_level", "decision")
METRIC_OF = {"sentiment": "sentiment_accuracy", "category": "category_accuracy",
             "escalation_level": "escalation_accuracy", "decision": "decision_accuracy"}


def decisions_of(answer: dict) -> dict:
    """The decision fields of a complete answer, in ``read_decided``'s shape."""
    return {"sentiment": answer["sentiment"], "category": answer["category"], "decision": answer["decision"],
            "escalation_level": answer["escalation"]["level"]}


@dataclass(frozen=True)
class Scored:
    gold: dict  # the gold decisions this item has (a subset of DECISIONS: an intent set has only category)
    decided: dict  # what the model decided (a cut answer: what its prefix had decided)
    complete: bool  # the answer was completed within the token budget


def decision_scores(rows: Sequence[Scored]) -> dict:
    """``json_validity`` over every row; each accuracy over the rows whose gold has that field (None
    when none has it). A field the model never reached counts as wrong."""
    if not rows:
        raise ValueError("no rows to score")
    scores: dict = {"json_validity": sum(row.complete for row in rows) / len(rows)}
    for name in DECISIONS:
        judged = [row for row in rows if row.gold.get(name) is not None]
        hits = sum(row.decided.get(name) == row.gold[name] for row in judged)
        scores[METRIC_OF[name]] = hits / len(judged) if judged else None
    return scores
