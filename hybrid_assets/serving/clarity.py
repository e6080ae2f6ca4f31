"""Tickets that cannot be acted on yet: a first message whose only object is a pronoun with nothing before it
to refer to ("It's not working again.", "Can you cancel it for me?", "Why is this happening??").

What is unclear is decided before generation, from the ticket's words, and the decision gate then makes
the model write its clarifying question (``models/decision.DecisionGate``, ``forced``): guessing what
"it" is and answering that is exactly the invented answer the product must not give, and a 135M model
never chose "clarify" on its own (clarification recall 0.00 on the sample company, all configurations).

The rule: no earlier turn in the conversation, at most ``MAX_WORDS`` words, and a referring pronoun
("it", "this", "them", "the thing") that is not the dummy subject of "is it possible ...", "it takes ...".
Measured on the behaviour data's train and dev tickets (the splits it was written on): 12 of the 18
clarify tickets, no other ticket of 359 ("The labels are wrong." and "What's the limit?" stay for the
model); on ClapNQ's 300 dev questions (single-turn search queries), 0 flagged.
"""

from __future__ import annotations

import re

MAX_WORDS = 8
_WORD = re.compile(r"[A-Za-z0-9']+")
_REFERENT = re.compile(r"\b(it|this|them|thing)\b(?!\s+(week|month|year|morning|afternoon|evening|time|quarter)\b)",
                       re.IGNORECASE)
_DUMMY_IT = re.compile(
    r"\b(is|was|will) it (possible|ok|okay|normal|true|safe|free|legit|necessary|required|supported)\b"
    r"|\bit'?s (possible|ok|okay|normal|true|safe|free)\b|\bit (takes|costs|says)\b", re.IGNORECASE)


def unresolved_reference(ticket: str, history: list[dict] | None = None) -> bool:
    """True when the ticket is a short first message that refers to something it never names."""
    if history:
        return False  # an earlier turn may name what "it" is; the model reads the conversation
    if len(_WORD.findall(ticket)) > MAX_WORDS:
        return False
    return bool(_REFERENT.search(ticket)) and not _DUMMY_IT.search(ticket)
