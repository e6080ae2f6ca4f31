"""Chunking contract: sections become chunks; ids are uuid5 of document + content, never positions;
the pure sync plan inserts only new ids and deletes only stale ones."""

from __future__ import annotations

import pytest

from hybrid_assets.knowledge.chunking import chunk_elements, chunk_id
from hybrid_assets.knowledge.indexing import plan_sync
from hybrid_assets.knowledge.parsing import Element

LONG = "Labels can be voided within 28 days when the carrier has no scan. " * 3


def elements(*sections: tuple[str, str]) -> list[Element]:
    out = [Element("Title", "Guide")]
    for heading, body in sections:
        out += [Element("Title", heading), Element("NarrativeText", body)]
    return out


def test_one_chunk_per_section_with_heading_context():
    chunks = chunk_elements("g.md", elements(("Voiding", LONG), ("Refunds", LONG.replace("Labels", "Refunds"))))
    assert [c.section for c in chunks] == ["Voiding", "Refunds"]
    assert chunks[0].embedding_text.startswith("Guide — Voiding\n")
    assert all(c.doc_id == "g.md" for c in chunks)


def test_ids_depend_on_content_not_position():
    a = chunk_elements("g.md", elements(("A", LONG), ("B", LONG + " B")))
    b = chunk_elements("g.md", elements(("New first", LONG + " new"), ("A", LONG), ("B", LONG + " B")))
    assert {c.chunk_id for c in a} < {c.chunk_id for c in b}
    assert a[0].chunk_id == chunk_id("g.md", "A", a[0].text)


def test_same_text_in_two_documents_gets_two_ids():
    (one,) = chunk_elements("a.md", elements(("S", LONG)))
    (two,) = chunk_elements("b.md", elements(("S", LONG)))
    assert one.chunk_id != two.chunk_id


def test_long_sections_split_at_sentences_and_tiny_sections_merge():
    chunks = chunk_elements("g.md", elements(("Big", LONG * 10), ("Tiny", "Short."), ("Last", LONG)), max_chars=400)
    assert all(len(c.text) <= 400 for c in chunks)
    assert any("Tiny: Short." in c.text for c in chunks)
    with pytest.raises(ValueError, match="max_chars"):
        chunk_elements("g.md", elements(("A", LONG)), max_chars=10)


def test_plan_sync_inserts_new_deletes_stale_keeps_failed():
    old = chunk_elements("g.md", elements(("A", LONG), ("B", LONG + " b")))
    new = chunk_elements("g.md", elements(("A", LONG)))
    stored = {"g.md": {c.chunk_id for c in old}, "gone.md": {"x"}, "broken.md": {"y"}}
    inserts, deletes, report = plan_sync(stored, {"g.md": new}, keep_docs={"broken.md"})
    assert inserts == []
    assert sorted(deletes) == sorted([old[1].chunk_id, "x"])
    assert report.removed_docs == ["gone.md"] and report.changed_docs == ["g.md"]
