"""Retrieval quality on the sample company, against a real Weaviate server: hybrid search finds the
right document for known questions (data/knowledge/eval/search_questions.jsonl), including questions
about the asking customer's own account."""

from __future__ import annotations

import json

import pytest

from hybrid_assets.knowledge.accounts import load_accounts
from hybrid_assets.knowledge.chunking import Chunk, chunk_id
from hybrid_assets.knowledge.documents import scan_documents
from hybrid_assets.knowledge.pipeline import (ChunkingResult, build_document_chunks, index_accounts, index_documents,
                                              search)
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


def _legacy_collection(client, name: str, multi_tenant: bool = False):
    """A collection as releases before ``search_text`` wrote it: BM25 over text, title and section."""
    from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances

    client.collections.create(
        name, description="hybrid_assets chunks (bring-your-own vectors)",
        vector_config=Configure.Vectors.self_provided(
            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)),
        properties=[
            Property(name="doc_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD, index_searchable=False),
            Property(name="title", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
            Property(name="section", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
            Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
            Property(name="position", data_type=DataType.INT, index_searchable=False),
        ],
        multi_tenancy_config=Configure.multi_tenancy(enabled=True, auto_tenant_creation=False,
                                                     auto_tenant_activation=True) if multi_tenant else None)
    return client.collections.get(name)


def _write_legacy(target, chunks, embedder):
    from weaviate.classes.data import DataObject

    vectors = embedder.embed([c.embedding_text for c in chunks])
    result = target.data.insert_many([DataObject(uuid=c.chunk_id, vector=v, properties={
        "doc_id": c.doc_id, "title": c.title, "section": c.section, "text": c.text, "position": c.position})
        for c, v in zip(chunks, vectors)])
    assert not result.has_errors


def _stored(target) -> dict:
    return {str(o.uuid): (o.properties, o.vector["default"]) for o in target.iterator(include_vector=True)}


def test_a_collection_written_before_search_text_is_searched_as_written_then_upgraded_by_the_next_ingest(
        client, settings, tmp_path):
    """An installation upgraded in place: its collections have no ``search_text``. Search keeps working on
    them (BM25 over the fields they index), and the next ingest rewrites every object with its
    ``search_text`` (same ids, same vectors, nothing re-embedded or lost, every tenant, an inactive one
    too), after which a word that only a document's title holds is found by BM25 over ``search_text``."""
    from weaviate.classes.tenants import Tenant, TenantActivityStatus

    from hybrid_assets.knowledge.accounts import account_chunks
    from hybrid_assets.models.embedding import Embedder
    from hybrid_assets.store.collections import (SEARCH_TEXT, SEARCH_TEXT_MARK, accounts_collection_name,
                                                 hybrid_search, knowledge_collection_name, search_text_of)

    embedder = Embedder(settings.embedding_model)
    chunking = build_document_chunks(scan_documents(settings.docs_dir), tmp_path / "cache")
    docs = {doc: chunking.chunks_by_doc[doc] for doc in sorted(chunking.chunks_by_doc)[:6]}
    # One document whose title alone holds a word: only a search over the headings can find it by that word.
    owner, title_word = "guides/quokka-returns.md", "quokkaridge"
    docs[owner] = [Chunk(chunk_id(owner, "Returns", "Send the parcel back within 30 days."), owner,
                         "Quokkaridge returns handbook", "Returns", "Send the parcel back within 30 days.", 0)]
    chunks = [c for doc_chunks in docs.values() for c in doc_chunks]
    knowledge = _legacy_collection(client, knowledge_collection_name(settings.embedding_model))
    _write_legacy(knowledge, chunks, embedder)
    accounts = load_accounts(settings.accounts_dir)[:2]
    tenants = _legacy_collection(client, accounts_collection_name(settings.embedding_model), multi_tenant=True)
    tenants.tenants.create([Tenant(name=a.customer_id) for a in accounts])
    for account in accounts:
        _write_legacy(tenants.with_tenant(account.customer_id), account_chunks(account), embedder)
    cold = accounts[1].customer_id
    tenants.tenants.update([Tenant(name=cold, activity_status=TenantActivityStatus.INACTIVE)])
    before = {"knowledge": _stored(knowledge), **{a.customer_id: _stored(tenants.with_tenant(a.customer_id))
                                                  for a in accounts}}

    vector = embedder.embed_query(title_word)
    legacy_hits = hybrid_search(knowledge, title_word, vector, 3, alpha=0.0)  # BM25 alone, over the old fields
    assert legacy_hits and legacy_hits[0].doc_id == owner

    assert search(client, settings, "how do I void a label?", customer_id=accounts[0].customer_id, k=3)  # as written

    # The next ingest of the same documents and accounts: nothing to embed, and every object upgraded.
    report = index_documents(client, settings, ChunkingResult(chunks_by_doc=docs))
    assert not report.inserted and not report.deleted
    index_accounts(client, settings, accounts)
    for name, target in [("knowledge", knowledge)] + [(a.customer_id, tenants.with_tenant(a.customer_id))
                                                      for a in accounts]:
        after = _stored(target)
        assert set(after) == set(before[name]), name
        for uuid, (properties, vector) in after.items():
            old_properties, old_vector = before[name][uuid]
            assert vector == pytest.approx(old_vector, abs=1e-6)
            assert {k: v for k, v in properties.items() if k != SEARCH_TEXT} == old_properties
            assert properties[SEARCH_TEXT] == search_text_of(old_properties["title"], old_properties["section"],
                                                             old_properties["text"])
    for collection in (knowledge, tenants):
        assert SEARCH_TEXT_MARK in collection.config.get().description

    hits = knowledge.query.bm25(query=title_word, query_properties=[SEARCH_TEXT], limit=3).objects
    assert hits and hits[0].properties["doc_id"] == owner
    assert hybrid_search(knowledge, title_word, vector, 3, alpha=0.0)[0].doc_id == owner


def test_a_new_collection_indexes_search_text_only(client, settings, tmp_path):
    from hybrid_assets.store.collections import SEARCH_TEXT, SEARCH_TEXT_MARK, knowledge_collection_name

    chunking = build_document_chunks(scan_documents(settings.docs_dir), tmp_path / "cache")
    one = sorted(chunking.chunks_by_doc)[0]
    index_documents(client, settings, ChunkingResult(chunks_by_doc={one: chunking.chunks_by_doc[one]}))
    config = client.collections.get(knowledge_collection_name(settings.embedding_model)).config.get()
    assert SEARCH_TEXT_MARK in config.description
    searchable = {p.name for p in config.properties if p.index_searchable}
    assert searchable == {SEARCH_TEXT}
