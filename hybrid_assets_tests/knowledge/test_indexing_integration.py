"""Incremental ingest against a real Weaviate server: exactly the right ids are written and deleted,
a re-run with no change writes nothing, new chunks are written before old ones are deleted, and a
document that fails to parse keeps what was indexed before."""

from __future__ import annotations

import shutil

import pytest

from hybrid_assets.knowledge.documents import scan_documents
from hybrid_assets.models.embedding import Embedder
from hybrid_assets.knowledge.indexing import IndexingError
from hybrid_assets.knowledge.pipeline import build_document_chunks, index_documents
from hybrid_assets.store.collections import existing_chunk_ids, knowledge_collection_name
from hybrid_assets_tests.knowledge.docfactory import WRITERS

pytestmark = pytest.mark.integration

SECTION = "\n\n## {title}\n\n{title} explained: " + "this paragraph has enough words to be a chunk of its own. " * 2


@pytest.fixture
def docs(settings):
    """Five small documents, one per format, replacing the sample documents."""
    shutil.rmtree(settings.docs_dir)
    settings.docs_dir.mkdir(parents=True)
    for fmt, write in WRITERS.items():
        write(settings.docs_dir / f"guide.{fmt}")
    (settings.docs_dir / "extra.md").write_text("# Extra" + SECTION.format(title="Alpha") + SECTION.format(title="Beta"))
    return settings.docs_dir


def ingest(client, settings, tmp_path):
    chunking = build_document_chunks(scan_documents(settings.docs_dir), tmp_path / "cache")
    report = index_documents(client, settings, chunking)
    stored = existing_chunk_ids(client.collections.get(knowledge_collection_name(settings.embedding_model)))
    return chunking, report, stored


def test_full_ingest_then_no_change_writes_nothing(client, settings, docs, tmp_path):
    chunking, report, stored = ingest(client, settings, tmp_path)
    assert not chunking.failures
    assert len(report.inserted) == chunking.chunk_count == sum(len(v) for v in stored.values())
    assert set(stored) == {f"guide.{fmt}" for fmt in WRITERS} | {"extra.md"}

    _, again, stored_again = ingest(client, settings, tmp_path)
    assert not again.wrote_anything and again.unchanged_docs == 6
    assert stored_again == stored


def test_edit_shrink_delete_touch_only_that_document(client, settings, docs, tmp_path):
    _, _, before = ingest(client, settings, tmp_path)

    # edit: one section added -> exactly one new chunk, nothing deleted, other documents untouched
    extra = docs / "extra.md"
    extra.write_text(extra.read_text() + SECTION.format(title="Gamma"))
    _, report, after_edit = ingest(client, settings, tmp_path)
    assert report.changed_docs == ["extra.md"] and report.deleted == []
    assert len(report.inserted) == 1 and after_edit["extra.md"] == before["extra.md"] | set(report.inserted)
    assert {d: ids for d, ids in after_edit.items() if d != "extra.md"} == {
        d: ids for d, ids in before.items() if d != "extra.md"
    }

    # shrink: back to one section -> the dropped chunks' ids are deleted, exactly those
    extra.write_text("# Extra" + SECTION.format(title="Alpha"))
    _, report, after_shrink = ingest(client, settings, tmp_path)
    assert report.inserted == []
    assert set(report.deleted) == after_edit["extra.md"] - after_shrink["extra.md"]
    assert len(after_shrink["extra.md"]) == 1

    # delete: every chunk of the document disappears
    extra.unlink()
    _, report, after_delete = ingest(client, settings, tmp_path)
    assert report.removed_docs == ["extra.md"] and set(report.deleted) == after_shrink["extra.md"]
    assert "extra.md" not in after_delete and len(after_delete) == 5


def test_document_that_fails_to_parse_keeps_its_chunks(client, settings, docs, tmp_path):
    _, _, before = ingest(client, settings, tmp_path)
    (docs / "guide.pdf").write_bytes(b"%PDF-1.4 truncated")
    (docs / "new.bin.txt").write_bytes(b"\x00\x01\x02 junk")
    chunking, report, after = ingest(client, settings, tmp_path)
    assert "corrupt PDF" in chunking.failures["guide.pdf"]
    assert "binary content" in chunking.failures["new.bin.txt"]
    assert after["guide.pdf"] == before["guide.pdf"]
    assert not report.wrote_anything and after == before


def test_failed_write_deletes_nothing(client, settings, docs, tmp_path, monkeypatch):
    _, _, before = ingest(client, settings, tmp_path)
    (docs / "extra.md").write_text("# Extra" + SECTION.format(title="Replaced"))

    def wrong_dimension(self, texts, show_progress=False):
        return [[0.1] * 7 for _ in texts]  # the collection holds 384-d vectors: Weaviate rejects these

    monkeypatch.setattr(Embedder, "embed", wrong_dimension)
    with pytest.raises(IndexingError, match="no old chunk was deleted"):
        ingest(client, settings, tmp_path)
    stored = existing_chunk_ids(client.collections.get(knowledge_collection_name(settings.embedding_model)))
    assert stored == before
