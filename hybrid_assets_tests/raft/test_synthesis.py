"""Optional question synthesis (``raft/synthesis.py``) against a local OpenAI-compatible HTTP
server (the endpoint is a third-party service, so the test stands one up in-process): the request
carries the model, the bearer token and the passage; good drafts become triples that pass the same
checks as hand-written ones; a draft that misquotes its passage or breaks the label space is rejected
with the reason and never written; with no endpoint configured nothing is requested."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hybrid_assets.raft.records import check_triples, load_snapshot, load_triples, normalise_space
from hybrid_assets.raft.synthesis import EndpointConfig, SynthesisDisabled, synthesise_triples, write_triples
from hybrid_assets.schema import LabelSpace
from hybrid_assets.settings import PROJECT_ROOT

SNAPSHOT = load_snapshot(PROJECT_ROOT / "data" / "raft" / "corpus_snapshot.jsonl")
LABELS = LabelSpace.from_file(PROJECT_ROOT / "data" / "behaviour" / "labels.json")


def _unique_sentence(chunk) -> str:
    """A sentence of the chunk that no other chunk of its document contains (a valid quote)."""
    siblings = [normalise_space(c.text) for c in SNAPSHOT if c.doc_id == chunk.doc_id and c is not chunk]
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", normalise_space(chunk.text)) if 20 <= len(s) <= 240]
    return next(s for s in sentences if not any(s in other for other in siblings))


def _draft(chunk, mode: str) -> str:
    answer = {"sentiment": "neutral", "category": "other",
              "escalation": {"level": "none", "reason": "Rule 5: the documentation answers it."},
              "resolution": "Share the documented steps.",
              "reply": f"Thanks for asking! {_unique_sentence(chunk)}\n\n— The {LABELS.company} Support Team"}
    quote = _unique_sentence(chunk)
    if mode == "misquote":
        quote = "We refund every order within 90 days, no questions asked."
    if mode == "bad_label":
        answer["category"] = "astrology"
    body = json.dumps({"question": f"Question about {chunk.doc_id}?", "quote": quote, "answer": answer})
    return f"Here you go:\n```json\n{body}\n```" if mode == "fenced" else body


class FakeEndpoint(BaseHTTPRequestHandler):
    modes = ["fenced", "misquote", "bad_label", "plain"]
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server API)
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeEndpoint.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": request})
        passage = request["messages"][-1]["content"]
        chunk = next(c for c in SNAPSHOT if normalise_space(c.text) in normalise_space(passage))
        mode = self.modes[(len(FakeEndpoint.seen) - 1) % len(self.modes)]
        reply = {"choices": [{"message": {"role": "assistant", "content": _draft(chunk, mode)}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def endpoint():
    FakeEndpoint.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_good_drafts_become_checked_triples_and_bad_ones_are_rejected(endpoint, tmp_path):
    config = EndpointConfig(endpoint, "some-model", api_key="sk-test")

    result = synthesise_triples(SNAPSHOT, LABELS, config, limit=4, seed=3)

    assert len(FakeEndpoint.seen) == 4
    first = FakeEndpoint.seen[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    assert first["body"]["model"] == "some-model"
    assert LABELS.company in first["body"]["messages"][0]["content"]
    assert len(result.triples) == 2 and len(result.rejected) == 2
    assert "not copied verbatim" in result.rejected[0]
    assert "astrology" in result.rejected[1] or "category" in result.rejected[1]

    out = tmp_path / "synthetic_triples.jsonl"
    write_triples(out, result.triples)
    triples = load_triples(out)  # the same loader and checks as hand-written triples
    assert check_triples(triples, SNAPSHOT, LABELS) == []
    assert all(t.id.startswith("syn-") for t in triples)


def test_without_an_endpoint_nothing_is_requested(monkeypatch):
    monkeypatch.delenv("HYBRID_SYNTH_BASE_URL", raising=False)
    with pytest.raises(SynthesisDisabled, match="HYBRID_SYNTH_BASE_URL"):
        EndpointConfig.from_env()
    monkeypatch.setenv("HYBRID_SYNTH_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("HYBRID_SYNTH_MODEL", raising=False)
    with pytest.raises(SynthesisDisabled, match="HYBRID_SYNTH_MODEL"):
        EndpointConfig.from_env()


def test_an_unreachable_endpoint_is_reported_per_chunk():
    config = EndpointConfig("http://127.0.0.1:9/v1", "m", timeout_s=2)
    result = synthesise_triples(SNAPSHOT, LABELS, config, limit=2)
    assert result.triples == [] and len(result.rejected) == 2
