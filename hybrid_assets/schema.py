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
    "answerable",
    "escalation",
    "citations",
    "resolution",
    "reply",
)

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

    def __post_init__(self) -> None:
        for name in ("sentiments", "categories", "escalation_levels"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"label space: '{name}' must list at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"label space: '{name}' has duplicate values: {values}")
        if "none" not in self.escalation_levels:
            raise ValueError("label space: 'escalation_levels' must include 'none'")

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
        answerable=(bool, Field(description="False when the provided context does not answer the ticket")),
        escalation=(escalation, Field(description="Escalation decision")),
        citations=(
            list[str],
            Field(max_length=8, description="Ids of the context chunks the reply relies on, e.g. 'S1'"),
        ),
        resolution=(str, Field(max_length=300, description="Recommended next step for the agent")),
        reply=(str, Field(max_length=700, description="Customer-facing reply in the company's tone")),
    )


def fallback_answer(labels: LabelSpace, reason: str) -> dict:
    """The honest answer used when no valid answer could be produced (never an invented fact)."""
    level = "tier_2" if "tier_2" in labels.escalation_levels else "none"
    return {
        "sentiment": "neutral" if "neutral" in labels.sentiments else labels.sentiments[0],
        "category": "other" if "other" in labels.categories else labels.categories[-1],
        "answerable": False,
        "escalation": {"level": level, "reason": reason[:200]},
        "citations": [],
        "resolution": "A person should read this ticket; the assistant could not produce a checked answer.",
        "reply": NOT_ANSWERABLE_REPLY,
    }


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
