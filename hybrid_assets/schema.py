"""The one response schema: training targets, constrained decoding, validation and the API use it.

The vocabularies (sentiments, categories, escalation levels) are configuration (``labels.json``),
so another company or a public dataset with its own labels plugs in its own. ``response_model``
builds a pydantic model whose JSON schema carries those vocabularies as enums, which is what the
constrained decoder enforces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

# Field order is generation order: short classification fields first, so the long free-text
# fields are conditioned on them.
FIELD_ORDER = (
    "sentiment",
    "category",
    "decision",
    "escalation",
    "citations",
    "resolution",
    "reply",
)

# What the answer does: the one explicit decision every consumer (serving, the API, training targets,
# the evaluation) reads. Fixed, not configurable: the grounding rules below depend on their meaning.
#   answer          the reply answers from the cited passages (at least one citation)
#   clarify         the ticket is unclear; the reply is one clarifying question (cites nothing)
#   not_answerable  the passages do not answer this; the reply says so honestly (cites nothing)
ANSWER, CLARIFY, NOT_ANSWERABLE = "answer", "clarify", "not_answerable"
DECISIONS = (ANSWER, CLARIFY, NOT_ANSWERABLE)


def upgrade_answer(answer):
    """An answer in the older layout (``answerable: bool``) in today's (``decision``); anything else
    unchanged. Behaviour data written before the decision field keeps loading."""
    if isinstance(answer, dict) and "answerable" in answer and "decision" not in answer \
            and isinstance(answer["answerable"], bool):
        answer = dict(answer)
        answer["decision"] = ANSWER if answer.pop("answerable") else NOT_ANSWERABLE
    return answer


# The escalation policy's last rule: a question the documentation does not answer goes to a person.
NO_DOCS_REASON = "Rule 6: the documentation does not answer this question."

NOT_ANSWERABLE_REPLY = (
    "Thanks for reaching out. I checked our documentation and your account details, and they do "
    "not answer this question, so I don't want to guess. I've passed your ticket to a specialist "
    "who will follow up."
)


@dataclass(frozen=True)
class LabelSpace:
    """The configurable vocabularies of the schema."""

    sentiments: tuple[str, ...]
    categories: tuple[str, ...]
    escalation_levels: tuple[str, ...]
    company: str = "the company"
    # Where a ticket the documents don't answer goes. Unset: the first level after "none" in
    # ``escalation_levels`` (the least senior human), or "none" when there is no other level.
    no_docs_level: str | None = None

    def __post_init__(self) -> None:
        for name in ("sentiments", "categories", "escalation_levels"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"label space: '{name}' must list at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"label space: '{name}' has duplicate values: {values}")
        if "none" not in self.escalation_levels:
            raise ValueError("label space: 'escalation_levels' must include 'none'")
        if self.no_docs_level is not None and self.no_docs_level not in self.escalation_levels:
            raise ValueError(f"label space: 'no_docs_level' {self.no_docs_level!r} is not one of the escalation_levels "
                             f"{list(self.escalation_levels)}")

    @property
    def not_answerable_level(self) -> str:
        """The escalation level of the honest "the documents don't answer this" answer."""
        if self.no_docs_level:
            return self.no_docs_level
        return next((level for level in self.escalation_levels if level != "none"), "none")

    @classmethod
    def from_file(cls, path: Path) -> "LabelSpace":
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read label space: {exc}") from exc
        missing = {"sentiments", "categories", "escalation_levels"} - raw.keys()
        if missing:
            raise ValueError(f"{path}: label space is missing field(s) {sorted(missing)}")
        return cls(
            sentiments=tuple(raw["sentiments"]),
            categories=tuple(raw["categories"]),
            escalation_levels=tuple(raw["escalation_levels"]),
            company=raw.get("company", "the company"),
            no_docs_level=raw.get("no_docs_level"),
        )


def _literal(values: tuple[str, ...]):
    return Literal[values]  # type: ignore[valid-type]


@lru_cache(maxsize=16)
def response_model(labels: LabelSpace) -> type[BaseModel]:
    """The pydantic model of one answer for this label space (cached per label space)."""
    strict = ConfigDict(extra="forbid")
    escalation = create_model(
        "Escalation",
        __config__=strict,
        level=(_literal(labels.escalation_levels), Field(description="Escalation level per the policy")),
        reason=(str, Field(max_length=200, description="Why this level, citing the policy rule")),
    )
    return create_model(
        "SupportAnswer",
        __config__=strict,
        sentiment=(_literal(labels.sentiments), Field(description="The customer's sentiment")),
        category=(_literal(labels.categories), Field(description="Issue category")),
        decision=(_literal(DECISIONS), Field(description="answer: the cited context answers the ticket; clarify: "
                  "the ticket is unclear, the reply asks one question; not_answerable: the context does not answer it")),
        escalation=(escalation, Field(description="Escalation decision")),
        citations=(
            list[str],
            Field(max_length=8, description="Ids of the context chunks the reply relies on, e.g. 'S1'"),
        ),
        resolution=(str, Field(max_length=300, description="Recommended next step for the agent")),
        reply=(str, Field(max_length=700, description="Customer-facing reply in the company's tone")),
    )


def not_answerable_escalation(labels: LabelSpace, decided: dict | None = None, reason: str = NO_DOCS_REASON) -> dict:
    """The escalation of an answer the documents don't support. A level the ticket itself triggered
    (security, an outage, a billing dispute: rules that apply with or without documentation) stays;
    "none" (or nothing decided) becomes the label space's not-answerable level."""
    if decided and decided.get("level") in labels.escalation_levels and decided["level"] != "none":
        return {"level": decided["level"], "reason": decided.get("reason") or reason}
    return {"level": labels.not_answerable_level, "reason": reason[:200]}


def escalation_follows_decision(answer: dict, labels: LabelSpace) -> tuple[dict, bool]:
    """The escalation policy ties the level to the decision: "none" means the documentation resolves
    the ticket (rule 5), so an answer that says the documents do not answer it cannot be "none"; it
    goes to the label space's not-answerable level (rule 6), while a level the ticket itself
    triggered (rules 1-4) stays. Returns (answer, whether the level was changed). Every behaviour
    record already follows this (``behaviour/dataset.py`` builds its not-answerable answers with
    ``not_answerable_escalation``); a small model does not always, and its reply is then routed wrong."""
    level = answer["escalation"]["level"]
    if policy_level(answer.get("decision"), level, labels) == level:
        return answer, False
    return {**answer, "escalation": not_answerable_escalation(labels, None)}, True


def policy_level(decision: str | None, level: str | None, labels: LabelSpace) -> str | None:
    """The level ``escalation_follows_decision`` keeps for this decision: "none" under "not answerable"
    becomes the not-answerable level (unless the label space has no other level); anything else stays.
    Also for the labels a cut answer had decided (``models/generation.py``)."""
    if decision == NOT_ANSWERABLE and level == "none":
        return labels.not_answerable_level
    return level


def not_answerable_answer(labels: LabelSpace, *, sentiment: str | None = None, category: str | None = None,
                          escalation: dict | None = None, reason: str = NO_DOCS_REASON,
                          resolution: str | None = None, reply: str = NOT_ANSWERABLE_REPLY) -> dict:
    """The one honest "the documents don't answer this" answer: cites nothing, escalates per the
    label space, keeps whatever labels were already decided. Serving, the fallback, the behaviour
    data defaults and RAFT all build it here."""
    escalation = not_answerable_escalation(labels, escalation, reason)
    # Given labels pass through unchanged (the schema then rejects a bad one: never silently coerced).
    return {
        "sentiment": sentiment if sentiment is not None else
        ("neutral" if "neutral" in labels.sentiments else labels.sentiments[0]),
        "category": category if category is not None else
        ("other" if "other" in labels.categories else labels.categories[-1]),
        "decision": NOT_ANSWERABLE,
        "escalation": escalation,
        "citations": [],
        "resolution": resolution or f"Route to {escalation['level'].replace('_', ' ')}: no retrieved document "
                                    "supports an answer.",
        "reply": reply,
    }


def fallback_answer(labels: LabelSpace, reason: str) -> dict:
    """The honest answer used when no valid answer could be produced (never an invented fact)."""
    return not_answerable_answer(
        labels, reason=reason, resolution="A person should read this ticket; the assistant could not produce a "
        "checked answer.")


def grounding_problem(answer: dict) -> str | None:
    """The grounding rule the prompt states, behaviour data must follow and serving enforces: an
    answer cites what it relies on; a clarifying question or an honest "not answerable" cites nothing."""
    if answer["decision"] == ANSWER and not answer["citations"]:
        return "decision is 'answer' but nothing is cited"
    if answer["decision"] != ANSWER and answer["citations"]:
        return f"decision is {answer['decision']!r} but citations are given"
    return None


def answer_json_schema(labels: LabelSpace) -> dict:
    return response_model(labels).model_json_schema()


def parse_answer(text: str, labels: LabelSpace) -> BaseModel:
    """Validate a JSON string as an answer; raises ``pydantic.ValidationError`` or ``ValueError``."""
    return response_model(labels).model_validate_json(text)


def dump_answer(answer: BaseModel | dict, labels: LabelSpace) -> str:
    """Canonical compact JSON in FIELD_ORDER (the exact training target format)."""
    data = answer if isinstance(answer, dict) else answer.model_dump()
    model = response_model(labels).model_validate(data)
    ordered = {key: model.model_dump()[key] for key in FIELD_ORDER}
    return json.dumps(ordered, ensure_ascii=False, separators=(", ", ": "))
