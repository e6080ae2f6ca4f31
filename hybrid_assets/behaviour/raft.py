"""RAFT (retrieval-augmented fine-tuning) training data, produced as ordinary *behaviour* data.

Each hand-written triple (a customer question, the document that answers it, one sentence quoted
verbatim from that document, and the target answer) becomes one ticket record in the behaviour
format (``behaviour/dataset.py``):

- the context is the *oracle* chunk (the snapshot chunk that contains the quote) plus ``k`` hard
  negatives, shuffled and numbered S1..S(k+1) exactly as serving numbers retrieved passages;
- the target cites the oracle's short id, and its ``resolution`` starts with the quoted sentence
  (``Per S2: "<quote>" — <next step>``): in our schema that is where the reasoning quotes its source;
- for a ``p_no_oracle`` fraction of the triples the oracle is left out (k+1 distractors instead, so
  the context size stays the same) and the target is the honest not-answerable answer.

Hard negatives are mined with the same hybrid search (BM25 + vector) serving uses, in a real Weaviate,
over a throw-away collection that holds the *pinned corpus snapshot* (``data/raft/corpus_snapshot.jsonl``),
never the live documents: editing a document changes the knowledge index, not the behaviour data, so
the two update paths stay independent. A distractor is never the oracle, never from the gold
document (another chunk of it could also answer the question) and never a chunk of another document
that restates the quote (``restating_chunks``): sample corpora repeat facts across documents, and a
"no-oracle" example whose distractor still holds the answer would teach the model to refuse.

The not-answerable target follows the escalation policy's first-match rule: rules 1-4 (security,
outage, account manager, billing) are triggered by the ticket itself and still apply when the
documentation is missing, so such a triple keeps its level and reason; a triple resolved by the
documentation (rule 5, level ``none``) becomes rule 6, ``tier_2`` - the same as the unanswerable
tickets in ``tickets.jsonl``.

Knowledge/store code is imported inside functions only (this module stays on the behaviour side and
is cheap to import); nothing here imports Dagster.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SNAPSHOT_FIELDS = ("chunk_id", "doc_id", "title", "section", "text")
TRIPLE_FIELDS = ("id", "question", "gold_doc", "quote", "answer")
TRIPLE_ANSWER_FIELDS = ("sentiment", "category", "escalation", "resolution", "reply")
EXAMPLE_ID_PREFIX = "raft-"
COLLECTION_PREFIX = "RaftSnapshot_"
RESOLUTION_MAX = 300  # schema: resolution max_length
QUOTE_MAX = 240  # leaves room for 'Per S1: "…" — ' plus a short next step within RESOLUTION_MAX
SIGN_OFF_PREFIX = "— "
# Level of the policy's rule 6 ("a question the documentation does not answer"), and its reason.
NO_DOCS_LEVEL = "tier_2"
NO_DOCS_REASON = "Rule 6: the provided documentation does not answer this question."

# Not-answerable targets per escalation level: (resolution, the reply's hand-over sentence).
HANDOVER = {
    "tier_2": (
        "Tier 2 to answer; the retrieved documentation does not cover this question.",
        "I've passed your ticket to our Tier 2 team, who will follow up with you.",
    ),
    "security": (
        "Route to the Security & Privacy team; the retrieved documentation does not cover this ticket.",
        "I've passed your ticket to our Security & Privacy team, who will contact you.",
    ),
    "engineering_oncall": (
        "Escalate to engineering on-call; the retrieved documentation does not cover this ticket.",
        "I've escalated your ticket to our on-call engineering team, who will update you as soon as they know more.",
    ),
    "billing_specialist": (
        "Route to the billing specialist; the retrieved documentation does not cover this ticket.",
        "I've passed your ticket to our billing specialist, who will reply to you directly.",
    ),
    "account_manager": (
        "Hand to the account manager; the retrieved documentation does not cover this ticket.",
        "I've passed your ticket to your account manager, who will contact you directly.",
    ),
}
OPENERS = {
    "negative": ("We're sorry for the trouble.", "We're sorry this is causing problems.",
                 "Thanks for telling us, and we're sorry for the frustration."),
    "neutral": ("Thanks for your question.", "Thanks for reaching out.", "Thanks for asking."),
    "positive": ("Thank you for your message.", "Thank you, it's good to hear from you.",
                 "Thanks for the kind words."),
}
NO_DOCS_SENTENCES = (
    "I checked our documentation, and it doesn't answer this question, so I don't want to guess.",
    "Our documentation doesn't cover this, so I don't want to guess.",
    "The documentation I have doesn't answer this, so I won't guess.",
)


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


@dataclass
class MiningResult:
    distractors: dict[str, list[str]]  # triple id -> distractor chunk ids, best first
    distractor_ranks: dict[str, list[int]]  # their 1-based ranks in the hybrid result list
    gold_rank: dict[str, int | None]  # rank of the oracle chunk (None: not in the result list)
    restating: dict[str, list[str]] = field(default_factory=dict)  # chunks skipped: they restate the quote
    collection: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


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

    from hybrid_assets.schema import response_model

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
            model.model_validate({**triple.answer, "answerable": True, "citations": ["S1"]})
        except ValidationError as exc:
            detail = "; ".join(f"answer.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            problems.append(f"triple {triple.id}: {detail}")
    return problems


# -- mining hard negatives ------------------------------------------------------------------------
def snapshot_hash(snapshot: Sequence[SnapshotChunk]) -> str:
    digest = hashlib.sha256()
    for chunk in sorted(snapshot, key=lambda c: c.chunk_id):
        digest.update(f"{chunk.chunk_id}\0{chunk.doc_id}\0{chunk.text}\n".encode())
    return digest.hexdigest()


def _load_snapshot_collection(client, name: str, snapshot: Sequence[SnapshotChunk], embedder, batch_size: int = 200):
    from weaviate.classes.data import DataObject

    from hybrid_assets.store.collections import ensure_collection

    collection = ensure_collection(client, name)
    vectors = embedder.embed([c.embedding_text for c in snapshot])
    for start in range(0, len(snapshot), batch_size):
        objects = [
            DataObject(
                properties={"doc_id": c.doc_id, "title": c.title, "section": c.section, "text": c.text,
                            "position": start + i},
                uuid=c.chunk_id,
                vector=v,
            )
            for i, (c, v) in enumerate(zip(snapshot[start : start + batch_size], vectors[start : start + batch_size]))
        ]
        result = collection.data.insert_many(objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise RuntimeError(f"loading the snapshot into {name} failed: {first.message}")
    return collection


SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def restating_chunks(embedder, triples: Sequence[Triple], snapshot: Sequence[SnapshotChunk],
                     max_quote_similarity: float = 0.75) -> dict[str, set[str]]:
    """triple id -> chunks of *other* documents that restate its answer: they contain the quote
    (whitespace-normalised), or one of their sentences embeds within ``max_quote_similarity`` (cosine)
    of the quote. Sample corpora repeat facts across documents (an FAQ, a pricing page and a product
    page all give the SMS price); such a chunk is no negative, and without the oracle it would teach
    the model to refuse a question its context answers. A false positive only costs one candidate."""
    restating: dict[str, set[str]] = {t.id: set() for t in triples}
    for triple in triples:
        quote = normalise_space(triple.quote)
        restating[triple.id] = {c.chunk_id for c in snapshot
                                if c.doc_id != triple.gold_doc and quote in normalise_space(c.text)}
    if max_quote_similarity >= 1.0 or not triples:
        return restating
    sentences, owners = [], []
    for chunk in snapshot:
        for sentence in SENTENCE_SPLIT.split(chunk.text):
            if len(sentence.strip()) >= 12:
                sentences.append(sentence.strip())
                owners.append(chunk)
    import numpy as np

    # The embedder's vectors are normalised, so the dot product is the cosine.
    similarity = np.asarray(embedder.embed([t.quote for t in triples])) @ np.asarray(embedder.embed(sentences)).T
    for row, triple in zip(similarity, triples):
        for index in np.flatnonzero(row >= max_quote_similarity):
            if owners[index].doc_id != triple.gold_doc:
                restating[triple.id].add(owners[index].chunk_id)
    return restating


def mine_with_ranks(client, embedder, triples: Sequence[Triple], snapshot: Sequence[SnapshotChunk], k: int,
                    alpha: float = 0.6, max_quote_similarity: float = 0.75) -> MiningResult:
    """Hard negatives for every triple, with the ranks behind them (see ``mine_distractors``)."""
    from hybrid_assets.store.collections import hybrid_search

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    started = time.perf_counter()
    gold = {t.id: resolve_gold_chunk(t, snapshot) for t in triples}
    snapshot = list(snapshot)
    per_doc: dict[str, int] = {}
    for chunk in snapshot:
        per_doc[chunk.doc_id] = per_doc.get(chunk.doc_id, 0) + 1
    restating = restating_chunks(embedder, triples, snapshot, max_quote_similarity)
    available = {t.id: len(snapshot) - per_doc[t.gold_doc] - len(restating[t.id]) for t in triples}
    if short := [tid for tid, n in available.items() if n < k]:
        raise RaftDataError(f"the snapshot has fewer than {k} usable chunks outside the gold document for {short}")
    # Enough hits that k remain after dropping the gold document's chunks and the restating ones.
    limit = min(len(snapshot), k + max(per_doc.values()) + max(len(r) for r in restating.values()) + 5)
    name = f"{COLLECTION_PREFIX}{snapshot_hash(snapshot)[:12]}_{uuid.uuid4().hex[:6]}"
    result = MiningResult({}, {}, {}, collection=name)
    try:
        collection = _load_snapshot_collection(client, name, snapshot, embedder)
        vectors = embedder.embed([t.question for t in triples])
        for triple, vector in zip(triples, vectors):
            hits = hybrid_search(collection, triple.question, vector, limit, alpha)
            ids = [h.chunk_id for h in hits]
            oracle = gold[triple.id].chunk_id
            result.gold_rank[triple.id] = ids.index(oracle) + 1 if oracle in ids else None
            skip = restating[triple.id]
            result.restating[triple.id] = [cid for cid in ids if cid in skip]
            chosen = [(rank, h.chunk_id) for rank, h in enumerate(hits, 1)
                      if h.chunk_id != oracle and h.doc_id != triple.gold_doc and h.chunk_id not in skip][:k]
            if len(chosen) < k:
                raise RuntimeError(f"triple {triple.id}: hybrid search returned only {len(chosen)} usable hits (need {k})")
            result.distractors[triple.id] = [cid for _, cid in chosen]
            result.distractor_ranks[triple.id] = [rank for rank, _ in chosen]
    finally:
        if client.collections.exists(name):
            client.collections.delete(name)
    result.seconds = time.perf_counter() - started
    return result


def mine_distractors(client, embedder, triples: Sequence[Triple], snapshot: Sequence[SnapshotChunk], k: int,
                     alpha: float = 0.6, max_quote_similarity: float = 0.75) -> dict[str, list[str]]:
    """triple id -> ``k`` hard-negative chunk ids (best first): the top hybrid-search hits (BM25 + vector,
    ``alpha``) for the question over the snapshot, skipping the oracle, every chunk of the gold
    document and every chunk that restates the quote (``restating_chunks``). The snapshot is embedded
    with ``embedder`` into a throw-away collection (``RaftSnapshot_<hash>_<random>``) on ``client``,
    deleted afterwards even on failure."""
    return mine_with_ranks(client, embedder, triples, snapshot, k, alpha, max_quote_similarity).distractors


# -- building examples ----------------------------------------------------------------------------
def _bucket(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()


def choose_no_oracle(triples: Sequence[Triple], config: RaftConfig) -> set[str]:
    """Exactly round(p_no_oracle * n) triple ids, chosen by a seeded hash of each id: deterministic,
    independent of the triples' order, and mostly stable when triples are added."""
    count = round(config.p_no_oracle * len(triples))
    ranked = sorted((t.id for t in triples), key=lambda tid: _bucket(config.seed, tid))
    return set(ranked[:count])


def _trim(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:—-")
    return cut + "…"


def oracle_resolution(short_id: str, quote: str, resolution: str) -> str:
    head = f'Per {short_id}: "{normalise_space(quote)}"'
    if len(head) > RESOLUTION_MAX:
        raise RaftDataError(f"quote too long for the resolution field ({len(head)} > {RESOLUTION_MAX} characters)")
    rest = normalise_space(resolution)
    if not rest or len(head) + 3 + 12 > RESOLUTION_MAX:  # no room for a meaningful next step
        return head
    return f"{head} — {_trim(rest, RESOLUTION_MAX - len(head) - 3)}"


def not_answerable_answer(triple: Triple, rng: random.Random) -> dict:
    """The honest target when the oracle is missing (see the module docstring for the escalation)."""
    answer = triple.answer
    escalation = dict(answer["escalation"])
    if escalation["level"] == "none":
        escalation = {"level": NO_DOCS_LEVEL, "reason": NO_DOCS_REASON}
    resolution, handover = HANDOVER.get(
        escalation["level"],
        (f"Route to {escalation['level']}; the retrieved documentation does not cover this ticket.",
         "I've passed your ticket to the right team, who will follow up with you."),
    )
    opener = rng.choice(OPENERS.get(answer["sentiment"], OPENERS["neutral"]))
    signature = signature_of(answer["reply"])
    if signature is None:
        raise RaftDataError(f"triple {triple.id}: reply is not signed ('{SIGN_OFF_PREFIX}The … Support Team')")
    reply = f"{opener} {rng.choice(NO_DOCS_SENTENCES)} {handover}\n\n{signature}"
    return {
        "sentiment": answer["sentiment"],
        "category": answer["category"],
        "answerable": False,
        "escalation": escalation,
        "citations": [],
        "resolution": resolution,
        "reply": reply,
    }


def build_raft_examples(triples: Sequence[Triple], snapshot: Sequence[SnapshotChunk],
                        distractors: dict[str, list[str]], config: RaftConfig = RaftConfig()) -> list[dict]:
    """Behaviour ticket records (pure and deterministic given ``config.seed``), one per triple, in the
    triples' order. ``distractors[triple id]`` must hold at least k (k+1 for a no-oracle example)
    chunk ids of the snapshot, none of them the oracle or from the gold document."""
    by_id = {c.chunk_id: c for c in snapshot}
    no_oracle = choose_no_oracle(triples, config)
    k = config.distractors
    examples = []
    for triple in triples:
        oracle = resolve_gold_chunk(triple, snapshot)
        wanted = k + 1 if triple.id in no_oracle else k
        ids = list(distractors.get(triple.id, []))
        if len(ids) < wanted:
            raise RaftDataError(f"triple {triple.id}: needs {wanted} distractors, got {len(ids)}")
        chunks = []
        for cid in ids[:wanted]:
            if cid not in by_id:
                raise RaftDataError(f"triple {triple.id}: distractor {cid} is not in the snapshot")
            chunk = by_id[cid]
            if cid == oracle.chunk_id or chunk.doc_id == triple.gold_doc:
                raise RaftDataError(f"triple {triple.id}: distractor {cid} is the oracle or from the gold document")
            chunks.append(chunk)
        rng = random.Random(_bucket(config.seed, triple.id))  # per example: independent of the others
        if triple.id not in no_oracle:
            chunks.append(oracle)
        rng.shuffle(chunks)
        context = [{"id": f"S{i}", "source": c.doc_id, "text": c.passage_text} for i, c in enumerate(chunks, 1)]
        if triple.id in no_oracle:
            answer = not_answerable_answer(triple, rng)
        else:
            short_id = context[chunks.index(oracle)]["id"]
            answer = {
                "sentiment": triple.answer["sentiment"],
                "category": triple.answer["category"],
                "answerable": True,
                "escalation": dict(triple.answer["escalation"]),
                "citations": [short_id],
                "resolution": oracle_resolution(short_id, triple.quote, triple.answer["resolution"]),
                "reply": triple.answer["reply"],
            }
        examples.append({
            "id": f"{EXAMPLE_ID_PREFIX}{triple.id}",
            "ticket": triple.question,
            "customer_id": None,
            "context": context,
            "answer": answer,
        })
    return examples


# -- files ----------------------------------------------------------------------------------------
def _file_mode(path: Path) -> int:
    """The mode the file has now, else 0666 minus the umask (what a plain ``open`` would give)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_jsonl_atomic(path: Path, rows: Sequence[dict]) -> None:
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


def snapshot_corpus(docs_dir: Path, out_path: Path, cache_dir: Path) -> dict:
    """Pin the chunks of the documents in ``docs_dir`` (parse + chunk exactly like the knowledge path)
    into ``out_path``, one ``{chunk_id, doc_id, title, section, text}`` per line, in document order.
    A document that fails to parse is an error: a pinned snapshot must be complete."""
    from hybrid_assets.knowledge.documents import file_set_version, scan_documents
    from hybrid_assets.knowledge.pipeline import build_document_chunks

    refs = scan_documents(Path(docs_dir))
    chunking = build_document_chunks(refs, Path(cache_dir))
    if chunking.failures:
        raise RaftDataError(f"cannot snapshot {docs_dir}: documents failed to parse: {chunking.failures}")
    rows = [
        {"chunk_id": c.chunk_id, "doc_id": c.doc_id, "title": c.title, "section": c.section, "text": c.text}
        for doc_id in sorted(chunking.chunks_by_doc)
        for c in sorted(chunking.chunks_by_doc[doc_id], key=lambda c: c.position)
    ]
    _write_jsonl_atomic(Path(out_path), rows)
    return {"chunks": len(rows), "documents": len(chunking.chunks_by_doc), "docs_version": file_set_version(refs),
            "path": str(out_path)}


def validate_examples(examples: Sequence[dict], labels_path: Path) -> list[str]:
    """Problems the project's behaviour loader finds in ``examples`` (empty list = all valid)."""
    from hybrid_assets.behaviour.dataset import LABELS_FILE, load_behaviour_data
    from hybrid_assets.schema import LabelSpace

    labels = LabelSpace.from_file(labels_path)
    with tempfile.TemporaryDirectory(prefix="raft-check-") as folder:
        shutil.copy(labels_path, Path(folder) / LABELS_FILE)
        _write_jsonl_atomic(Path(folder) / "raft_examples.jsonl", examples)
        data = load_behaviour_data(Path(folder), labels)
    problems = [str(p) for p in data.problems] + [f"{origin}: duplicate ticket" for origin in data.duplicates]
    if not problems and len(data.records) != len(examples):
        problems.append(f"loader kept {len(data.records)} of {len(examples)} examples")
    return problems


def generate_raft_file(triples_path: Path, snapshot_path: Path, out_path: Path, client,
                       config: RaftConfig = RaftConfig(), embedder=None, labels_path: Path | None = None) -> dict:
    """Load + check the triples against the snapshot, mine hard negatives in the Weaviate behind
    ``client``, build the examples, validate them with the behaviour loader and write ``out_path``
    atomically. ``labels_path`` defaults to ``labels.json`` next to ``out_path`` (the behaviour folder).
    Returns the run's statistics."""
    from hybrid_assets.schema import LabelSpace

    started = time.perf_counter()
    out_path = Path(out_path)
    labels_path = Path(labels_path) if labels_path else out_path.parent / "labels.json"
    labels = LabelSpace.from_file(labels_path)
    snapshot = load_snapshot(Path(snapshot_path))
    triples = load_triples(Path(triples_path))
    problems = check_triples(triples, snapshot, labels)
    if problems:
        raise RaftDataError(f"{len(problems)} problem(s) in {triples_path}:\n" + "\n".join(problems))
    if embedder is None:
        from hybrid_assets.knowledge.embedding import Embedder
        from hybrid_assets.settings import load_settings

        embedder = Embedder(load_settings().embedding_model)

    mining = mine_with_ranks(client, embedder, triples, snapshot, config.distractors + 1, config.alpha,
                             config.max_quote_similarity)
    examples = build_raft_examples(triples, snapshot, mining.distractors, config)
    problems = validate_examples(examples, labels_path)
    if problems:
        raise RaftDataError("generated examples fail behaviour validation:\n" + "\n".join(problems[:20]))
    _write_jsonl_atomic(out_path, examples)

    no_oracle = choose_no_oracle(triples, config)
    used_ranks = [r for t in triples for r in mining.distractor_ranks[t.id][: config.distractors + (t.id in no_oracle)]]
    gold_ranks = [r for r in mining.gold_rank.values()]
    found = [r for r in gold_ranks if r is not None]
    return {
        "examples": len(examples),
        "with_oracle": len(examples) - len(no_oracle),
        "no_oracle": len(no_oracle),
        "context_size": config.distractors + 1,
        "gold_docs": len({t.gold_doc for t in triples}),
        "categories": len({t.answer["category"] for t in triples}),
        "mean_distractor_rank": round(sum(used_ranks) / len(used_ranks), 2),
        "gold_recall_at_1": round(sum(r == 1 for r in found) / len(gold_ranks), 3),
        "gold_recall_at_5": round(sum(r <= 5 for r in found) / len(gold_ranks), 3),
        "mean_gold_rank": round(sum(found) / len(found), 2) if found else None,
        "gold_not_retrieved": sum(r is None for r in gold_ranks),
        "restating_chunks_skipped": sum(len(r) for r in mining.restating.values()),
        "triples_with_restating_chunks": sum(bool(r) for r in mining.restating.values()),
        "snapshot_chunks": len(snapshot),
        "snapshot_sha256": snapshot_hash(snapshot)[:16],
        "collection": mining.collection,
        "mining_seconds": round(mining.seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "config": {"distractors": config.distractors, "p_no_oracle": config.p_no_oracle, "seed": config.seed,
                   "alpha": config.alpha, "max_quote_similarity": config.max_quote_similarity},
        "out": str(out_path),
    }


# -- CLI hook (wired into `hybrid-assets raft` by cli.py) ----------------------------------------
def default_paths(settings=None) -> dict[str, Path]:
    from hybrid_assets.settings import load_settings

    settings = settings or load_settings()
    raft_dir = settings.data_dir / "raft"
    return {
        "docs": settings.docs_dir,
        "snapshot": raft_dir / "corpus_snapshot.jsonl",
        "triples": raft_dir / "triples.jsonl",
        "out": settings.behaviour_dir / "raft_examples.jsonl",
        "cache": settings.cache_dir,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``raft snapshot`` re-pins the corpus; ``raft check`` validates the triples; ``raft generate``
    mines distractors in Weaviate (embedded server by default) and writes the behaviour file."""
    import argparse

    from hybrid_assets.settings import apply_offline_env, load_settings

    apply_offline_env()
    settings = load_settings()
    paths = default_paths(settings)
    parser = argparse.ArgumentParser(prog="raft", description="RAFT training data (behaviour data).")
    sub = parser.add_subparsers(dest="command", required=True)
    snap = sub.add_parser("snapshot", help="pin the current documents' chunks")
    snap.add_argument("--docs", type=Path, default=paths["docs"])
    snap.add_argument("--out", type=Path, default=paths["snapshot"])
    check = sub.add_parser("check", help="check that every triple resolves against the snapshot")
    gen = sub.add_parser("generate", help="mine distractors and write the RAFT behaviour file")
    for p in (check, gen):
        p.add_argument("--triples", type=Path, default=paths["triples"])
        p.add_argument("--snapshot", type=Path, default=paths["snapshot"])
    gen.add_argument("--out", type=Path, default=paths["out"])
    syn = sub.add_parser("synthesize", help="draft triples with an OpenAI-compatible endpoint (off unless "
                         "HYBRID_SYNTH_BASE_URL is set; see behaviour/synthesis.py)")
    syn.add_argument("--snapshot", type=Path, default=paths["snapshot"])
    syn.add_argument("--out", type=Path, default=paths["triples"].with_name("synthetic_triples.jsonl"))
    syn.add_argument("--limit", type=int, default=20, help="chunks to draft from (one request each)")
    syn.add_argument("--seed", type=int, default=0)
    gen.add_argument("--distractors", type=int, default=RaftConfig.distractors)
    gen.add_argument("--p-no-oracle", type=float, default=RaftConfig.p_no_oracle)
    gen.add_argument("--seed", type=int, default=RaftConfig.seed)
    gen.add_argument("--alpha", type=float, default=RaftConfig.alpha)
    gen.add_argument("--max-quote-similarity", type=float, default=RaftConfig.max_quote_similarity)
    args = parser.parse_args(list(argv) if argv is not None else None)

    if args.command == "snapshot":
        print(json.dumps(snapshot_corpus(args.docs, args.out, paths["cache"]), indent=2))
        return 0
    if args.command == "check":
        from hybrid_assets.schema import LabelSpace

        labels = LabelSpace.from_file(settings.behaviour_dir / "labels.json")
        triples = load_triples(args.triples)
        problems = check_triples(triples, load_snapshot(args.snapshot), labels)
        for problem in problems:
            print(problem)
        print(f"{len(triples)} triples, {len(problems)} problem(s)")
        return 1 if problems else 0

    if args.command == "synthesize":
        return _synthesize(args, settings)

    from hybrid_assets.store.client import open_client

    config = RaftConfig(args.distractors, args.p_no_oracle, args.seed, args.alpha, args.max_quote_similarity)
    with open_client(settings) as client:
        stats = generate_raft_file(args.triples, args.snapshot, args.out, client, config)
    print(json.dumps(stats, indent=2))
    return 0


def _synthesize(args, settings) -> int:
    from hybrid_assets.behaviour.synthesis import EndpointConfig, SynthesisDisabled, synthesise_triples, write_triples
    from hybrid_assets.schema import LabelSpace

    try:
        endpoint = EndpointConfig.from_env()
    except SynthesisDisabled as exc:
        print(f"error: {exc}")
        return 2
    labels = LabelSpace.from_file(settings.behaviour_dir / "labels.json")
    result = synthesise_triples(load_snapshot(args.snapshot), labels, endpoint, args.limit, args.seed)
    for reason in result.rejected:
        print(f"rejected: {reason}")
    if result.triples:
        write_triples(args.out, result.triples)
    print(f"{len(result.triples)} triple(s) written to {args.out}, {len(result.rejected)} rejected; review them, then "
          f"`hybrid-assets raft generate --triples {args.out} --out <behaviour file>`")
    return 0 if result.triples else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
