"""Knowledge ingestion holes of issue #10 (items 2, 3, 5): symlinks are never followed, the parse
cache is keyed by document id + content and never skips the file checks, one file cannot exceed a
size or time limit, a large text reports progress, non-UTF-8 text is decoded, deep HTML is not lost.
"""

from __future__ import annotations

import logging
import os
import shutil

import pytest

from hybrid_assets.knowledge import parsing
from hybrid_assets.knowledge.documents import scan_documents
from hybrid_assets.knowledge.parsing import ParseError, parse_document
from hybrid_assets.knowledge.pipeline import build_document_chunks, count_objects, index_documents, search
from hybrid_assets.settings import load_settings
from hybrid_assets.store.collections import existing_chunk_ids, knowledge_collection_name
from hybrid_assets_tests.knowledge.docfactory import write_md

SECRET = "root:x:0:0:zanzibar-quartermaster-secret:/root:/bin/bash\n" * 3
SECTION = "\n\n## {title}\n\n{title} explained: " + "this paragraph has enough words to be a chunk of its own. " * 2


def big_text(chars: int) -> str:
    """Distinct paragraphs (so unstructured's caches do not help): ~4 ms of spaCy work each."""
    lines, n = [], 0
    while sum(len(line) for line in lines) < chars:
        lines.append(f"Paragraph {n}: parcels number {n * 7} ship from the depot on weekday {n % 5}.\n\n")
        n += 1
    return "".join(lines)[:chars]


def build(docs, cache, **limits):
    return build_document_chunks(scan_documents(docs), cache, **limits)


# ---- 2. symlinks


def test_symlinks_are_refused_with_a_reason_and_never_read(tmp_path):
    docs, outside = tmp_path / "docs", tmp_path / "outside"
    docs.mkdir(), outside.mkdir()
    write_md(docs / "guide.md")
    (outside / "passwd").write_text(SECRET)
    (outside / "folder").mkdir()
    (outside / "folder" / "leak.txt").write_text(SECRET)
    (docs / "x.txt").symlink_to(outside / "passwd")  # leaves the docs folder
    (docs / "inner.md").symlink_to(docs / "guide.md")  # stays inside: refused too (one rule)
    (docs / "linked").symlink_to(outside / "folder", target_is_directory=True)
    (docs / "dangling.md").symlink_to(tmp_path / "missing.md")

    refs = {ref.doc_id: ref for ref in scan_documents(docs)}
    assert set(refs) == {"guide.md", "x.txt", "inner.md", "linked", "dangling.md"}  # nothing inside "linked"
    result = build(docs, tmp_path / "cache")
    assert set(result.chunks_by_doc) == {"guide.md"}
    for link in ("x.txt", "inner.md", "linked", "dangling.md"):
        assert result.failures[link] == "symbolic link (not followed)"
    assert result.refused == {"x.txt", "inner.md", "linked", "dangling.md"}
    with pytest.raises(ParseError, match="symbolic link"):
        parse_document(refs["x.txt"])


def test_a_file_swapped_for_a_symlink_after_the_scan_is_not_read(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "passwd").write_text(SECRET)
    (docs / "notes.txt").write_text("Notes about parcels and labels, long enough to be one chunk of text.")
    refs = scan_documents(docs)
    (docs / "notes.txt").unlink()
    (docs / "notes.txt").symlink_to(tmp_path / "passwd")
    result = build_document_chunks(refs, tmp_path / "cache")
    assert result.failures == {"notes.txt": "symbolic link (not followed)"} and not result.chunks_by_doc


@pytest.mark.integration
def test_symlink_to_a_secret_is_not_indexed_and_replacing_a_file_by_one_removes_it(client, settings, tmp_path):
    (tmp_path / "passwd").write_text(SECRET)
    docs = settings.docs_dir
    shutil.rmtree(docs)
    (docs / "policies").mkdir(parents=True)
    write_md(docs / "guide.md")
    victim = docs / "policies" / "tone-of-voice.md"
    victim.write_text("# Tone of voice" + SECTION.format(title="Friendly"))
    (docs / "x.txt").symlink_to(tmp_path / "passwd")
    result = build_document_chunks(scan_documents(docs), tmp_path / "cache")
    index_documents(client, settings, result)
    assert result.failures == {"x.txt": "symbolic link (not followed)"}
    stored = existing_chunk_ids(client.collections.get(knowledge_collection_name(settings.embedding_model)))
    assert "x.txt" not in stored and victim.relative_to(docs).as_posix() in stored
    hits = search(client, settings, "zanzibar-quartermaster-secret root bash", k=10)
    assert all(hit.doc_id != "x.txt" and "zanzibar" not in hit.text for hit in hits)

    # a document that was indexed and is then replaced by a link loses its chunks (not "kept")
    victim.unlink()
    victim.symlink_to(tmp_path / "passwd")
    result = build_document_chunks(scan_documents(docs), tmp_path / "cache")
    report = index_documents(client, settings, result)
    assert result.failures["policies/tone-of-voice.md"] == "symbolic link (not followed)"
    assert "policies/tone-of-voice.md" in report.removed_docs
    stored = existing_chunk_ids(client.collections.get(knowledge_collection_name(settings.embedding_model)))
    assert "policies/tone-of-voice.md" not in stored


# ---- 3. the parse cache


@pytest.mark.integration
def test_identical_files_under_two_names_are_two_documents(client, settings, tmp_path):
    docs = settings.docs_dir
    shutil.rmtree(docs)
    docs.mkdir(parents=True)
    content = "# Returns" + SECTION.format(title="Alpha") + SECTION.format(title="Beta")
    (docs / "returns.md").write_text(content)
    (docs / "returns-copy.md").write_text(content)
    (docs / "other.md").write_text("# Other" + SECTION.format(title="Gamma"))
    name = knowledge_collection_name(settings.embedding_model)
    cache = tmp_path / "cache"

    def ingest():
        chunking = build_document_chunks(scan_documents(docs), cache)
        report = index_documents(client, settings, chunking)
        return chunking, report, existing_chunk_ids(client.collections.get(name))

    chunking, report, stored = ingest()
    original = {c.chunk_id for c in chunking.chunks_by_doc["returns.md"]}
    copy = {c.chunk_id for c in chunking.chunks_by_doc["returns-copy.md"]}
    assert len(original) == len(copy) == 2 and not original & copy
    assert all(c.doc_id == "returns-copy.md" for c in chunking.chunks_by_doc["returns-copy.md"])
    assert count_objects(client, name) == chunking.chunk_count == len(report.inserted) == 5
    assert stored["returns.md"] == original and stored["returns-copy.md"] == copy

    chunking, report, stored_again = ingest()  # from the cache: nothing to write
    assert chunking.parsed == [] and report.inserted == [] and report.deleted == []
    assert stored_again == stored and count_objects(client, name) == chunking.chunk_count

    (docs / "returns-copy.md").unlink()  # one run later the original is still fully indexed
    chunking, report, stored = ingest()
    assert set(report.deleted) == copy and report.inserted == []
    assert stored["returns.md"] == original and "returns-copy.md" not in stored
    assert count_objects(client, name) == chunking.chunk_count == 3


def test_file_checks_run_on_a_cache_hit(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    write_md(docs / "guide.md")
    cache = tmp_path / "cache"
    first = build(docs, cache)
    assert first.parsed == ["guide.md"]

    shutil.copy(docs / "guide.md", docs / "guide.xyz")  # same bytes as a cached good file
    second = build(docs, cache)
    assert second.parsed == [] and set(second.chunks_by_doc) == {"guide.md"}
    assert second.failures["guide.xyz"].startswith("unsupported extension '.xyz'")

    third = build(docs, cache, max_document_bytes=64)  # a lower limit applies to cached files too
    assert "file too large" in third.failures["guide.md"] and not third.chunks_by_doc


# ---- 5. limits, progress, encodings, deep HTML


def test_size_limit_is_configurable_and_reported(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.txt").write_text(big_text(2048))
    write_md(docs / "small.md")
    result = build(docs, tmp_path / "cache", max_document_bytes=1024)
    assert set(result.chunks_by_doc) == {"small.md"}
    assert result.failures["big.txt"] == "file too large: 2.0 KB (limit 1.0 KB, HYBRID_MAX_DOCUMENT_MB)"

    monkeypatch.setenv("HYBRID_MAX_DOCUMENT_MB", "0.001")  # callers that pass no limit read the setting
    monkeypatch.setenv("HYBRID_PARSE_TIMEOUT_S", "33")
    settings = load_settings()
    assert settings.max_document_bytes == 1048 and settings.parse_timeout_s == 33.0
    assert "file too large" in build(docs, tmp_path / "cache2").failures["big.txt"]


def test_time_limit_kills_the_parse_and_the_next_file_still_parses(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a-small.md").write_text("# Small" + SECTION.format(title="Alpha"))
    (docs / "b-slow.txt").write_text(big_text(200_000))  # ~5-10 s of parsing
    (docs / "c-after.md").write_text("# After" + SECTION.format(title="Beta"))
    refs = scan_documents(docs)
    worker = parsing.shared_parser()
    worker.parse(refs[0], timeout_s=60)  # start + warm up the worker outside the measured call
    pid = worker.pid

    # one worker (the shared one above); two workers: test_parallel_parsing.py
    result = build_document_chunks(refs, tmp_path / "cache", parse_timeout_s=1, parse_workers=1)
    assert result.failures == {
        "b-slow.txt": "parse timed out after 1 s (limit HYBRID_PARSE_TIMEOUT_S); parsing stopped"
    }
    assert set(result.chunks_by_doc) == {"a-small.md", "c-after.md"}
    with pytest.raises(ProcessLookupError):  # the worker that ran over the limit is gone
        os.kill(pid, 0)
    assert worker.pid is not None and worker.pid != pid


def test_large_text_reports_progress_and_block_parsing_changes_nothing(tmp_path, monkeypatch):
    parsing._use_packaged_spacy_model()  # (never download spaCy's model)
    from unstructured.partition.text import partition_text

    (tmp_path / "big.txt").write_text(big_text(6000))
    (ref,) = scan_documents(tmp_path)
    whole = [(e.category, e.text.strip()) for e in partition_text(text=ref.path.read_text(), languages=["eng"])]
    monkeypatch.setattr(parsing, "_TEXT_BLOCK_CHARS", 1000)
    progress = []
    elements = parse_document(ref, progress=lambda done, total: progress.append((done, total)))
    assert [(e.category, e.text) for e in elements] == whole
    assert len(progress) >= 6 and progress[-1] == (progress[-1][1], progress[-1][1])
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


def test_progress_of_a_large_text_reaches_the_log_through_the_worker(tmp_path, caplog):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.txt").write_text(big_text(parsing._TEXT_BLOCK_CHARS + 5000))
    with caplog.at_level(logging.INFO, logger="hybrid_assets.knowledge.pipeline"):
        result = build(docs, tmp_path / "cache", parse_timeout_s=120)
    assert not result.failures
    assert any(m.startswith("parsing big.txt: 100%") for m in caplog.messages), caplog.messages


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("latin-1", "Tarifs d'exp\u00e9dition\n\nLe caf\u00e9 cr\u00e8me co\u00fbte 3 \u00a3 \u00e0 la gare."),
        ("cp1252", "Shipping \u201cexpress\u201d \u2013 it\u2019s \u20ac5 per parcel \u2026 for r\u00e9sum\u00e9s."),
        ("cp1251", "\u0414\u043e\u0441\u0442\u0430\u0432\u043a\u0430 \u043f\u043e\u0441\u044b\u043b\u043e\u043a "
                   "\u043f\u043e \u0432\u0441\u0435\u0439 \u0441\u0442\u0440\u0430\u043d\u0435 \u0437\u0430 "
                   "\u0434\u0432\u0430 \u0434\u043d\u044f."),
    ],
)
def test_non_utf8_text_is_decoded(tmp_path, encoding, text):
    (tmp_path / "legacy.txt").write_bytes(text.encode(encoding))
    (ref,) = scan_documents(tmp_path)
    joined = " ".join(e.text for e in parse_document(ref))
    assert " ".join(joined.split()) == " ".join(text.split())


@pytest.mark.parametrize(
    "content",
    [
        bytes(b % 255 + 1 for b in range(3000)),  # every byte value but NUL
        b"\x89PNG\r\n\x1a\n" + bytes((i * 37) % 250 + 1 for i in range(4000)),
        b"header \x01\x02\x03\x04\x05\x06\x07\x08 text " * 20 + b"\xe9",  # decodable, but control characters
    ],
)
def test_real_binary_is_still_refused(tmp_path, content):
    (tmp_path / "junk.txt").write_bytes(content)
    (ref,) = scan_documents(tmp_path)
    with pytest.raises(ParseError, match="binary content"):
        parse_document(ref)


@pytest.mark.parametrize("depth", [300, 3000])
def test_deeply_nested_html_is_not_silently_dropped(tmp_path, depth):
    deep = "<div>" * depth + "<h2>Deep section</h2><p>The deep paragraph about refund windows.</p>" + "</div>" * depth
    (tmp_path / "deep.html").write_text(
        f"<html><body><h1>Deep guide</h1><p>First paragraph.</p>{deep}<p>Last paragraph after it.</p></body></html>"
    )
    (ref,) = scan_documents(tmp_path)
    elements = parse_document(ref)
    assert [e.text for e in elements] == [
        "Deep guide", "First paragraph.", "Deep section", "The deep paragraph about refund windows.",
        "Last paragraph after it.",
    ]
    assert [e.category for e in elements][:3:2] == ["Title", "Title"]
