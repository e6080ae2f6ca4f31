"""Retrieval quality on the sample company, against a real Weaviate server: hybrid search finds the
right document for known questions (data/knowledge/eval/search_questions.jsonl), including questions
about the asking customer's own account."""

from __future__ import annotations

import json

import pytest

from hybrid_assets.knowledge.accounts import load_accounts
from hybrid_assets.knowledge.documents import scan_documents
from hybrid_assets.knowledge.pipeline import build_document_chunks, index_accounts, index_documents, search
from hybrid_assets.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration
QUESTIONS = [json.loads(line) for line in (PROJECT_ROOT / "data/knowledge/eval/search_questions.jsonl").open()]


def test_known_questions_find_their_document(client, settings, tmp_path):
    chunking = build_document_chunks(scan_documents(settings.docs_dir), tmp_path / "cache")
    assert not chunking.failures, chunking.failures
    assert len(chunking.chunks_by_doc) >= 30
    index_documents(client, settings, chunking)
    index_accounts(client, settings, load_accounts(settings.accounts_dir))

    top1, top5, misses = 0, 0, []
    for item in QUESTIONS:
        customer = item.get("customer_id")
        hits = search(client, settings, item["question"], customer_id=customer, k=5)
        expected = item["expected_source"]
        found = [h.tenant == customer if expected.startswith("accounts/") else h.doc_id == expected for h in hits]
        top1 += found[0]
        top5 += any(found)
        if not any(found):
            misses.append((item["question"], expected, [h.doc_id for h in hits]))
    n = len(QUESTIONS)
    print(f"\nrecall@1={top1 / n:.3f} recall@5={top5 / n:.3f} over {n} questions; misses: {misses}")
    assert n >= 30
    assert top5 / n >= 0.9, misses
    assert top1 / n >= 0.75, misses


def test_before_anything_is_ingested_a_search_finds_nothing_and_raises_nothing(client, settings):
    # search() does not ask whether the collection exists before each query (a round trip per query):
    # it asks only when the query failed, so a fresh server still answers "no hits".
    assert not client.collections.list_all()
    assert search(client, settings, "how do I void a label?", k=3) == []
