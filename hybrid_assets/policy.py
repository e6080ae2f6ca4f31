"""The escalation policy as data: the decision tree the company's policy document states, applied to the
facts of one request after the model has answered.

Why not leave the level to the model: the tree's inputs are facts a 135M model reads badly or cannot
read at all - the plan and the renewal date in the customer's account record, whether a known issue is
"investigating - ongoing incident", the order of the rules (first match wins). Measured before this
module: the hybrid escalated 10 of 24 held-out sample tickets right, below the base model. Production
support desks route with rules over structured facts and keep the model for what needs reading; so here
the model supplies its readings (sentiment, decision, its own level) and the policy file decides, top to
bottom, exactly as the document says.

The rules live in a JSON file (``data/serving/escalation_policy.json``); level names, plans and trigger
phrases are all data, so another company's policy (or label set) plugs in without code. A rule::

    {"id": "3", "level": "account_manager", "reason": "Rule 3: ...", "when": CONDITION}

A CONDITION is an object whose keys must all hold (an omitted ``when`` always holds):

    "ticket": [regex, ...]          the ticket (or an earlier customer turn) matches one (case-insensitive)
    "not_ticket": [regex, ...]      ... matches none
    "cited": [regex, ...]           the document of a passage the answer cites matches one
    "retrieved": [regex, ...]       the document of a passage retrieved for the request matches one
    "best_retrieved": [regex, ...]  the document of the retrieved passage most similar to the ticket
                                    matches one (the ticket "matches" that document: a known issue, say)
    "account": {field: [values]}    the customer's account record has one of the values in that field
    "renewal_within_days": N        the account renews within N days of the request's date
    "sentiment": [values]           the model's reading of the customer's sentiment
    "decision": [values]            the answer's decision (answer / clarify / not_answerable)
    "model_level": true             the model itself chose this rule's level
    "any": [CONDITION, ...]         at least one holds
    "all": [CONDITION, ...]         every one holds

Pure: no model, no Weaviate (serving gathers the facts, ``serving/engine.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from hybrid_assets.schema import LabelSpace

_LIST_KEYS = ("ticket", "not_ticket", "cited", "retrieved", "best_retrieved", "sentiment", "decision")
_KEYS = frozenset({*_LIST_KEYS, "account", "renewal_within_days", "model_level", "any", "all"})
_PATTERN_KEYS = ("ticket", "not_ticket", "cited", "retrieved", "best_retrieved")


class PolicyError(ValueError):
    """An invalid policy file; the message names the file, the rule and the field."""


@dataclass(frozen=True)
class Facts:
    """What one request tells the policy."""
    ticket: str
    sentiment: str | None = None
    decision: str | None = None
    model_level: str | None = None
    account: Mapping[str, object] | None = None  # the customer's account record (None: no customer / not read)
    # Texts of the documents of the passages the answer cites / of every retrieved passage / of the one
    # most similar to the ticket (a document's status may be in another chunk than the one retrieved;
    # serving passes whole documents where it can read them, else the passages themselves).
    cited: Sequence[str] = ()
    retrieved: Sequence[str] = ()
    best_retrieved: str | None = None
    as_of: date | None = None  # the request's date (renewals are counted from it); None: today


@dataclass(frozen=True)
class Rule:
    id: str
    level: str
    reason: str
    when: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    level: str
    reason: str
    rule: str


def days_until_renewal(account: Mapping[str, object], as_of: date) -> int | None:
    """Days from ``as_of`` to the account's next renewal (None without a readable ``renewal_date``).
    A monthly plan renews every month, so a stored date already past rolls forward month by month."""
    try:
        renewal = date.fromisoformat(str(account.get("renewal_date", "")).strip()[:10])
    except ValueError:
        return None
    if str(account.get("billing_cycle", "")).strip().lower() == "monthly":
        while renewal < as_of:
            month = renewal.month % 12 + 1
            year = renewal.year + (renewal.month == 12)
            renewal = _same_day(year, month, renewal.day)
    return (renewal - as_of).days


def _same_day(year: int, month: int, day: int) -> date:
    for d in (day, 30, 29, 28):  # the 31st of a short month renews on its last day
        try:
            return date(year, month, d)
        except ValueError:
            continue
    raise ValueError(f"no day {day} in {year}-{month}")


class EscalationPolicy:
    def __init__(self, rules: Sequence[Rule], source: str = "policy"):
        if not rules:
            raise PolicyError(f"{source}: the policy has no rules")
        self.rules = tuple(rules)
        self.source = source
        self._compiled = {id(rule): _compile(rule.when) for rule in self.rules}

    @classmethod
    def from_file(cls, path: Path, labels: LabelSpace) -> "EscalationPolicy":
        """Read and check a policy file: every level is one of ``labels``' escalation levels, every
        pattern compiles, every condition key is known; an error names the file, the rule and the field."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PolicyError(f"{path}: cannot read the escalation policy: {exc}") from None
        entries = raw.get("rules") if isinstance(raw, dict) else None
        if not isinstance(entries, list) or not entries:
            raise PolicyError(f"{path}: field 'rules' must be a non-empty list")
        rules = []
        for index, entry in enumerate(entries):
            where = f"{path.name} rule {index}"
            if not isinstance(entry, dict):
                raise PolicyError(f"{where}: expected an object")
            for key in ("id", "level", "reason"):
                if not isinstance(entry.get(key), str) or not entry[key].strip():
                    raise PolicyError(f"{where}: field '{key}' must be a non-empty string")
            where = f"{path.name} rule {entry['id']!r}"
            if entry["level"] not in labels.escalation_levels:
                raise PolicyError(f"{where}: field 'level' {entry['level']!r} is not one of the escalation levels "
                                  f"{list(labels.escalation_levels)}")
            when = entry.get("when", {})
            _check(when, f"{where}: field 'when'")
            rules.append(Rule(entry["id"], entry["level"], entry["reason"][:200], when))
        return cls(rules, path.name)

    def decide(self, facts: Facts) -> Decision:
        """The first rule whose condition holds; the last rule should hold always (the document's
        "anything else"), and when none does the model's own level stands."""
        for rule in self.rules:
            if _holds(self._compiled[id(rule)], facts, rule.level):
                return Decision(rule.level, rule.reason, rule.id)
        return Decision(facts.model_level or "none", "", "")


# -- conditions ---------------------------------------------------------------------------------
def _check(condition, where: str) -> None:
    if not isinstance(condition, dict):
        raise PolicyError(f"{where}: a condition must be an object")
    unknown = set(condition) - _KEYS
    if unknown:
        raise PolicyError(f"{where}: unknown condition key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
    for key in _LIST_KEYS:
        if key in condition and (not isinstance(condition[key], list)
                                 or not all(isinstance(v, str) for v in condition[key])):
            raise PolicyError(f"{where}.{key}: must be a list of strings")
    for key in _PATTERN_KEYS:
        for pattern in condition.get(key, ()):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise PolicyError(f"{where}.{key}: pattern {pattern!r} does not compile: {exc}") from None
    if "account" in condition:
        account = condition["account"]
        if not isinstance(account, dict) or not all(isinstance(v, list) for v in account.values()):
            raise PolicyError(f"{where}.account: must map a field name to a list of values")
    if "renewal_within_days" in condition and not isinstance(condition["renewal_within_days"], int):
        raise PolicyError(f"{where}.renewal_within_days: must be a whole number of days")
    if "model_level" in condition and not isinstance(condition["model_level"], bool):
        raise PolicyError(f"{where}.model_level: must be true or false")
    for key in ("any", "all"):
        if key in condition:
            if not isinstance(condition[key], list) or not condition[key]:
                raise PolicyError(f"{where}.{key}: must be a non-empty list of conditions")
            for i, inner in enumerate(condition[key]):
                _check(inner, f"{where}.{key}[{i}]")


def _compile(condition: Mapping) -> dict:
    compiled = dict(condition)
    for key in _PATTERN_KEYS:
        if key in condition:
            compiled[key] = re.compile("|".join(f"(?:{p})" for p in condition[key]), re.IGNORECASE)
    for key in ("any", "all"):
        if key in condition:
            compiled[key] = [_compile(inner) for inner in condition[key]]
    return compiled


def _holds(condition: Mapping, facts: Facts, level: str) -> bool:
    if "ticket" in condition and not condition["ticket"].search(facts.ticket):
        return False
    if "not_ticket" in condition and condition["not_ticket"].search(facts.ticket):
        return False
    if "cited" in condition and not any(condition["cited"].search(text) for text in facts.cited):
        return False
    if "retrieved" in condition and not any(condition["retrieved"].search(text) for text in facts.retrieved):
        return False
    if "best_retrieved" in condition and not (facts.best_retrieved and condition["best_retrieved"].search(facts.best_retrieved)):
        return False
    if "sentiment" in condition and facts.sentiment not in condition["sentiment"]:
        return False
    if "decision" in condition and facts.decision not in condition["decision"]:
        return False
    if "model_level" in condition and (facts.model_level == level) != condition["model_level"]:
        return False
    if "account" in condition:
        if facts.account is None:
            return False
        for name, values in condition["account"].items():
            if str(facts.account.get(name, "")).strip().lower() not in {str(v).lower() for v in values}:
                return False
    if "renewal_within_days" in condition:
        days = days_until_renewal(facts.account, facts.as_of or date.today()) if facts.account else None
        if days is None or not 0 <= days <= condition["renewal_within_days"]:
            return False
    if "all" in condition and not all(_holds(inner, facts, level) for inner in condition["all"]):
        return False
    if "any" in condition and not any(_holds(inner, facts, level) for inner in condition["any"]):
        return False
    return True
