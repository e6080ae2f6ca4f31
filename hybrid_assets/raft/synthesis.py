"""Optional: draft RAFT triples with an OpenAI-compatible chat endpoint. Off by default.

Hand-written triples (``data/raft/triples.jsonl``) are the default and need no network. A user with
an endpoint (OpenAI, a local vLLM / llama.cpp server, ...) can draft more: for each sampled chunk of
the pinned corpus snapshot, the endpoint is asked for a customer question that the chunk answers, one
sentence quoted verbatim from it, and the answer fields of our schema. Every draft is checked exactly
like a hand-written triple (``raft.check_triples``: the quote appears verbatim in exactly one chunk of
that document, labels are in the label space, the reply is signed) and must quote *its own* chunk;
drafts that fail are reported with the reason and never written. The output is a triples file for a
person to review and then pass to ``raft generate --triples`` - never training data by itself.

Configuration (environment): ``HYBRID_SYNTH_BASE_URL`` (e.g. ``https://api.openai.com/v1``; unset =
synthesis disabled, so nothing here touches the network by default), ``HYBRID_SYNTH_MODEL`` and
``HYBRID_SYNTH_API_KEY`` (optional, sent as a bearer token).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hybrid_assets.raft.records import (
    QUOTE_MAX,
    RaftDataError,
    SnapshotChunk,
    Triple,
    check_triples,
    normalise_space,
    write_jsonl_atomic,
)
from hybrid_assets.settings import env_value

SYNTH_ID_PREFIX = "syn-"

INSTRUCTIONS = """You write training data for {company}'s customer-support assistant.
Given one passage of {company}'s documentation, write ONE realistic customer ticket that this passage
answers, and the ideal answer. Reply with one JSON object and nothing else:
{{"question": "<the ticket, as a customer would write it>",
 "quote": "<one sentence copied character for character from the passage that answers it, at most {quote_max} characters>",
 "answer": {{"sentiment": "<one of {sentiments}>",
            "category": "<one of {categories}>",
            "escalation": {{"level": "<one of {levels}>", "reason": "<the escalation policy rule that applies>"}},
            "resolution": "<the next step for the agent>",
            "reply": "<a warm, plain reply using only the passage, ending with a line '— The {company} Support Team'>"}}}}
Escalation policy, first match wins: 1 security (compromise, leaked key, privacy request);
2 engineering_oncall (outage, ongoing incident); 3 account_manager (Scale/Enterprise customer threatening
to cancel); 4 billing_specialist (refund outside policy, dispute over $500, chargeback); 5 none (the
documentation answers it); 6 tier_2 (anything else)."""


class SynthesisDisabled(RuntimeError):
    """No endpoint is configured (the default): synthesis never reaches the network."""


@dataclass(frozen=True)


class EndpointConfig:
    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    temperature: float = 0.7

    @classmethod
    def from_env(cls) -> "EndpointConfig":
        base_url = (env_value("HYBRID_SYNTH_BASE_URL") or "").strip()
        if not base_url:
            raise SynthesisDisabled(
                "question synthesis is off: set HYBRID_SYNTH_BASE_URL (an OpenAI-compatible endpoint, e.g. "
                "https://api.openai.com/v1) and HYBRID_SYNTH_MODEL to use it"
            )
        model = (env_value("HYBRID_SYNTH_MODEL") or "").strip()
        if not model:
            raise SynthesisDisabled("HYBRID_SYNTH_BASE_URL is set but HYBRID_SYNTH_MODEL is not")
        return cls(base_url.rstrip("/"), model, env_value("HYBRID_SYNTH_API_KEY") or None)


@dataclass


class SynthesisResult:
    triples: list[dict]
    rejected: list[str]  # "chunk <id> (<doc>): <reason>"


def draft_messages(chunk: SnapshotChunk, labels) -> list[dict]:
    system = INSTRUCTIONS.format(
        company=labels.company, quote_max=QUOTE_MAX, sentiments=", ".join(labels.sentiments),
        categories=", ".join(labels.categories), levels=", ".join(labels.escalation_levels),
    )
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"PASSAGE (from {chunk.doc_id}):\n{chunk.passage_text}"}]


def parse_draft(content: str) -> dict:
    """The JSON object of a chat reply (models often wrap it in a ``` fence or add a sentence)."""
    fenced = re.search(r"```(?:json)?\s*(\{.*\})\s*```", content, re.DOTALL)
    text = fenced.group(1) if fenced else content[content.find("{"): content.rfind("}") + 1]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RaftDataError(f"the reply is not a JSON object ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise RaftDataError("the reply is not a JSON object")
    return data


def request_draft(http, config: EndpointConfig, messages: list[dict]) -> dict:
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    response = http.post(f"{config.base_url}/chat/completions", headers=headers, json={
        "model": config.model, "messages": messages, "temperature": config.temperature})
    if response.status_code != 200:
        raise RaftDataError(f"endpoint answered HTTP {response.status_code}: {response.text[:200]}")
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise RaftDataError(f"endpoint reply has no choices[0].message.content ({exc!r})") from exc
    return parse_draft(content)


def check_draft(draft: dict, chunk: SnapshotChunk, snapshot: Sequence[SnapshotChunk], labels) -> dict:
    """The draft as a triple row, or RaftDataError with every reason it is unusable."""
    missing = [name for name in ("question", "quote", "answer") if name not in draft]
    if missing:
        raise RaftDataError(f"missing field(s) {missing}")
    row = {"id": f"{SYNTH_ID_PREFIX}{chunk.chunk_id[:8]}", "question": str(draft["question"]).strip(),
           "gold_doc": chunk.doc_id, "quote": str(draft["quote"]).strip(), "answer": draft["answer"]}
    if not row["question"] or not isinstance(row["answer"], dict):
        raise RaftDataError("empty question or answer is not an object")
    if normalise_space(row["quote"]) not in normalise_space(chunk.text):
        raise RaftDataError("the quote is not copied verbatim from the passage")
    triple = Triple(row["id"], row["question"], row["gold_doc"], row["quote"], row["answer"])
    problems = check_triples([triple], snapshot, labels)
    if problems:
        raise RaftDataError("; ".join(problems))
    return row


def synthesise_triples(snapshot: Sequence[SnapshotChunk], labels, config: EndpointConfig, limit: int,
                       seed: int = 0, http=None, progress=None) -> SynthesisResult:
    """Draft up to ``limit`` triples from a seeded sample of snapshot chunks (one request each)."""
    import httpx

    chunks = [c for c in snapshot if len(normalise_space(c.text)) >= 80]  # headings alone answer nothing
    random.Random(seed).shuffle(chunks)
    owns_http = http is None
    http = http or httpx.Client(timeout=config.timeout_s)
    result = SynthesisResult([], [])
    try:
        for chunk in chunks[:limit]:
            try:
                result.triples.append(check_draft(request_draft(http, config, draft_messages(chunk, labels)),
                                                  chunk, snapshot, labels))
            except (RaftDataError, httpx.HTTPError) as exc:
                result.rejected.append(f"chunk {chunk.chunk_id} ({chunk.doc_id}): {exc}")
            if progress:
                progress(len(result.triples), len(result.rejected))
    finally:
        if owns_http:
            http.close()
    return result


def write_triples(path: Path, rows: Sequence[dict]) -> None:
    write_jsonl_atomic(path, rows)
