"""The feedback loop: a reviewed answer becomes one behaviour example in ``data/behaviour``.

A console answer is kept (in memory, bounded) with what the model saw: the ticket, earlier turns, the
customer and the exact context passages. A review (approve, correct, or "should not have answered")
turns it into one behaviour record::

    {"id", "ticket", "customer_id", "context": [{"id", "source", "text"}], "answer": {...},
     "history": [{"role", "content"}], "review": {"action", "reviewer", "reviewed_at", ...}}

The line is checked with ``behaviour.dataset.parse_ticket_line`` - the validator of every behaviour
record - *on the exact bytes that will be written*; a refused line names the field and the reason and
nothing is written. A valid line is appended to ``reviewed_feedback.jsonl`` with one ``write`` under an
exclusive lock, then fsynced. The behaviour data's content hash changes, so the behaviour sensor
requests the behaviour job (training, the gate, promotion): nothing here touches the knowledge path.

How many reviewed examples the promoted adapter has not seen: the adapter's lineage records the
content hash of the behaviour folder it was trained on (``dataset_version``). The feedback file is
append-only, so the trained data is the folder with some *prefix* of that file: the prefix whose hash
matches tells exactly which reviews were in it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from hybrid_assets.behaviour.dataset import dataset_version, find_behaviour_files, normalise_ticket, parse_ticket_line
from hybrid_assets.behaviour.registry import AdapterVersion
from hybrid_assets.schema import FIELD_ORDER, LabelSpace, not_answerable_answer, response_model

FEEDBACK_FILE = "reviewed_feedback.jsonl"
ACTIONS = ("approve", "correct", "should_not_answer")
# Which field says whether the assistant answers: the new three-way ``decision`` where the schema has
# it, else the older boolean ``answerable``. The one place that knows both names.
DECISION_FIELDS = ("decision", "answerable")
ANSWERS = "answer"  # the ``decision`` value of an answer that answers
MAX_REVIEWER = 80
MAX_NOTE = 500


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def decision_of(answer: dict) -> dict:
    """``{"field", "value", "answers"}``: whether the assistant answered, from whichever field exists."""
    for name in DECISION_FIELDS:
        if name in answer:
            value = answer[name]
            if isinstance(value, bool):
                return {"field": name, "value": "answer" if value else "not_answerable", "answers": value}
            return {"field": name, "value": str(value), "answers": value == ANSWERS}
    return {"field": None, "value": "unknown", "answers": bool(answer.get("citations"))}


class ReviewRefused(ValueError):
    """A review that cannot become a behaviour record: ``problems`` = [{"field", "reason"}]."""

    def __init__(self, problems: list[dict], status: int = 422):
        super().__init__("; ".join(f"{p['field']}: {p['reason']}" for p in problems))
        self.problems = problems
        self.status = status


# -- answers waiting for a review --------------------------------------------------------------------

@dataclass
class PendingAnswer:
    answer_id: str
    ticket: str
    customer_id: str | None
    history: list[dict]
    context: list[dict]  # the passages exactly as the model saw them: {"id", "source", "text"}
    answer: dict
    adapter_version: str | None
    knowledge_version: str | None
    answered_at: str = field(default_factory=now_iso)
    reviewed_as: str | None = None  # the record id once reviewed


class AnswerLog:
    """The latest console answers (bounded, thread-safe): what a review refers to by ``answer_id``."""

    def __init__(self, capacity: int = 500):
        self.capacity = capacity
        self._items: OrderedDict[str, PendingAnswer] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, **fields) -> PendingAnswer:
        pending = PendingAnswer(answer_id=uuid.uuid4().hex[:16], **fields)
        with self._lock:
            self._items[pending.answer_id] = pending
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return pending

    def get(self, answer_id: str) -> PendingAnswer | None:
        with self._lock:
            return self._items.get(answer_id)

    def claim(self, answer_id: str) -> PendingAnswer:
        """The answer to review; each answer is reviewed once (a second review would be a duplicate)."""
        with self._lock:
            pending = self._items.get(answer_id)
            if pending is None:
                raise ReviewRefused([{"field": "answer_id", "reason": "unknown or expired answer: answer the ticket "
                                      "again to review it"}], status=404)
            if pending.reviewed_as:
                raise ReviewRefused([{"field": "answer_id", "reason": f"already reviewed as {pending.reviewed_as}"}],
                                    status=409)
            pending.reviewed_as = "(in progress)"
            return pending

    def release(self, pending: PendingAnswer, record_id: str | None) -> None:
        with self._lock:
            pending.reviewed_as = record_id


# -- building and validating one record ----------------------------------------------------------------

def _answer_problems(answer, labels: LabelSpace) -> list[dict]:
    if not isinstance(answer, dict):
        return [{"field": "answer", "reason": "the corrected answer must be an object"}]
    try:
        response_model(labels).model_validate(answer)
    except ValidationError as exc:
        return [{"field": ".".join(str(part) for part in error["loc"]) or "answer", "reason": error["msg"]}
                for error in exc.errors()]
    return []


def _reason_problems(reason: str) -> list[dict]:
    """``parse_ticket_line``'s reason as field + reason items (its messages name the field first)."""
    problems = []
    for part in reason.split("; "):
        head, sep, rest = part.partition(": ")
        if sep and head.startswith("answer."):
            problems.append({"field": head.removeprefix("answer."), "reason": rest})
            continue
        words = part.replace("'", " ").split()
        named = next((w for w in words if w in FIELD_ORDER or w in ("ticket", "context", "id", "customer_id")), None)
        problems.append({"field": named or "answer", "reason": part})
    return problems


def canonical_answer(answer: dict, labels: LabelSpace) -> dict:
    """The answer in the schema's field order (validated)."""
    data = response_model(labels).model_validate(answer).model_dump()
    return {key: data[key] for key in FIELD_ORDER if key in data} | {k: v for k, v in data.items()
                                                                      if k not in FIELD_ORDER}


def _flat(answer: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in answer.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_fields(before: dict, after: dict) -> list[str]:
    old, new = _flat(before), _flat(after)
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def build_record(pending: PendingAnswer, action: str, reviewer: str, labels: LabelSpace,
                 corrected: dict | None = None, note: str = "") -> dict:
    """The behaviour record of one review (not yet validated as a line: see ``FeedbackFile.append``)."""
    problems = []
    if action not in ACTIONS:
        problems.append({"field": "action", "reason": f"must be one of {list(ACTIONS)}"})
    reviewer = (reviewer or "").strip()
    if not reviewer or len(reviewer) > MAX_REVIEWER:
        problems.append({"field": "reviewer", "reason": f"who reviewed: 1 to {MAX_REVIEWER} characters"})
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        problems.append({"field": "note", "reason": f"at most {MAX_NOTE} characters"})
    if problems:
        raise ReviewRefused(problems)
    if action == "approve":
        answer = pending.answer
    elif action == "correct":
        if corrected is None:
            raise ReviewRefused([{"field": "answer", "reason": "a correction needs the corrected answer"}])
        answer = corrected
    else:  # the honest "the documents don't answer this", keeping the labels the review leaves standing
        base = corrected if isinstance(corrected, dict) else pending.answer
        answer = not_answerable_answer(labels, sentiment=base.get("sentiment"), category=base.get("category"),
                                       escalation=base.get("escalation"))
    problems = _answer_problems(answer, labels)
    if problems:
        raise ReviewRefused(problems)
    answer = canonical_answer(answer, labels)
    return {
        "id": f"review-{uuid.uuid4().hex[:12]}",
        "ticket": pending.ticket,
        "customer_id": pending.customer_id,
        "context": [{"id": c["id"], "source": c["source"], "text": c["text"]} for c in pending.context],
        "answer": answer,
        "history": pending.history,
        "review": {
            "action": action,
            "reviewer": reviewer,
            "reviewed_at": now_iso(),
            "answer_id": pending.answer_id,
            "answered_at": pending.answered_at,
            "adapter_version": pending.adapter_version,
            "knowledge_version": pending.knowledge_version,
            "model_answer": pending.answer,
            "changed_fields": changed_fields(pending.answer, answer),
            "note": note,
        },
    }


def validated_line(record: dict, labels: LabelSpace, origin: str = FEEDBACK_FILE) -> str:
    """The exact line to write, checked by the behaviour data's own validator (raises ReviewRefused)."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    if "\n" in line or "\r" in line:  # json.dumps escapes them; a guard against a future separator change
        raise ReviewRefused([{"field": "record", "reason": "a record must be one line"}])
    parsed, reason = parse_ticket_line(line, labels, origin)
    if reason or parsed is None:
        raise ReviewRefused(_reason_problems(reason or "invalid record"))
    return line


# -- the feedback file ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Appended:
    line: int
    record_id: str
    earlier_review_lines: list[int]  # earlier reviews of the same ticket + customer (the dataset keeps the first)


class FeedbackFile:
    def __init__(self, behaviour_dir: Path):
        self.path = Path(behaviour_dir) / FEEDBACK_FILE

    def append(self, record: dict, labels: LabelSpace) -> Appended:
        """Validate the exact line, then append it: exclusive lock, one write, fsync."""
        line = validated_line(record, labels)
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            existing = os.pread(fd, size, 0) if size else b""
            data = line.encode("utf-8") + b"\n"
            if existing and not existing.endswith(b"\n"):
                data = b"\n" + data  # a hand edit left no final newline: never glue two records together
            lines_before = existing.count(b"\n") + (1 if existing and not existing.endswith(b"\n") else 0)
            earlier = self._same_ticket(existing, record)
            written = os.write(fd, data)
            if written != len(data):  # pragma: no cover - a regular file takes the whole write or fails
                raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        if created:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return Appended(lines_before + 1, record["id"], earlier)

    @staticmethod
    def _same_ticket(existing: bytes, record: dict) -> list[int]:
        key = (normalise_ticket(record["ticket"]), record.get("customer_id") or None)
        found = []
        for number, raw in enumerate(existing.decode("utf-8", "replace").splitlines(), 1):
            try:
                data = json.loads(raw)
                if (normalise_ticket(data["ticket"]), data.get("customer_id") or None) == key:
                    found.append(number)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        return found

    def raw_lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def records(self, labels: LabelSpace) -> list[dict]:
        """Every line: ``{"line", "valid", "reason", "record"}``."""
        rows = []
        for number, raw in enumerate(self.raw_lines(), 1):
            if not raw.strip():
                continue
            parsed, reason = parse_ticket_line(raw, labels, f"{FEEDBACK_FILE}:{number}")
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            rows.append({"line": number, "valid": parsed is not None, "reason": reason,
                         "record": data if isinstance(data, dict) else None})
        return rows


# -- what the promoted adapter has not seen ------------------------------------------------------------

def _folder_hash(entries: list[tuple[str, bytes]]) -> str:
    # The same digest as ``behaviour.dataset.dataset_version`` (checked against it before it is trusted).
    digest = hashlib.sha256()
    for name, content_digest in sorted(entries):
        digest.update(name.encode() + b"\0")
        digest.update(content_digest)
    return digest.hexdigest()


def trained_prefix(behaviour_dir: Path, trained_version: str) -> tuple[int | None, str]:
    """How many lines of the feedback file the data of ``trained_version`` held: (lines, how it was found).
    ``None`` when no prefix matches (other behaviour files changed since) or the hash scheme is not ours."""
    files = find_behaviour_files(behaviour_dir)
    feedback = Path(behaviour_dir) / FEEDBACK_FILE
    others = [(p.name, hashlib.sha256(p.read_bytes()).digest()) for p in files if p.name != FEEDBACK_FILE]
    content = feedback.read_bytes() if feedback in files else None
    whole = others + ([(FEEDBACK_FILE, hashlib.sha256(content).digest())] if content is not None else [])
    if _folder_hash(whole) != dataset_version(files):
        return None, "the dataset's version scheme changed: cannot tell which reviews were trained on"
    matches = lambda version: bool(trained_version) and version.startswith(trained_version)  # noqa: E731
    if matches(_folder_hash(others)):
        return 0, "trained before the feedback file existed"
    if content is None:
        return None, "the behaviour data changed since the adapter was trained"
    running = hashlib.sha256()
    lines = 0
    if matches(_folder_hash(others + [(FEEDBACK_FILE, running.copy().digest())])):
        return 0, "exact (content hash of the trained data)"
    for raw in content.splitlines(keepends=True):
        running.update(raw)
        lines += 1
        if matches(_folder_hash(others + [(FEEDBACK_FILE, running.copy().digest())])):
            return lines, "exact (content hash of the trained data)"
    return None, "the behaviour data other than the reviews changed since the adapter was trained"


def loop_status(behaviour_dir: Path, labels: LabelSpace, current: AdapterVersion | None) -> dict:
    """Reviewed examples, how many the promoted adapter has not been trained on, and its gate figures."""
    rows = FeedbackFile(behaviour_dir).records(labels)
    valid = [row for row in rows if row["valid"]]
    if current is None:
        pending, method = len(valid), "no adapter promoted yet"
    else:
        prefix, method = trained_prefix(behaviour_dir, str(current.lineage.get("dataset_version") or ""))
        if prefix is not None:
            pending = sum(1 for row in valid if row["line"] > prefix)
        else:  # fall back on time: reviews written after the adapter was created
            created = str(current.lineage.get("created_at") or "")
            pending = sum(1 for row in valid if str((row["record"].get("review") or {}).get("reviewed_at") or "")
                          > created)
            method = f"approximate, by time ({method})"
    recent = []
    for row in reversed(rows[-50:]):
        record = row["record"] or {}
        review = record.get("review") or {}
        answer = record.get("answer") or {}
        recent.append({"line": row["line"], "id": record.get("id"), "valid": row["valid"], "reason": row["reason"],
                       "action": review.get("action"), "reviewer": review.get("reviewer"),
                       "reviewed_at": review.get("reviewed_at"), "ticket": str(record.get("ticket") or "")[:160],
                       "customer_id": record.get("customer_id"), "category": answer.get("category"),
                       "decision": decision_of(answer)["value"] if answer else None,
                       "changed_fields": review.get("changed_fields") or []})
    return {"file": f"data/behaviour/{FEEDBACK_FILE}", "reviewed": len(valid), "invalid": len(rows) - len(valid),
            "pending": pending, "pending_method": method, "recent": recent}
