"""Contract of ``hybrid_assets.raft`` (RAFT training data as behaviour data):

- ``build_raft_examples`` is pure and deterministic given the seed; exactly round(p * n) examples
  lose their oracle; every context has k+1 passages; an answerable example cites the oracle and its
  resolution quotes the supporting sentence; a no-oracle example is the honest not-answerable answer
  (rule 6 / tier_2 for documented questions, the ticket-triggered level kept for rules 1-4); every
  example passes the project's own behaviour loader;
- bad input fails with messages that point at the problem (triple id, file:line and field);
- every shipped triple resolves against the pinned corpus snapshot, and the shipped RAFT file is
  valid behaviour data built from them;
- (integration) hard negatives mined with hybrid search in a real Weaviate are never from the gold
  document, the gold chunk ranks near the top for its question, and the throw-away collection is gone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_assets.behaviour.dataset import load_behaviour_data
from hybrid_assets.raft.examples import build_raft_examples, choose_no_oracle, validate_examples
from hybrid_assets.raft.mining import mine_with_ranks, restating_chunks
from hybrid_assets.raft.records import (
    RESOLUTION_MAX,
    RaftConfig,
    RaftDataError,
    SnapshotChunk,
    Triple,
    check_triples,
    load_snapshot,
    load_triples,
    resolve_gold_chunk,
)
from hybrid_assets.schema import LabelSpace
from hybrid_assets.settings import PROJECT_ROOT

FIXTURE_LABELS = Path(__file__).resolve().parent.parent / "fixtures" / "behaviour" / "labels.json"
LABELS = LabelSpace.from_file(FIXTURE_LABELS)
SIGN = "\n\n— The Parcelwise Support Team"
SNAPSHOT_FILE = PROJECT_ROOT / "data/raft/corpus_snapshot.jsonl"
TRIPLES_FILE = PROJECT_ROOT / "data/raft/triples.jsonl"
RAFT_FILE = PROJECT_ROOT / "data/behaviour/raft_examples.jsonl"
DATA_LABELS = PROJECT_ROOT / "data/behaviour/labels.json"


# -- a tiny hand-made corpus ----------------------------------------------------------------------
def _chunk(cid: str, doc: str, section: str, text: str) -> SnapshotChunk:
    return SnapshotChunk(cid, doc, doc.split("/")[-1].split(".")[0].title(), section, text)


SNAPSHOT = [
    _chunk("c-void-1", "guides/voiding.md", "Time limits", "Labels can be voided within 28 days. USPS allows 30 days. "
           "The carrier must not have scanned the label."),
    _chunk("c-void-2", "guides/voiding.md", "Refunds", "The refund is automatic. It goes back to the card on file."),
    _chunk("c-rate-1", "product/rates.txt", "Limits", "Starter allows 60 requests per minute. Growth allows 300."),
    _chunk("c-sms-1", "pricing/sms.html", "SMS", "SMS notifications cost $0.02 per message on every plan."),
    _chunk("c-key-1", "product/keys.md", "Leaks", "If a key leaks, delete it immediately and contact support."),
    _chunk("c-ret-1", "product/returns.docx", "Window", "The default return window is 30 days."),
    _chunk("c-trk-1", "guides/tracking.md", "Polling", "Tracking events are pulled every 30 minutes."),
    _chunk("c-sso-1", "policies/access.docx", "SSO", "SSO is available on Scale and Enterprise."),
]


def _triple(i: int, doc: str, quote: str, level: str = "none", category: str = "labels",
            sentiment: str = "neutral", resolution: str = "Explain the documented answer.") -> Triple:
    reason = "Rule 5: documented." if level == "none" else f"Rule 1: ticket-triggered ({level})."
    return Triple(
        id=f"rt-{i:04d}",
        question=f"Question number {i} about {doc}?",
        gold_doc=doc,
        quote=quote,
        answer={
            "sentiment": sentiment,
            "category": category,
            "escalation": {"level": level, "reason": reason},
            "resolution": resolution,
            "reply": f"Thanks for asking. {quote}{SIGN}",
        },
    )


TRIPLES = [
    _triple(1, "guides/voiding.md", "USPS allows 30 days."),
    _triple(2, "guides/voiding.md", "The refund is automatic."),
    _triple(3, "product/rates.txt", "Growth allows 300.", category="api"),
    _triple(4, "pricing/sms.html", "SMS notifications cost $0.02 per message on every plan.", category="billing"),
    _triple(5, "product/keys.md", "delete it immediately", level="security", category="api", sentiment="negative"),
    _triple(6, "product/returns.docx", "The default return window is 30 days.", category="returns"),
    _triple(7, "guides/tracking.md", "Tracking events are pulled every 30 minutes.", category="tracking"),
    _triple(8, "policies/access.docx", "SSO is available on Scale and Enterprise.", category="account_access",
            sentiment="positive"),
    _triple(9, "pricing/sms.html", "$0.02 per message", level="billing_specialist", category="billing",
            sentiment="negative"),
    _triple(10, "product/returns.docx", "return window", category="returns"),
]


def _distractors(k: int) -> dict[str, list[str]]:
    """k hard negatives per triple, never from the gold document (as mining guarantees)."""
    return {t.id: [c.chunk_id for c in SNAPSHOT if c.doc_id != t.gold_doc][:k] for t in TRIPLES}


CONFIG = RaftConfig(distractors=3, p_no_oracle=0.2, seed=7)
DISTRACTORS = _distractors(CONFIG.distractors + 1)
ORACLE = {t.id: resolve_gold_chunk(t, SNAPSHOT) for t in TRIPLES}


def _examples(config: RaftConfig = CONFIG) -> list[dict]:
    return build_raft_examples(TRIPLES, SNAPSHOT, DISTRACTORS, config, LABELS)


def _split(examples):
    with_oracle = [e for e in examples if e["answer"]["decision"] == "answer"]
    return with_oracle, [e for e in examples if e["answer"]["decision"] != "answer"]


# -- build_raft_examples ----------------------------------------------------------------------------
def test_build_is_deterministic_and_the_no_oracle_fraction_is_exact():
    first, second = _examples(), _examples()
    assert first == second
    with_oracle, without = _split(first)
    assert len(without) == round(0.2 * len(TRIPLES)) == 2
    assert {e["id"] for e in without} == {f"raft-{tid}" for tid in choose_no_oracle(TRIPLES, CONFIG)}
    # the order of the triples does not matter, the seed does
    assert choose_no_oracle(list(reversed(TRIPLES)), CONFIG) == choose_no_oracle(TRIPLES, CONFIG)
    chosen_by_seed = {frozenset(choose_no_oracle(TRIPLES, RaftConfig(seed=s))) for s in range(8)}
    assert len(chosen_by_seed) > 1
    assert len(_split(_examples(RaftConfig(p_no_oracle=0.0)))[1]) == 0
    assert len(_split(_examples(RaftConfig(p_no_oracle=1.0)))[0]) == 0


@pytest.mark.parametrize("k", [1, 3])
def test_context_size_is_constant_with_or_without_the_oracle(k):
    config = RaftConfig(distractors=k, p_no_oracle=0.3, seed=1)
    examples = build_raft_examples(TRIPLES, SNAPSHOT, _distractors(k + 1), config, LABELS)
    for example in examples:
        assert [c["id"] for c in example["context"]] == [f"S{i}" for i in range(1, k + 2)]
        assert all(c["source"] in {s.doc_id for s in SNAPSHOT} for c in example["context"])
        assert example["customer_id"] is None
        assert set(example) == {"id", "ticket", "customer_id", "context", "answer"}


def test_answerable_examples_cite_the_oracle_and_quote_it():
    with_oracle, _ = _split(_examples())
    assert with_oracle
    by_id = {f"raft-{t.id}": t for t in TRIPLES}
    for example in with_oracle:
        triple = by_id[example["id"]]
        oracle = ORACLE[triple.id]
        (cited,) = example["answer"]["citations"]
        passage = next(c for c in example["context"] if c["id"] == cited)
        assert passage["source"] == triple.gold_doc and passage["text"] == oracle.passage_text
        assert triple.quote in passage["text"]
        assert example["answer"]["resolution"].startswith(f'Per {cited}: "{triple.quote}" — ')
        assert len(example["answer"]["resolution"]) <= RESOLUTION_MAX
        # every other passage is a distractor from another document
        others = [c for c in example["context"] if c["id"] != cited]
        assert all(c["source"] != triple.gold_doc for c in others)
        for key in ("sentiment", "category", "escalation", "reply"):
            assert example["answer"][key] == triple.answer[key]
        assert example["ticket"] == triple.question


def test_the_oracle_is_not_always_in_the_same_place():
    with_oracle, _ = _split(_examples())
    assert len({e["answer"]["citations"][0] for e in with_oracle}) > 1


def test_no_oracle_examples_are_honest_not_answerable_answers():
    config = RaftConfig(p_no_oracle=1.0)  # every triple, so every escalation case is covered
    examples = build_raft_examples(TRIPLES, SNAPSHOT, DISTRACTORS, config, LABELS)
    for triple, example in zip(TRIPLES, examples):
        answer = example["answer"]
        assert answer["decision"] == "not_answerable" and answer["citations"] == []
        assert all(c["source"] != triple.gold_doc for c in example["context"])
        assert all(ORACLE[triple.id].text not in c["text"] for c in example["context"])
        assert (answer["category"], answer["sentiment"]) == (triple.answer["category"], triple.answer["sentiment"])
        if triple.answer["escalation"]["level"] == "none":  # documented question, docs missing: rule 6
            assert answer["escalation"]["level"] == LABELS.not_answerable_level == "tier_2"
            assert answer["escalation"]["reason"].startswith("Rule 6:")
        else:  # rules 1-4 are triggered by the ticket itself and still apply
            assert answer["escalation"] == triple.answer["escalation"]
        assert answer["reply"].endswith(SIGN)
        assert triple.quote not in answer["reply"] and "guess" in answer["reply"]


def test_every_example_passes_the_behaviour_loader(tmp_path):
    examples = build_raft_examples(TRIPLES, SNAPSHOT, DISTRACTORS, RaftConfig(p_no_oracle=0.5), LABELS)
    assert validate_examples(examples, FIXTURE_LABELS) == []
    folder = tmp_path / "behaviour"
    folder.mkdir()
    (folder / "labels.json").write_text(FIXTURE_LABELS.read_text())
    (folder / "raft.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
    from hybrid_assets.schema import LabelSpace

    data = load_behaviour_data(folder, LabelSpace.from_file(FIXTURE_LABELS))
    assert data.problems == () and data.duplicates == ()
    assert len(data.records) == len(examples)


def test_a_long_resolution_is_trimmed_but_keeps_the_quote():
    triple = _triple(1, "guides/voiding.md", "USPS allows 30 days.", resolution="Explain the void window " * 30)
    (example,) = build_raft_examples([triple], SNAPSHOT, {triple.id: DISTRACTORS[triple.id]},
                                     RaftConfig(p_no_oracle=0), LABELS)
    resolution = example["answer"]["resolution"]
    assert len(resolution) <= RESOLUTION_MAX and resolution.endswith("…")
    assert '"USPS allows 30 days."' in resolution


def test_bad_distractors_are_refused():
    bad = {**DISTRACTORS, "rt-0001": ["c-void-2", "c-rate-1", "c-sms-1", "c-key-1"]}  # c-void-2: gold doc
    with pytest.raises(RaftDataError, match="rt-0001.*gold document"):
        build_raft_examples(TRIPLES, SNAPSHOT, bad, RaftConfig(p_no_oracle=0), LABELS)
    short = {**DISTRACTORS, "rt-0003": ["c-void-1"]}
    with pytest.raises(RaftDataError, match="rt-0003: needs 3 distractors, got 1"):
        build_raft_examples(TRIPLES, SNAPSHOT, short, RaftConfig(p_no_oracle=0), LABELS)


# -- bad input ------------------------------------------------------------------------------------
def test_a_quote_that_is_not_in_the_gold_document_names_the_triple():
    missing = _triple(42, "guides/voiding.md", "Labels can be voided within 90 days.")
    with pytest.raises(RaftDataError, match=r"triple rt-0042: .*not found in any snapshot chunk\(s\) of guides/voiding.md"):
        resolve_gold_chunk(missing, SNAPSHOT)
    elsewhere = _triple(43, "guides/voiding.md", "Growth allows 300.")  # real text, wrong document
    with pytest.raises(RaftDataError, match="triple rt-0043"):
        resolve_gold_chunk(elsewhere, SNAPSHOT)
    ambiguous = _triple(44, "guides/voiding.md", "The")
    with pytest.raises(RaftDataError, match="triple rt-0044: .*found in 2"):
        resolve_gold_chunk(ambiguous, SNAPSHOT)
    no_doc = _triple(45, "guides/nope.md", "anything")
    with pytest.raises(RaftDataError, match="triple rt-0045: gold_doc 'guides/nope.md' has no chunk"):
        resolve_gold_chunk(no_doc, SNAPSHOT)
    with pytest.raises(RaftDataError, match="rt-0042"):
        build_raft_examples([missing], SNAPSHOT, {missing.id: DISTRACTORS["rt-0001"]}, CONFIG, LABELS)


def test_quotes_match_after_whitespace_normalisation():
    spaced = _triple(46, "guides/voiding.md", "Labels can be\n  voided   within 28 days.")
    assert resolve_gold_chunk(spaced, SNAPSHOT).chunk_id == "c-void-1"


def _row(triple: Triple) -> str:
    return json.dumps({"id": triple.id, "question": triple.question, "gold_doc": triple.gold_doc,
                       "quote": triple.quote, "answer": triple.answer}, ensure_ascii=False)


def test_a_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "triples.jsonl"
    path.write_text(_row(TRIPLES[0]) + "\n\n{not json\n")
    with pytest.raises(RaftDataError, match=rf"{path}:3: invalid JSON"):
        load_triples(path)
    snapshot = tmp_path / "snapshot.jsonl"
    snapshot.write_text('{"chunk_id": "a", "doc_id": "d", "title": "t", "section": "s", "text": "x"}\n[1, 2]\n')
    with pytest.raises(RaftDataError, match=rf"{snapshot}:2: a line must be a JSON object"):
        load_snapshot(snapshot)


def test_missing_or_wrong_fields_name_file_line_and_field(tmp_path):
    path = tmp_path / "triples.jsonl"
    row = json.loads(_row(TRIPLES[0]))
    del row["quote"]
    path.write_text(_row(TRIPLES[1]) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(RaftDataError, match=rf"{path}:2: missing field 'quote'"):
        load_triples(path)
    row = json.loads(_row(TRIPLES[0]))
    row["answer"]["escalation"] = "none"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(RaftDataError, match=rf"{path}:1: field 'answer.escalation' must be an object"):
        load_triples(path)
    row = json.loads(_row(TRIPLES[0]))
    row["origin_triple"] = "x"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(RaftDataError, match=rf"{path}:1: unknown field\(s\) \['origin_triple'\]"):
        load_triples(path)
    path.write_text(_row(TRIPLES[0]) + "\n" + _row(TRIPLES[0]) + "\n")
    with pytest.raises(RaftDataError, match=rf"{path}:2: field 'id' 'rt-0001' already used on line 1"):
        load_triples(path)
    snapshot = tmp_path / "snapshot.jsonl"
    snapshot.write_text('{"chunk_id": "a", "doc_id": "d", "title": "t", "section": "s"}\n')
    with pytest.raises(RaftDataError, match=rf"{snapshot}:1: missing field 'text'"):
        load_snapshot(snapshot)


def test_check_triples_reports_every_problem():
    from hybrid_assets.schema import LabelSpace

    labels = LabelSpace.from_file(FIXTURE_LABELS)
    wrong_label = _triple(50, "guides/voiding.md", "USPS allows 30 days.", category="weather")
    unsigned = Triple("rt-0051", "q?", "guides/voiding.md", "USPS allows 30 days.",
                      {**TRIPLES[0].answer, "reply": "No sign-off."})
    missing = _triple(52, "guides/voiding.md", "not in the corpus")
    problems = check_triples([wrong_label, unsigned, missing, TRIPLES[0]], SNAPSHOT, labels)
    assert len(problems) == 3, problems
    assert any(p.startswith("triple rt-0050: answer.category") for p in problems)
    assert any(p.startswith("triple rt-0051: reply is not signed") for p in problems)
    assert any(p.startswith("triple rt-0052: quote") for p in problems)


# -- the shipped data -------------------------------------------------------------------------------
def test_every_shipped_triple_resolves_against_the_pinned_snapshot():
    from hybrid_assets.schema import LabelSpace

    snapshot = load_snapshot(SNAPSHOT_FILE)
    triples = load_triples(TRIPLES_FILE)
    assert len(triples) >= 150
    assert check_triples(triples, snapshot, LabelSpace.from_file(DATA_LABELS)) == []
    assert {t.gold_doc for t in triples} == {c.doc_id for c in snapshot}  # every document is covered
    labels = json.loads(DATA_LABELS.read_text())
    assert {t.answer["category"] for t in triples} == set(labels["categories"])


def test_the_shipped_raft_file_is_valid_behaviour_data_built_from_the_triples():
    if not RAFT_FILE.exists():
        pytest.skip("data/behaviour/raft_examples.jsonl has not been generated")
    examples = [json.loads(line) for line in RAFT_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert validate_examples(examples, DATA_LABELS) == []
    snapshot = {c.chunk_id: c for c in load_snapshot(SNAPSHOT_FILE)}
    triples = {f"raft-{t.id}": t for t in load_triples(TRIPLES_FILE)}
    assert [e["id"] for e in examples] == list(triples)
    passages = {c.passage_text: c for c in snapshot.values()}
    for example in examples:
        triple = triples[example["id"]]
        context = {c["id"]: c for c in example["context"]}
        assert len(context) == RaftConfig().distractors + 1
        assert all(c["text"] in passages for c in context.values())  # every passage is a snapshot chunk
        gold_passages = [c for c in context.values() if c["source"] == triple.gold_doc]
        if example["answer"]["decision"] == "answer":
            (cited,) = example["answer"]["citations"]
            assert gold_passages == [context[cited]]
            assert triple.quote in " ".join(context[cited]["text"].split())
        else:
            assert gold_passages == []


# -- integration: mining in a real Weaviate ----------------------------------------------------------
# Five questions from five documents whose gold chunk hybrid search must rank near the top; rt-0014
# (free trial, from the FAQ) is restated by the getting-started guide and the pricing page.
MINING_SAMPLE = ("rt-0002", "rt-0014", "rt-0040", "rt-0062", "rt-0076")


@pytest.mark.integration
def test_mined_distractors_are_hard_negatives_from_other_documents(client, settings):
    from hybrid_assets.models.embedding import Embedder

    snapshot = load_snapshot(SNAPSHOT_FILE)
    by_id = {t.id: t for t in load_triples(TRIPLES_FILE)}
    triples = [by_id[tid] for tid in MINING_SAMPLE]
    chunks = {c.chunk_id: c for c in snapshot}

    embedder = Embedder(settings.embedding_model)
    result = mine_with_ranks(client, embedder, triples, snapshot, k=4, alpha=0.6, max_quote_similarity=0.75)

    assert not [name for name in client.collections.list_all() if name.startswith("RaftSnapshot_")]
    assert set(result.distractors) == set(MINING_SAMPLE)
    for triple in triples:
        ids = result.distractors[triple.id]
        gold = resolve_gold_chunk(triple, snapshot)
        assert len(ids) == len(set(ids)) == 4
        assert gold.chunk_id not in ids
        assert all(chunks[cid].doc_id != triple.gold_doc for cid in ids), triple.id
        assert result.distractor_ranks[triple.id] == sorted(result.distractor_ranks[triple.id])
        # sanity of the mining: the question finds its own gold chunk near the top
        assert result.gold_rank[triple.id] is not None and result.gold_rank[triple.id] <= 3, (
            triple.id, result.gold_rank[triple.id])
    # chunks of other documents that restate the answer are never distractors
    restating = restating_chunks(embedder, triples, snapshot, 0.75)
    trial_elsewhere = {chunks[cid].doc_id for cid in restating["rt-0014"]}
    assert {"guides/getting-started.pdf", "pricing/plans-and-pricing.html"} <= trial_elsewhere
    for triple in triples:
        assert not set(result.distractors[triple.id]) & restating[triple.id], triple.id
    print(f"\ngold ranks: {result.gold_rank}; distractor ranks: {result.distractor_ranks}")


def test_restating_chunks_catch_verbatim_copies_without_a_model():
    class NoModel:  # the verbatim check needs no embeddings
        def embed(self, texts):
            raise AssertionError("not called with max_quote_similarity=1.0")

    copy = _chunk("c-copy", "guides/faq.md", "FAQ", "Q: Refunds? A: The refund is automatic. Nothing to do.")
    restating = restating_chunks(NoModel(), TRIPLES[:2], SNAPSHOT + [copy], max_quote_similarity=1.0)
    assert restating == {"rt-0001": set(), "rt-0002": {"c-copy"}}
