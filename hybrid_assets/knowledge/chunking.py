"""Split parsed elements into section chunks with deterministic, content-derived ids.

A chunk id is uuid5(document id + section + chunk text): never a position, so inserting a
paragraph does not renumber the rest, an unchanged chunk keeps its id (no re-embedding), and a
removed chunk's id simply stops being produced (so it is deleted).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from hybrid_assets.knowledge.parsing import Element

CHUNK_NAMESPACE = uuid.UUID("6f1c7d2e-3b8a-5a4e-9c1d-2f7e8a9b0c11")
CHUNKER_VERSION = "sections-v1"  # bump when chunking changes, so cached chunks are rebuilt


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    title: str  # document title (its first heading, else the file name)
    section: str  # heading of the section this chunk belongs to
    text: str  # the chunk body
    position: int  # order within the document: for display only, never part of the id
    page: int | None = None

    @property
    def embedding_text(self) -> str:
        """What is embedded and BM25-indexed: headings give short chunks their topic."""
        heading = self.title if self.section in ("", self.title) else f"{self.title} — {self.section}"
        return f"{heading}\n{self.text}"


def chunk_id(doc_id: str, section: str, text: str, tenant: str | None = None) -> str:
    key = "\x1f".join([tenant or "", doc_id, section, text])
    return str(uuid.uuid5(CHUNK_NAMESPACE, key))


def split_long(text: str, max_chars: int) -> list[str]:
    """Split at sentence boundaries into pieces of at most ``max_chars`` (a lone long sentence stays whole)."""
    if len(text) <= max_chars:
        return [text]
    sentences = re.split(r"(?<=[.!?])\s+", text)
    pieces, current = [], ""
    for sentence in sentences:
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


def chunk_elements(
    doc_id: str, elements: list[Element], max_chars: int = 1200, min_chars: int = 80
) -> list[Chunk]:
    """Group elements by section (a new section starts at each Title) and cap chunk size.

    Consecutive headings with no body between them merge into one section path; a section shorter
    than ``min_chars`` is merged into the next one so tiny fragments do not become chunks.
    """
    if max_chars < 200:
        raise ValueError(f"max_chars must be at least 200, got {max_chars}")
    title = next((e.text for e in elements if e.category == "Title"), doc_id.rsplit("/", 1)[-1])

    sections: list[tuple[str, list[str], int | None]] = []
    heading, body, page = "", [], None
    for element in elements:
        if element.category == "Title":
            if body:
                sections.append((heading, body, page))
                heading, body, page = element.text, [], None
            else:
                heading = element.text if not heading or heading == title else f"{heading} / {element.text}"
            continue
        body.append(element.text)
        page = page if page is not None else element.page
    if body or heading:
        sections.append((heading, body or [heading], page))

    chunks: list[Chunk] = []
    seen: set[str] = set()
    carry = ""
    for index, (section, parts, section_page) in enumerate(sections):
        text = "\n".join(parts)
        if carry:
            text, carry = f"{carry}\n{text}", ""
        if len(text) < min_chars and index < len(sections) - 1:
            carry = f"{section}: {text}" if section else text
            continue
        for piece in split_long(text, max_chars):
            cid = chunk_id(doc_id, section, piece)
            if cid in seen:  # identical repeated text in one section: index it once
                continue
            seen.add(cid)
            chunks.append(Chunk(cid, doc_id, title, section or title, piece, len(chunks), section_page))
    return chunks
