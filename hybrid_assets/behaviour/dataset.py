"""Behaviour data: load, validate, deduplicate, split, version.

Two formats live side by side in one folder (every ``*.jsonl`` and ``*.csv`` is read):

- ``*.jsonl`` tickets, one JSON object a line:
  ``{"id", "ticket", "customer_id" (str|null), "context": [{"id": "S1", "source", "text"}], "answer": {...}}``
  where ``answer`` follows ``schema.response_model(labels)``.
- ``*.csv`` labelled intents with the header ``text,category``. Intents carry only a category, so the
  rest of the target is filled from ``IntentDefaults`` (see there for the choices and why).

Validation collects *all* problems (file, line, reason) instead of stopping at the first, so the
Dagster asset can show every bad record at once; bad records are skipped, good ones are kept.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from hybrid_assets.models.figures import check_figures, label_names
from hybrid_assets.prompting import ACCOUNT_SOURCE, sign_off
from hybrid_assets.schema import (NOT_ANSWERABLE_REPLY, LabelSpace, dump_answer, grounding_problem, not_answerable_answer,
                                  response_model, upgrade_answer)

DATA_SUFFIXES = (".jsonl", ".csv")
LABELS_FILE = "labels.json"
DEFAULT_EVAL_FRACTION = 0.15
DEFAULT_DEV_FRACTION = 0.1
CSV_COLUMNS = ("text", "category")


@dataclass(frozen=True)
class ContextItem:
    id: str
    source: str
    text: str


@dataclass(frozen=True)
class BehaviourRecord:
    """One training example. ``target`` is the canonical answer JSON (``schema.dump_answer``)."""

    id: str
    ticket: str
    customer_id: str | None
    context: tuple[ContextItem, ...]
    target: str
    origin: str  # "file:line", for messages that point back at the data
    # When an agent reviewed this example (the console's feedback records carry ``review.reviewed_at``);
    # None for authored data. A review of a ticket supersedes the authored example and earlier reviews.
    reviewed_at: str | None = None
    # Earlier turns of the conversation ((role, content), ...), as the console's reviewed examples carry
    # them: the prompt is rebuilt with them, so training sees what the model saw when it answered.
    history: tuple[tuple[str, str], ...] = ()

    @property
    def answer(self) -> dict:
        return json.loads(self.target)

    @property
    def dedupe_key(self) -> tuple[str, str | None]:
        return normalise_ticket(self.ticket), self.customer_id


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 = the file as a whole
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class BehaviourDataset:
    records: tuple[BehaviourRecord, ...]
    problems: tuple[Problem, ...]
    duplicates: tuple[str, ...]  # origins of the dropped copies
    files: tuple[Path, ...]
    version: str


@dataclass(frozen=True)
class IntentDefaults:
    """The target for an intent-CSV row, which labels only the category.

    An intent row has no retrieved context, so by our own prompt rules it is not answerable, cites
    nothing, and - per the escalation policy's last rule ("a question the documentation does not
    answer") - goes to the label space's not-answerable level (``LabelSpace.not_answerable_level``).
    That matches how the ticket data treats unanswerable questions, so the two sources never teach
    contradicting targets. Sentiment is "neutral": the rows carry no sentiment label.
    """

    sentiment: str = "neutral"
    escalation_reason: str = "Rule 6: no documentation was provided that answers this question."

    def answer(self, category: str, labels: LabelSpace) -> dict:
        level = labels.not_answerable_level.replace("_", " ")
        return not_answerable_answer(
            labels, sentiment=self.sentiment, category=category, reason=self.escalation_reason,
            resolution=f"{level[:1].upper()}{level[1:]} to answer the {category.replace('_', ' ')} question.",
            reply=f"{NOT_ANSWERABLE_REPLY}\n\n{sign_off(labels.company)}",
        )


def normalise_ticket(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


# -- files and versions -------------------------------------------------------------------------
def find_behaviour_files(folder: Path) -> list[Path]:
    """Every file that defines the behaviour: data files plus ``labels.json`` (the vocabularies are in
    the prompt and the targets, so a label change must retrain too)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES] if folder.is_dir() else []
    if (folder / LABELS_FILE).is_file():
        files.append(folder / LABELS_FILE)
    return sorted(files)


def dataset_version(paths: list[Path]) -> str:
    """sha256 over (file name, file content) pairs in name order: mtimes and folder location do not
    matter, any byte of content (or a renamed/added/removed file) does."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


# -- validation ---------------------------------------------------------------------------------
def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "answer"
        parts.append(f"answer.{where}: {error['msg']}")
    return "; ".join(parts)


def _check_answer(answer, context_ids: list[str], labels: LabelSpace) -> tuple[str | None, str | None]:
    """(canonical target, None) or (None, reason)."""
    if not isinstance(answer, dict):
        return None, "'answer' must be an object"
    answer = upgrade_answer(answer)  # data written with ``answerable: bool`` keeps loading
    try:
        model = response_model(labels).model_validate(answer)
    except ValidationError as exc:
        return None, _format_validation_error(exc)
    unknown = [c for c in model.citations if c not in context_ids]
    if unknown:
        return None, f"citations {unknown} are not context ids {context_ids}"
    # The same grounding rules the system prompt states and serving enforces.
    problem = grounding_problem(model.model_dump())
    if problem:
        return None, f"answer: {problem}"
    return dump_answer(model, labels), None


def _parse_context(raw) -> tuple[tuple[ContextItem, ...] | None, str | None]:
    if not isinstance(raw, list):
        return None, "'context' must be a list"
    items = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("id", "source", "text")):
            return None, f"context[{i}] must have string fields id, source, text"
        items.append(ContextItem(item["id"], item["source"], item["text"]))
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        return None, f"context ids are not unique: {ids}"
    return tuple(items), None


def parse_ticket_line(raw: str, labels: LabelSpace, origin: str) -> tuple[BehaviourRecord | None, str | None]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} (column {exc.colno})"
    if not isinstance(data, dict):
        return None, "a line must be a JSON object"
    missing = [k for k in ("id", "ticket", "context", "answer") if k not in data]
    if missing:
        return None, f"missing field(s) {missing}"
    if not isinstance(data["id"], str) or not data["id"].strip():
        return None, "'id' must be a non-empty string"
    if not isinstance(data["ticket"], str) or not data["ticket"].strip():
        return None, "'ticket' must be a non-empty string"
    customer_id = data.get("customer_id")
    if customer_id is not None and not isinstance(customer_id, str):
        return None, "'customer_id' must be a string or null"
    context, reason = _parse_context(data["context"])
    if reason:
        return None, reason
    target, reason = _check_answer(data["answer"], [c.id for c in context], labels)
    if reason:
        return None, reason
    history, reason = _parse_history(data.get("history"))
    if reason:
        return None, reason
    review = data.get("review")
    reviewed_at = review.get("reviewed_at") if isinstance(review, dict) else None
    if reviewed_at is not None:
        if not isinstance(reviewed_at, str) or _review_time(reviewed_at) is None:
            return None, f"'review.reviewed_at' must be an ISO 8601 time, got {reviewed_at!r}"
    return BehaviourRecord(data["id"], data["ticket"], customer_id or None, context, target, origin,
                           reviewed_at, history), None


def _parse_history(raw) -> tuple[tuple[tuple[str, str], ...], str | None]:
    if raw is None:
        return (), None
    if not isinstance(raw, list):
        return (), "'history' must be a list of {role, content}"
    turns = []
    for i, turn in enumerate(raw):
        if not isinstance(turn, dict) or not all(isinstance(turn.get(k), str) for k in ("role", "content")):
            return (), f"history[{i}] must have string fields role, content"
        turns.append((turn["role"], turn["content"]))
    return tuple(turns), None


def _review_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _supersedes(new: BehaviourRecord, old: BehaviourRecord) -> bool:
    """Whether ``new`` replaces ``old`` (same ticket and customer): a reviewed example beats an authored
    one, and the latest review beats earlier ones; otherwise the first record stays."""
    if new.reviewed_at is None:
        return False
    # ">=": reviews are stamped to the second; of two in one second the later line wins
    return old.reviewed_at is None or _review_time(new.reviewed_at) >= _review_time(old.reviewed_at)


def _intent_id(text: str, category: str) -> str:
    # Content-derived, never positional: moving a row does not change its id.
    return "intent-" + hashlib.sha256(f"{normalise_ticket(text)}\0{category}".encode()).hexdigest()[:12]


def _read_jsonl(path: Path, labels: LabelSpace, records: list, problems: list) -> None:
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        record, reason = parse_ticket_line(raw, labels, f"{path.name}:{number}")
        if reason:
            problems.append(Problem(path.name, number, reason))
        else:
            records.append(record)


def _read_csv(path: Path, labels: LabelSpace, defaults: IntentDefaults, records: list, problems: list) -> None:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not set(CSV_COLUMNS) <= set(reader.fieldnames):
            problems.append(Problem(path.name, 1, f"header must contain {list(CSV_COLUMNS)}, got {reader.fieldnames}"))
            return
        for row in reader:
            number = reader.line_num  # physical line of the row's end, 1-based (header = 1)
            text, category = (row.get("text") or "").strip(), (row.get("category") or "").strip()
            if not text:
                problems.append(Problem(path.name, number, "'text' is empty"))
                continue
            target, reason = _check_answer(defaults.answer(category, labels), [], labels)
            if reason:
                problems.append(Problem(path.name, number, reason))
                continue
            records.append(BehaviourRecord(_intent_id(text, category), text, None, (), target, f"{path.name}:{number}"))


def load_behaviour_data(
    folder: Path, labels: LabelSpace, intent_defaults: IntentDefaults = IntentDefaults()
) -> BehaviourDataset:
    """All records of all data files in ``folder``; bad records reported, duplicates dropped.

    Duplicates = same normalised ticket text and customer. The latest agent review of a ticket wins
    (``_supersedes``: what a person corrected must not be dropped as a copy of the authored example);
    among unreviewed copies the first one (files in name order, lines in order) is kept. A repeated
    record id is a problem."""
    files = find_behaviour_files(folder)
    records: list[BehaviourRecord] = []
    problems: list[Problem] = []
    for path in files:
        if path.suffix == ".jsonl":
            _read_jsonl(path, labels, records, problems)
        elif path.suffix == ".csv":
            _read_csv(path, labels, intent_defaults, records, problems)

    kept: dict[tuple, BehaviourRecord] = {}  # by dedupe key, in first-seen order
    seen_ids: dict[str, BehaviourRecord] = {}
    duplicates: list[str] = []
    for record in records:
        same_id = seen_ids.get(record.id)
        if same_id is not None and same_id.dedupe_key != record.dedupe_key:
            file, line = record.origin.rsplit(":", 1)
            problems.append(Problem(file, int(line), f"id {record.id!r} already used at {same_id.origin}"))
            continue
        seen_ids.setdefault(record.id, record)
        earlier = kept.get(record.dedupe_key)
        if earlier is None:
            kept[record.dedupe_key] = record
        elif _supersedes(record, earlier):
            kept[record.dedupe_key] = record
            duplicates.append(earlier.origin)
        else:
            duplicates.append(record.origin)
    return BehaviourDataset(
        records=tuple(kept.values()),
        problems=tuple(problems),
        duplicates=tuple(duplicates),
        files=tuple(files),
        version=dataset_version(files),
    )


def unsourced_figures(records, labels: LabelSpace) -> list[tuple[str, tuple[str, ...]]]:
    """(origin, figures) of the records whose ideal reply or resolution states a figure that neither
    its cited context nor its ticket holds (``models/figures.py``, the rule serving enforces): training
    on them teaches the model to invent amounts and durations. Reported (a warning), not rejected."""
    found = []
    for record in records:
        answer, context = record.answer, {c.id: c.text for c in record.context}
        given = [record.ticket, record.customer_id or "", *(content for _, content in record.history)]
        accounts = {c.id for c in record.context if c.source.startswith(ACCOUNT_SOURCE)}
        check = check_figures([answer["reply"], answer["resolution"]],
                              {c: context[c] for c in answer["citations"] if c in context}, context, given,
                              label_names(labels), accounts)
        if check.unsupported:
            found.append((record.origin, check.unsupported))
    return found


# -- split --------------------------------------------------------------------------------------
def split_bucket(record: BehaviourRecord) -> float:
    """A stable number in [0, 1) from the normalised ticket text alone: a record's side of the split
    never depends on which other records exist, and the same ticket for two customers cannot leak
    from train into eval."""
    digest = hashlib.sha256(normalise_ticket(record.ticket).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def ticket_records(records) -> list[BehaviourRecord]:
    """The authored and reviewed ticket records (jsonl files): no intent-CSV rows (no context, defaulted
    answers), no generated RAFT examples. What the evaluation and the decision checks answer."""
    return [r for r in records if r.origin.split(":")[0].endswith(".jsonl") and not r.id.startswith("raft-")]


@dataclass(frozen=True)
class Split:
    train: tuple[BehaviourRecord, ...]
    eval: tuple[BehaviourRecord, ...] = field(default=())
    # Held out from training like ``eval`` but never reported: what decision thresholds are chosen on,
    # so the figures reported on ``eval`` are not tuned on ``eval``.
    dev: tuple[BehaviourRecord, ...] = field(default=())


def split_records(records, eval_fraction: float = DEFAULT_EVAL_FRACTION, dev_fraction: float = 0.0) -> Split:
    """By ``split_bucket``: [0, eval) -> eval, [eval, eval + dev) -> dev, the rest -> train. The eval
    side does not depend on ``dev_fraction``, so adding a dev split keeps the reported set unchanged."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if not 0.0 <= dev_fraction < 1.0 - eval_fraction:
        raise ValueError(f"dev_fraction must be in [0, {1.0 - eval_fraction:g}), got {dev_fraction}")
    train, held_out, dev = [], [], []
    for record in records:
        bucket = split_bucket(record)
        (held_out if bucket < eval_fraction else dev if bucket < eval_fraction + dev_fraction else train).append(record)
    return Split(tuple(train), tuple(held_out), tuple(dev))
