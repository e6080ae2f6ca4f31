"""RAFT's data contract: the pinned corpus snapshot, the hand-written triples, their checks, and
atomic JSONL files. No Weaviate, no model: cheap to import (``raft synthesize`` builds on it)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hybrid_assets.schema import ANSWER, response_model

SNAPSHOT_FIELDS = ("chunk_id", "doc_id", "title", "section", "text")
TRIPLE_FIELDS = ("id", "question", "gold_doc", "quote", "answer")
TRIPLE_ANSWER_FIELDS = ("sentiment", "category", "escalation", "resolution", "reply")
RESOLUTION_MAX = 300  # schema: resolution max_length
QUOTE_MAX = 240  # leaves room for 'Per S1: "…" — ' plus a short next step within RESOLUTION_MAX
SIGN_OFF_PREFIX = "— "


class RaftDataError(ValueError):
    """Bad RAFT input (snapshot, triples) or an impossible request; the message says where."""


# -- data ---------------------------------------------------------------------------------------


def normalise_space(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)


class SnapshotChunk:
    chunk_id: str
    doc_id: str
    title: str
    section: str
    text: str

    @property
    def passage_text(self) -> str:
        """The passage as serving shows it to the model (``serving/retrieval.py``): same layout in
        training and at inference."""
        heading = self.section if self.section and self.section != self.title else ""
        return f"{self.title}{' — ' + heading if heading else ''}: {normalise_space(self.text)}"

    @property
    def embedding_text(self) -> str:
        """What is embedded and BM25-indexed, as ``knowledge.chunking.Chunk.embedding_text``."""
        heading = self.title if self.section in ("", self.title) else f"{self.title} — {self.section}"
        return f"{heading}\n{self.text}"


@dataclass(frozen=True)


class Triple:
    id: str
    question: str
    gold_doc: str
    quote: str
    answer: dict
    origin: str = ""  # "file:line"


@dataclass(frozen=True)


class RaftConfig:
    distractors: int = 3  # k: hard negatives next to the oracle
    p_no_oracle: float = 0.2  # fraction of examples whose oracle chunk is removed
    seed: int = 7
    alpha: float = 0.6  # hybrid search: 0 = BM25 only, 1 = vector only
    # A chunk of another document with a sentence this similar to the quote restates the answer:
    # never a distractor (1.0 disables the check; the quote itself is always excluded verbatim).
    max_quote_similarity: float = 0.75

    def __post_init__(self) -> None:
        if self.distractors < 1:
            raise ValueError(f"distractors must be >= 1, got {self.distractors}")
        if not 0.0 <= self.p_no_oracle <= 1.0:
            raise ValueError(f"p_no_oracle must be in [0, 1], got {self.p_no_oracle}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 < self.max_quote_similarity <= 1.0:
            raise ValueError(f"max_quote_similarity must be in (0, 1], got {self.max_quote_similarity}")


# -- loading ------------------------------------------------------------------------------------


def _read_jsonl(path: Path):
    """(line number, parsed object) for every non-empty line; bad JSON raises with file:line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise RaftDataError(f"{path}: cannot read: {exc}") from exc
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RaftDataError(f"{path}:{number}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
        if not isinstance(data, dict):
            raise RaftDataError(f"{path}:{number}: a line must be a JSON object")
        yield number, data


def _string_field(data: dict, name: str, where: str, allow_empty: bool = False) -> str:
    if name not in data:
        raise RaftDataError(f"{where}: missing field '{name}'")
    value = data[name]
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise RaftDataError(f"{where}: field '{name}' must be a non-empty string")
    return value


def load_snapshot(path: Path) -> list[SnapshotChunk]:
    """The pinned corpus snapshot (one chunk per line); errors name file:line and the field."""
    chunks: list[SnapshotChunk] = []
    seen: dict[str, int] = {}
    for number, data in _read_jsonl(path):
        where = f"{path}:{number}"
        values = {name: _string_field(data, name, where, allow_empty=(name == "section")) for name in SNAPSHOT_FIELDS}
        if values["chunk_id"] in seen:
            raise RaftDataError(f"{where}: field 'chunk_id' {values['chunk_id']!r} already used on line {seen[values['chunk_id']]}")
        seen[values["chunk_id"]] = number
        chunks.append(SnapshotChunk(**values))
    if not chunks:
        raise RaftDataError(f"{path}: the snapshot is empty")
    return chunks


def _check_triple_answer(answer, where: str) -> dict:
    if not isinstance(answer, dict):
        raise RaftDataError(f"{where}: field 'answer' must be an object")
    for name in TRIPLE_ANSWER_FIELDS:
        if name != "escalation" and (not isinstance(answer.get(name), str) or not answer[name].strip()):
            raise RaftDataError(f"{where}: field 'answer.{name}' must be a non-empty string")
    escalation = answer.get("escalation")
    if not isinstance(escalation, dict):
        raise RaftDataError(f"{where}: field 'answer.escalation' must be an object with level and reason")
    for name in ("level", "reason"):
        if not isinstance(escalation.get(name), str) or not escalation[name].strip():
            raise RaftDataError(f"{where}: field 'answer.escalation.{name}' must be a non-empty string")
    extra = sorted(set(answer) - set(TRIPLE_ANSWER_FIELDS))
    if extra:
        raise RaftDataError(f"{where}: field 'answer' has unknown key(s) {extra} (allowed: {list(TRIPLE_ANSWER_FIELDS)})")
    return answer


def load_triples(path: Path) -> list[Triple]:
    """The RAFT triples; errors name file:line and the field (structure only: vocabularies are checked
    against the label space by ``check_triples``)."""
    triples: list[Triple] = []
    seen: dict[str, int] = {}
    for number, data in _read_jsonl(path):
        where = f"{path}:{number}"
        values = {name: _string_field(data, name, where) for name in TRIPLE_FIELDS if name != "answer"}
        if "answer" not in data:
            raise RaftDataError(f"{where}: missing field 'answer'")
        answer = _check_triple_answer(data["answer"], where)
        extra = sorted(set(data) - set(TRIPLE_FIELDS))
        if extra:
            raise RaftDataError(f"{where}: unknown field(s) {extra} (allowed: {list(TRIPLE_FIELDS)})")
        if values["id"] in seen:
            raise RaftDataError(f"{where}: field 'id' {values['id']!r} already used on line {seen[values['id']]}")
        seen[values["id"]] = number
        triples.append(Triple(values["id"], values["question"], values["gold_doc"], values["quote"], answer, where))
    if not triples:
        raise RaftDataError(f"{path}: no triples")
    return triples


# -- the oracle ---------------------------------------------------------------------------------


def resolve_gold_chunk(triple: Triple, snapshot: Sequence[SnapshotChunk]) -> SnapshotChunk:
    """The one snapshot chunk of ``triple.gold_doc`` that contains the quote (whitespace-normalised)."""
    quote = normalise_space(triple.quote)
    if not quote:
        raise RaftDataError(f"triple {triple.id}: the quote is empty")
    in_doc = [c for c in snapshot if c.doc_id == triple.gold_doc]
    if not in_doc:
        raise RaftDataError(f"triple {triple.id}: gold_doc {triple.gold_doc!r} has no chunk in the snapshot")
    found = [c for c in in_doc if quote in normalise_space(c.text)]
    if len(found) != 1:
        what = "not found in any" if not found else f"found in {len(found)}"
        raise RaftDataError(
            f"triple {triple.id}: quote {triple.quote[:60]!r}... {what} snapshot chunk(s) of {triple.gold_doc} "
            "(it must appear verbatim in exactly one)"
        )
    return found[0]


def signature_of(reply: str) -> str | None:
    """The sign-off paragraph of a reply ("— The … Support Team"), if it has one."""
    last = reply.rstrip().rsplit("\n", 1)[-1].strip()
    return last if last.startswith(SIGN_OFF_PREFIX) else None


def check_triples(triples: Sequence[Triple], snapshot: Sequence[SnapshotChunk], labels) -> list[str]:
    """Every problem of the triples (not just the first): the quote resolves to exactly one chunk of
    the gold document, the answer fits the label space and the schema, the reply is signed."""
    from pydantic import ValidationError


    model = response_model(labels)
    problems: list[str] = []
    for triple in triples:
        try:
            resolve_gold_chunk(triple, snapshot)
        except RaftDataError as exc:
            problems.append(str(exc))
        if len(normalise_space(triple.quote)) > QUOTE_MAX:
            problems.append(f"triple {triple.id}: quote longer than {QUOTE_MAX} characters")
        if not signature_of(triple.answer.get("reply", "")):
            problems.append(f"triple {triple.id}: reply is not signed ('{SIGN_OFF_PREFIX}The … Support Team')")
        try:
            model.model_validate({**triple.answer, "decision": ANSWER, "citations": ["S1"]})
        except ValidationError as exc:
            detail = "; ".join(f"answer.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            problems.append(f"triple {triple.id}: {detail}")
    return problems


def snapshot_hash(snapshot: Sequence[SnapshotChunk]) -> str:
    digest = hashlib.sha256()
    for chunk in sorted(snapshot, key=lambda c: c.chunk_id):
        digest.update(f"{chunk.chunk_id}\0{chunk.doc_id}\0{chunk.text}\n".encode())
    return digest.hexdigest()


# -- files ----------------------------------------------------------------------------------------


def _file_mode(path: Path) -> int:
    """The mode the file has now, else 0666 minus the umask (what a plain ``open`` would give)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_jsonl_atomic(path: Path, rows: Sequence[dict]) -> None:
    """Temp file in the same folder (suffix .tmp: never read as data), then one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _file_mode(path))  # mkstemp creates 0600; a data file is normally readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


