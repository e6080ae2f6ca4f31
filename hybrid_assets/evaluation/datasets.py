"""Evaluation datasets: four on-disk formats -> one in-memory ``EvalDataset``.

Every evaluation run (base, RAG-only, fine-tune-only, hybrid) reads the same ``EvalDataset``, so the
arms differ only in the system under test, never in how the data was parsed or sampled.

Formats (``FORMATS``):

- ``native``     our own JSONL (``items.jsonl`` + optional ``passages.jsonl``), validated strictly.
- ``mtrag``      IBM MTRAG human-reference subset (``mtrag_human_ref_subset_eval.json``).
- ``clapnq``     CLAP NQ dev (``dev_answerable.jsonl`` + ``dev_unanswerable.jsonl``).
- ``intent-csv`` labelled intents (``text,category`` or ``text,label``), e.g. Banking77.

Malformed input raises ``DatasetFormatError`` at the first problem, naming the file and the
line / record / field: an evaluation over silently-skipped records would report a number for a
different set than the one asked for. Nothing here needs the benchmark folder at import time.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from hybrid_assets.schema import ANSWER, CLARIFY, DECISIONS, NOT_ANSWERABLE

FORMATS = ("native", "mtrag", "clapnq", "intent-csv")

NATIVE_ITEMS_FILE = "items.jsonl"
NATIVE_PASSAGES_FILE = "passages.jsonl"
MTRAG_FILE = "mtrag_human_ref_subset_eval.json"
CLAPNQ_FILES = ("dev_answerable.jsonl", "dev_unanswerable.jsonl")
CLAPNQ_SOURCE = "clapnq"
INTENT_TEXT_COLUMN = "text"
INTENT_CATEGORY_COLUMNS = ("category", "label")  # first one present in the header wins

# MTRAG answerability labels -> the answer schema's decision (``schema.DECISIONS``). "not_answerable"
# means "the provided passages do not support a reply", and an abstention is scored only where the
# gold says so. Hence:
# - UNANSWERABLE -> not_answerable: the reference reply is an "I don't have that information".
# - ANSWERABLE, PARTIAL -> answer: the passages support (at least part of) the reference reply.
# - CONVERSATIONAL -> answer: chit-chat ("Thank you!") with no passages; the reference is a normal
#   reply, not an abstention, and MTRAG's own IDK metric expects an abstention only on UNANSWERABLE.
# - UNDERSPECIFIED (MTRAG-UN) -> clarify: the turn cannot be answered until the user says more; the
#   expected reply is a clarifying question.
# MTRAG spells the field ``Answerability`` (a one-element list); MTRAG-UN spells it ``answerability``
# (a list or a plain string). Both are read, labels case-insensitively.
MTRAG_DECISION = {"ANSWERABLE": ANSWER, "PARTIAL": ANSWER, "CONVERSATIONAL": ANSWER,
                  "UNANSWERABLE": NOT_ANSWERABLE, "UNDERSPECIFIED": CLARIFY}
MTRAG_ROLES = {"user": "user", "agent": "assistant"}


# -- the in-memory form -------------------------------------------------------------------------
@dataclass(frozen=True)
class Passage:
    """A retrievable passage of the dataset's own corpus."""

    id: str
    text: str
    title: str = ""
    source: str = ""


@dataclass(frozen=True)
class EvalItem:
    id: str
    question: str
    history: tuple[dict, ...] = ()
    gold_passage_ids: tuple[str, ...] = ()
    gold_answer: str | None = None
    decision: str = ANSWER  # the gold decision (``schema.DECISIONS``)
    category: str | None = None
    customer_id: str | None = None

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"item {self.id!r}: decision {self.decision!r} is not one of {list(DECISIONS)}")

    @property
    def answerable(self) -> bool:
        return self.decision == ANSWER


@dataclass(frozen=True)
class EvalDataset:
    name: str
    format: str
    items: tuple[EvalItem, ...]
    passages: tuple[Passage, ...]
    categories: tuple[str, ...] = ()


class DatasetFormatError(ValueError):
    """Bad evaluation data; the message names the file, and the line/record/field when known."""


# -- shared helpers ------------------------------------------------------------------------------
def _fail(path: Path, reason: str, *, line: int | None = None, record: str | None = None) -> NoReturn:
    where = f"{path}:{line}" if line is not None else str(path)
    if record is not None:
        where += f": {record}"
    raise DatasetFormatError(f"{where}: {reason}")


def _validation_reason(exc: ValidationError) -> str:
    """Pydantic errors as "field 'a.0.b': message" so the message names the field."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "(record)"
        parts.append(f"field '{field}': {error['msg']}")
    return "; ".join(parts)


def _validate(model: type[BaseModel], data: Any, path: Path, *, line: int | None = None, record: str | None = None):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        _fail(path, _validation_reason(exc), line=line, record=record)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


NonBlank = Annotated[str, AfterValidator(_not_blank)]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        _fail(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})")


def _jsonl_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for every non-blank line; a bad line fails with its number."""
    for number, raw in enumerate(_read_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            _fail(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line=number)
        if not isinstance(data, dict):
            _fail(path, f"a line must be a JSON object, got {type(data).__name__}", line=number)
        yield number, data


def _sample_indices(n: int, limit: int | None, rng: random.Random) -> list[int]:
    """Seeded shuffle, first ``limit``, back in source order (a sample is a subset, not a reordering)."""
    if limit is None or limit >= n:
        return list(range(n))
    order = list(range(n))
    rng.shuffle(order)
    return sorted(order[:limit])


def _check_unique(ids: Iterable[tuple[str, str]], path: Path, what: str) -> None:
    """``ids`` = (id, origin) pairs; a repeated id would make gold sets and results ambiguous."""
    seen: dict[str, str] = {}
    for key, origin in ids:
        if key in seen:
            _fail(path, f"{what} id {key!r} at {origin} already used at {seen[key]}")
        seen[key] = origin


def _dataset_name(path: Path) -> str:
    if path.is_dir():
        return path.name
    return f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem


def _content_id(prefix: str, *parts: str) -> str:
    """A stable id from content, for sources without ids of their own (moving a record keeps it)."""
    return prefix + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


# -- native --------------------------------------------------------------------------------------
class _Strict(BaseModel):
    # Our own format: unknown keys (typos) and wrong types are errors, not silent defaults.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _NativeTurn(_Strict):
    role: Literal["user", "assistant"]
    content: str


class _NativeItem(_Strict):
    id: NonBlank
    question: NonBlank
    customer_id: str | None = None
    history: list[_NativeTurn] = []
    gold_passage_ids: list[NonBlank] = []
    gold_answer: str | None = None
    # The gold decision; ``answerable`` (the older spelling: true = "answer", false = "not_answerable")
    # is still read. Giving both is an error.
    decision: Literal["answer", "clarify", "not_answerable"] | None = None
    answerable: bool | None = None
    category: str | None = None


class _NativePassage(_Strict):
    id: NonBlank
    text: NonBlank
    title: str = ""
    source: str = ""


def _native_paths(path: Path) -> tuple[Path, Path | None]:
    items = path / NATIVE_ITEMS_FILE if path.is_dir() else path
    if not items.is_file():
        _fail(path, f"no {NATIVE_ITEMS_FILE} in this folder")
    passages = items.parent / NATIVE_PASSAGES_FILE
    return items, (passages if passages.is_file() and passages != items else None)


def _load_native_passages(path: Path | None) -> dict[str, Passage]:
    if path is None:
        return {}
    rows = [(n, _validate(_NativePassage, d, path, line=n)) for n, d in _jsonl_objects(path)]
    _check_unique(((p.id, f"line {n}") for n, p in rows), path, "passage")
    return {p.id: Passage(p.id, p.text, p.title, p.source) for _, p in rows}


def _native_item(row: _NativeItem, path: Path, line: int) -> EvalItem:
    if row.decision is not None and row.answerable is not None:
        _fail(path, "give 'decision' or the older 'answerable', not both", line=line)
    decision = row.decision or (NOT_ANSWERABLE if row.answerable is False else ANSWER)
    return EvalItem(
        id=row.id,
        question=row.question,
        history=tuple({"role": t.role, "content": t.content} for t in row.history),
        gold_passage_ids=tuple(row.gold_passage_ids),
        gold_answer=row.gold_answer,
        decision=decision,
        category=row.category,
        customer_id=row.customer_id,
    )


def _load_native(path: Path, limit: int | None, rng: random.Random) -> EvalDataset:
    """All of ``passages.jsonl`` is the corpus whatever the sample: the other passages are the
    distractors retrieval has to rank below the gold ones."""
    items_path, passages_path = _native_paths(path)
    passages = _load_native_passages(passages_path)
    rows = [(n, _validate(_NativeItem, d, items_path, line=n)) for n, d in _jsonl_objects(items_path)]
    _check_unique(((r.id, f"line {n}") for n, r in rows), items_path, "item")
    for number, row in rows:
        unknown = [g for g in row.gold_passage_ids if g not in passages]
        if unknown:
            hint = f"not in {passages_path.name}" if passages_path else f"and there is no {NATIVE_PASSAGES_FILE}"
            _fail(items_path, f"field 'gold_passage_ids': {unknown} {hint}", line=number)
    items = [_native_item(r, items_path, n) for n, r in rows]
    kept = [items[i] for i in _sample_indices(len(items), limit, rng)]
    categories = sorted({i.category for i in items if i.category})
    return EvalDataset(_dataset_name(path), "native", tuple(kept), tuple(passages.values()), tuple(categories))


# -- mtrag ---------------------------------------------------------------------------------------
class _Lenient(BaseModel):
    # Someone else's format: ignore the many fields we do not use, validate the ones we do.
    model_config = ConfigDict(extra="ignore", frozen=True)


class _MtragTurn(_Lenient):
    speaker: str
    text: str


class _MtragContext(_Lenient):
    document_id: NonBlank


class _MtragTask(_Lenient):
    task_id: NonBlank
    input: list[_MtragTurn]
    contexts: list[_MtragContext] = []
    targets: list[_MtragTurn] = []
    Answerability: list[str] | str | None = None  # MTRAG
    answerability: list[str] | str | None = None  # MTRAG-UN
    Collection: str = ""

    def answerability_label(self) -> tuple[str, str | None]:
        """(the field's name as spelled in the file, its first label upper-cased)."""
        name, value = ("answerability", self.answerability) if self.answerability is not None \
            else ("Answerability", self.Answerability)
        if isinstance(value, list):
            value = value[0] if value else None
        return name, value.strip().upper() if isinstance(value, str) else None


class _MtragDocument(_Lenient):
    document_id: NonBlank
    text: str
    title: str | None = None


def _mtrag_file(path: Path) -> Path:
    if path.is_file():
        return path
    if (path / MTRAG_FILE).is_file():
        return path / MTRAG_FILE
    candidates = sorted(path.glob("*.json"))
    if len(candidates) != 1:
        found = [c.name for c in candidates]
        _fail(path, f"expected {MTRAG_FILE} (or exactly one *.json) in this folder, found {found}")
    return candidates[0]


def _mtrag_top(path: Path) -> tuple[list, list]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        _fail(path, f"invalid JSON: {exc.msg}", line=exc.lineno)
    if not isinstance(data, dict):
        _fail(path, "top level must be an object with 'documents' and 'tasks'")
    for key in ("documents", "tasks"):
        if not isinstance(data.get(key), list):
            _fail(path, f"field '{key}' must be a list")
    return data["documents"], data["tasks"]


def _mtrag_item(task: _MtragTask, path: Path, record: str) -> EvalItem:
    if not task.input or task.input[-1].speaker != "user":
        _fail(path, "field 'input': the last turn must be the user's", record=record)
    history = []
    for number, turn in enumerate(task.input[:-1]):
        if turn.speaker not in MTRAG_ROLES:
            _fail(path, f"field 'input.{number}.speaker': unknown speaker {turn.speaker!r}", record=record)
        history.append({"role": MTRAG_ROLES[turn.speaker], "content": turn.text})
    field_name, label = task.answerability_label()
    if label not in MTRAG_DECISION:
        given = getattr(task, field_name)
        _fail(path, f"field '{field_name}': {given!r} is not one of {sorted(MTRAG_DECISION)}", record=record)
    decision = MTRAG_DECISION[label]
    return EvalItem(
        id=task.task_id,
        question=task.input[-1].text,
        history=tuple(history),
        gold_passage_ids=tuple(dict.fromkeys(c.document_id for c in task.contexts)),
        # Unanswerable: the reference is an abstention, and the data model keeps None for those.
        # Underspecified: the reference is the clarifying question.
        gold_answer=task.targets[0].text if decision != NOT_ANSWERABLE and task.targets else None,
        decision=decision,
    )


def _load_mtrag(path: Path, limit: int | None, rng: random.Random) -> EvalDataset:
    """One task (a conversation up to one user turn) = one item; its ``contexts`` are the gold
    passages, whose text lives in ``documents``. The ``retrieval/`` folder next to the file is not
    read: its qrels equal the tasks' contexts, and the corpora it points at are not shipped."""
    file = _mtrag_file(path)
    raw_documents, raw_tasks = _mtrag_top(file)
    documents = {}
    for index, raw in enumerate(raw_documents):
        doc = _validate(_MtragDocument, raw, file, record=f"documents[{index}]")
        documents.setdefault(doc.document_id, doc)
    items, collections = [], {}
    for index, raw in enumerate(raw_tasks):
        record = f"tasks[{index}]"
        task = _validate(_MtragTask, raw, file, record=record)
        record += f" (task_id {task.task_id!r})"
        for number, context in enumerate(task.contexts):
            if context.document_id not in documents:
                reason = f"field 'contexts.{number}.document_id': {context.document_id!r} is not in 'documents'"
                _fail(file, reason, record=record)
            collections.setdefault(context.document_id, task.Collection)
        items.append(_mtrag_item(task, file, record))
    _check_unique(((item.id, f"tasks[{i}]") for i, item in enumerate(items)), file, "task")
    kept = [items[i] for i in _sample_indices(len(items), limit, rng)]
    passages = [
        Passage(d, documents[d].text, documents[d].title or "", collections.get(d, ""))
        for d in dict.fromkeys(g for item in kept for g in item.gold_passage_ids)
    ]
    return EvalDataset(_dataset_name(path), "mtrag", tuple(kept), tuple(passages))


# -- clapnq --------------------------------------------------------------------------------------
class _ClapnqPassage(_Lenient):
    title: str = ""
    text: NonBlank


class _ClapnqAnswer(_Lenient):
    answer: str = ""


class _ClapnqRecord(_Lenient):
    id: NonBlank
    input: NonBlank
    passages: list[_ClapnqPassage]
    output: list[_ClapnqAnswer] = []


def _clapnq_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = [path / name for name in CLAPNQ_FILES if (path / name).is_file()] or sorted(path.glob("*.jsonl"))
    if not files:
        _fail(path, f"no {' / '.join(CLAPNQ_FILES)} (or any *.jsonl) in this folder")
    return files


def clapnq_passage_id(title: str, text: str) -> str:
    """CLAP NQ passages carry no id; the content hash is stable and merges a passage shared by two
    records into one corpus entry."""
    return _content_id("clapnq-", title, text)


def _clapnq_item(record: _ClapnqRecord, passage_ids: tuple[str, ...]) -> EvalItem:
    # Answerable = some annotator wrote an answer; that is how CLAP NQ splits its two files, and it
    # lets a single .jsonl file be loaded too. The first non-empty answer is the reference.
    answers = [o.answer for o in record.output if o.answer.strip()]
    answerable = bool(answers)
    return EvalItem(
        id=record.id,
        question=record.input,
        gold_passage_ids=passage_ids if answerable else (),
        gold_answer=answers[0] if answerable else None,
        decision=ANSWER if answerable else NOT_ANSWERABLE,
    )


def _balanced_indices(items: Sequence[EvalItem], limit: int | None, rng: random.Random) -> list[int]:
    """A sample with the source's answerable/unanswerable ratio (rounded), so abstention metrics on
    a sample estimate the same thing as on the whole set."""
    if limit is None or limit >= len(items):
        return list(range(len(items)))
    yes = [i for i, item in enumerate(items) if item.answerable]
    no = [i for i, item in enumerate(items) if not item.answerable]
    take_yes = min(len(yes), int(limit * len(yes) / len(items) + 0.5))
    take_no = min(len(no), limit - take_yes)
    take_yes = min(len(yes), limit - take_no)
    picked = [yes[i] for i in _sample_indices(len(yes), take_yes, rng)]
    picked += [no[i] for i in _sample_indices(len(no), take_no, rng)]
    return sorted(picked)


def _load_clapnq(path: Path, limit: int | None, rng: random.Random) -> EvalDataset:
    """Every record's passages go into the corpus, unanswerable ones included: those are the
    distractors the model sees and must not answer from."""
    items, passages_of, seen = [], [], []
    for file in _clapnq_files(path):
        for number, data in _jsonl_objects(file):
            record = _validate(_ClapnqRecord, data, file, line=number)
            passages = [
                Passage(clapnq_passage_id(p.title, p.text), p.text, p.title, CLAPNQ_SOURCE) for p in record.passages
            ]
            items.append(_clapnq_item(record, tuple(dict.fromkeys(p.id for p in passages))))
            passages_of.append(passages)
            seen.append((record.id, f"{file.name}:{number}"))
    _check_unique(seen, path, "record")
    keep = _balanced_indices(items, limit, rng)
    corpus = {p.id: p for i in keep for p in passages_of[i]}
    return EvalDataset(_dataset_name(path), "clapnq", tuple(items[i] for i in keep), tuple(corpus.values()))


# -- intent-csv ----------------------------------------------------------------------------------
def normalise_text(text: str) -> str:
    """Whitespace-collapsed, case-folded: the same as ``behaviour.dataset.normalise_ticket``."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def intent_item_id(text: str, category: str) -> str:
    """Content-derived like ``behaviour.dataset._intent_id``, so an eval item and the training
    record made from the same row share an id (and a leak is a set intersection)."""
    return "intent-" + hashlib.sha256(f"{normalise_text(text)}\0{category}".encode()).hexdigest()[:12]


def _intent_columns(path: Path, header: list[str] | None) -> tuple[int, int, int]:
    """(text column, category column, width) from the header."""
    names = [h.strip() for h in header or []]
    category = next((c for c in INTENT_CATEGORY_COLUMNS if c in names), None)
    if INTENT_TEXT_COLUMN not in names or category is None:
        _fail(path, f"header must be 'text,category' (or 'text,label'), got {names}", line=1)
    return names.index(INTENT_TEXT_COLUMN), names.index(category), len(names)


def _intent_rows(path: Path) -> Iterator[tuple[int, str, str]]:
    """(first physical line of the row, text, category); a multi-line quoted text keeps its start line."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            text_col, cat_col, width = _intent_columns(path, next(reader, None))
            while True:
                start = reader.line_num + 1
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    _fail(path, f"bad CSV: {exc}", line=start)
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != width:
                    _fail(path, f"expected {width} columns, got {len(row)}", line=start)
                text, category = row[text_col].strip(), row[cat_col].strip()
                if not text:
                    _fail(path, "field 'text' is empty", line=start)
                if not category:
                    _fail(path, "field 'category' is empty", line=start)
                yield start, text, category
    except UnicodeDecodeError as exc:
        _fail(path, f"not UTF-8 text ({exc.reason})")


def _load_intent_csv(path: Path, limit: int | None, rng: random.Random) -> EvalDataset:
    """Banking77-style ``text,category`` (a ``label`` column is accepted as the category). Rows with
    the same normalised text and category are one item (Banking77 train repeats 4); ``categories``
    is the vocabulary of the whole file, so a small sample keeps the full label space."""
    if path.is_dir():
        _fail(path, "intent-csv needs the path of a .csv file, not a folder")
    items: dict[str, EvalItem] = {}
    for _, text, category in _intent_rows(path):
        item_id = intent_item_id(text, category)
        items.setdefault(item_id, EvalItem(id=item_id, question=text, category=category))
    rows = list(items.values())
    kept = [rows[i] for i in _sample_indices(len(rows), limit, rng)]
    categories = sorted({item.category for item in rows if item.category})
    return EvalDataset(_dataset_name(path), "intent-csv", tuple(kept), (), tuple(categories))


# -- entry points --------------------------------------------------------------------------------
_LOADERS = {"native": _load_native, "mtrag": _load_mtrag, "clapnq": _load_clapnq, "intent-csv": _load_intent_csv}


def load_eval_dataset(path: str | Path, format: str, *, limit: int | None = None, seed: int = 0) -> EvalDataset:
    """Load ``path`` in ``format``; ``limit`` keeps a deterministic seeded sample (clapnq keeps its
    answerable/unanswerable ratio). Passages always cover the kept items' gold passages."""
    if format not in _LOADERS:
        raise DatasetFormatError(f"{path}: unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    path = Path(path)
    if not path.exists():
        raise DatasetFormatError(f"{path}: no such file or folder")
    return _LOADERS[format](path, limit, random.Random(seed))


def split_bucket(text: str, seed: int = 0) -> float:
    """A stable number in [0, 1) from the normalised text alone. With seed 0 it equals
    ``behaviour.dataset.split_bucket``, so an intent row the behaviour training held out at a
    fraction f is held out here at any ``eval_fraction <= f``."""
    salt = f"{seed}\0" if seed else ""
    digest = hashlib.sha256((salt + normalise_text(text)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_intent_items(
    items: Iterable[EvalItem], eval_fraction: float = 0.2, seed: int = 0
) -> tuple[list[EvalItem], list[EvalItem]]:
    """(train, eval) by a content hash of each item's text: an item's side never depends on the
    other items, the order, or the run, so a held-out part stays held out."""
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    train: list[EvalItem] = []
    held_out: list[EvalItem] = []
    for item in items:
        (held_out if split_bucket(item.question, seed) < eval_fraction else train).append(item)
    return train, held_out
