"""RAFT triples + mined distractors -> behaviour examples (oracle among hard negatives, or the
honest not-answerable answer when the oracle is left out), checked by the behaviour loader."""

from __future__ import annotations

import hashlib
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hybrid_assets.behaviour.dataset import LABELS_FILE, load_behaviour_data
from hybrid_assets.raft.records import (
    RESOLUTION_MAX,
    SIGN_OFF_PREFIX,
    RaftConfig,
    RaftDataError,
    SnapshotChunk,
    Triple,
    normalise_space,
    resolve_gold_chunk,
    signature_of,
    write_jsonl_atomic,
)
from hybrid_assets.schema import ANSWER, NOT_ANSWERABLE, LabelSpace, not_answerable_escalation

EXAMPLE_ID_PREFIX = "raft-"
# Reason of the policy's rule 6 ("a question the documentation does not answer"); its level comes
# from the label space (``LabelSpace.not_answerable_level``), never a hard-coded name.
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


def no_oracle_answer(triple: Triple, rng: random.Random, labels: LabelSpace) -> dict:
    """The honest target when the oracle is missing (see the package docstring for the escalation)."""
    answer = triple.answer
    escalation = not_answerable_escalation(labels, answer["escalation"], NO_DOCS_REASON)
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
        "decision": NOT_ANSWERABLE,
        "escalation": escalation,
        "citations": [],
        "resolution": resolution,
        "reply": reply,
    }


def build_raft_examples(triples: Sequence[Triple], snapshot: Sequence[SnapshotChunk],
                        distractors: dict[str, list[str]], config: RaftConfig, labels: LabelSpace) -> list[dict]:
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
            answer = no_oracle_answer(triple, rng, labels)
        else:
            short_id = context[chunks.index(oracle)]["id"]
            answer = {
                "sentiment": triple.answer["sentiment"],
                "category": triple.answer["category"],
                "decision": ANSWER,
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


def validate_examples(examples: Sequence[dict], labels_path: Path) -> list[str]:
    """Problems the project's behaviour loader finds in ``examples`` (empty list = all valid)."""
    labels = LabelSpace.from_file(labels_path)
    with tempfile.TemporaryDirectory(prefix="raft-check-") as folder:
        shutil.copy(labels_path, Path(folder) / LABELS_FILE)
        write_jsonl_atomic(Path(folder) / "raft_examples.jsonl", examples)
        data = load_behaviour_data(Path(folder), labels)
    problems = [str(p) for p in data.problems] + [f"{origin}: duplicate ticket" for origin in data.duplicates]
    if not problems and len(data.records) != len(examples):
        problems.append(f"loader kept {len(data.records)} of {len(examples)} examples")
    return problems


