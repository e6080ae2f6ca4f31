"""Parsing contract: every supported format yields non-empty, sensible elements offline (the
spaCy model comes from a PyPI package, never a download); bad input fails with a clear reason."""

from __future__ import annotations

import pytest

from hybrid_assets.knowledge.documents import scan_documents
from hybrid_assets.knowledge.parsing import ParseError, parse_document
from hybrid_assets_tests.knowledge.docfactory import BAD_INPUTS, BODY, HEADING, WRITERS


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_each_format_parses_to_sensible_elements(tmp_path, fmt):
    WRITERS[fmt](tmp_path / f"guide.{fmt}")
    (ref,) = scan_documents(tmp_path)
    elements = parse_document(ref)
    texts = [e.text for e in elements]
    joined = " ".join(" ".join(texts).split())
    assert len(elements) >= 4, texts
    assert HEADING.lower() in joined.lower()
    assert "X-Parcelwise-Signature" in joined and "constant time" in joined
    assert any(e.category == "Title" and HEADING.lower() in e.text.lower() for e in elements), texts
    assert all(text.strip() for text in texts)


def test_pdf_parsing_never_downloads_spacy(tmp_path, monkeypatch):
    """The trap: with the model missing, unstructured downloads it and partition_pdf returns nothing."""
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted during parsing")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    WRITERS["pdf"](tmp_path / "guide.pdf")
    (ref,) = scan_documents(tmp_path)
    assert len(parse_document(ref)) >= 4


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_fails_with_clear_reason(tmp_path, name):
    content, expected_reason = BAD_INPUTS[name]
    (tmp_path / name).write_bytes(content)
    (ref,) = scan_documents(tmp_path)
    with pytest.raises(ParseError) as error:
        parse_document(ref)
    assert expected_reason in str(error.value)


def test_latin1_text_a_person_wrote_is_decoded(tmp_path):
    """Issue #10, item 5: such a file was rejected as "not valid UTF-8"; it is decoded now."""
    text = "Caf\u00e9 cr\u00e8me price list"
    (tmp_path / "legacy.txt").write_bytes(text.encode("latin-1"))
    (ref,) = scan_documents(tmp_path)
    assert [e.text for e in parse_document(ref)] == [text]
