"""Render the PDF and DOCX sample documents from their markdown sources.

Sources live in ``scripts/sample_sources/`` and are named ``<subfolder>__<name>.<pdf|docx>.md``;
``policies__escalation-policy.pdf.md`` becomes ``data/knowledge/docs/policies/escalation-policy.pdf``.

The markdown dialect is deliberately small: ``# `` title, ``## `` section heading, ``### `` sub-heading,
paragraphs (consecutive lines are joined), ``- `` bullets, ``1. `` numbered items, ``|`` tables (a real table
in DOCX, one bullet line per row in PDF), and
inline ``**bold**`` and ```code```. Output is deterministic: re-running produces byte-identical files
(reportlab ``invariant=1``, fixed DOCX core properties and fixed ZIP entry timestamps).

Usage: .venv/bin/python scripts/make_sample_binaries.py
"""

from __future__ import annotations

import datetime as dt
import io
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "scripts" / "sample_sources"
DOCS = ROOT / "data" / "knowledge" / "docs"
AUTHOR = "Parcelwise"
FIXED_DATE = dt.datetime(2026, 1, 1, 0, 0, 0)
SOURCE_NAME = re.compile(r"^(?P<folder>[a-z_]+)__(?P<name>[a-z0-9-]+)\.(?P<fmt>pdf|docx)\.md$")


# --------------------------------------------------------------------------------------- parsing
@dataclass
class Block:
    kind: str  # title, h2, h3, para, bullet, number, table
    text: str = ""
    number: int | None = None
    rows: list[list[str]] = field(default_factory=list)


def parse_markdown(text: str) -> list[Block]:
    blocks: list[Block] = []
    para: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if para:
            blocks.append(Block("para", " ".join(para)))
            para.clear()
        if table:
            blocks.append(Block("table", rows=[row[:] for row in table]))
            table.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            flush()
            continue
        if line.startswith("|"):
            if para:
                flush()
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if all(re.fullmatch(r":?-{2,}:?", cell) for cell in cells):
                continue  # the separator row
            table.append(cells)
            continue
        if table:
            flush()
        if line.startswith("### "):
            flush()
            blocks.append(Block("h3", line[4:].strip()))
        elif line.startswith("## "):
            flush()
            blocks.append(Block("h2", line[3:].strip()))
        elif line.startswith("# "):
            flush()
            blocks.append(Block("title", line[2:].strip()))
        elif line.startswith("- "):
            flush()
            blocks.append(Block("bullet", line[2:].strip()))
        elif (match := re.match(r"^(\d+)\.\s+(.*)$", line)):
            flush()
            blocks.append(Block("number", match.group(2).strip(), number=int(match.group(1))))
        elif blocks and blocks[-1].kind in {"bullet", "number"} and not para and raw.startswith("  "):
            blocks[-1].text += " " + line  # continuation of a list item
        else:
            para.append(line)
    flush()
    if not blocks or blocks[0].kind != "title":
        raise ValueError("a source must start with a '# ' title")
    return blocks


INLINE = re.compile(r"(\*\*[^*]+\*\*|`[^`]+`)")


def inline_runs(text: str) -> list[tuple[str, str]]:
    """Split text into (style, text) runs; style is '', 'bold' or 'code'."""
    runs = []
    for part in INLINE.split(text):
        if not part:
            continue
        if part.startswith("**") and part.endswith("**"):
            runs.append(("bold", part[2:-2]))
        elif part.startswith("`") and part.endswith("`"):
            runs.append(("code", part[1:-1]))
        else:
            runs.append(("", part))
    return runs


# ------------------------------------------------------------------------------------------- PDF
def write_pdf(blocks: list[Block], target: Path) -> None:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer
    from xml.sax.saxutils import escape

    styles = getSampleStyleSheet()
    body = ParagraphStyle("Body", parent=styles["BodyText"], fontName="Helvetica", fontSize=10.5, leading=14.5,
                          spaceAfter=6)
    title = ParagraphStyle("DocTitle", parent=body, fontName="Helvetica-Bold", fontSize=18, leading=22,
                           spaceBefore=0, spaceAfter=10)
    h2 = ParagraphStyle("H2", parent=body, fontName="Helvetica-Bold", fontSize=13, leading=17, spaceBefore=10,
                        spaceAfter=4)
    h3 = ParagraphStyle("H3", parent=body, fontName="Helvetica-Bold", fontSize=11, leading=15, spaceBefore=6,
                        spaceAfter=3)

    def markup(text: str) -> str:
        out = []
        for style, part in inline_runs(text):
            # The standard PDF fonts have no arrow glyph that text extractors map back reliably.
            part = escape(part.replace("\u2192", "->"))
            if style == "bold":
                out.append(f"<b>{part}</b>")
            elif style == "code":
                out.append(f'<font name="Courier">{part}</font>')
            else:
                out.append(part)
        return "".join(out)

    # Text extractors (pdfminer, used by unstructured) only keep a wrapped paragraph together when its
    # lines share a left edge, so list markers are written inline instead of as hanging bullets, and
    # table rows become one bullet line each (cells of a drawn table would come out as loose titles).
    item = ParagraphStyle("Item", parent=body, leftIndent=12, spaceAfter=3)
    story = []
    for block in blocks:
        if block.kind == "title":
            story.append(Paragraph(markup(block.text), title))
        elif block.kind == "h2":
            story.append(Paragraph(markup(block.text), h2))
        elif block.kind == "h3":
            story.append(Paragraph(markup(block.text), h3))
        elif block.kind == "para":
            story.append(Paragraph(markup(block.text), body))
        elif block.kind == "bullet":
            story.append(Paragraph("\u2013 " + markup(block.text), item))
        elif block.kind == "number":
            story.append(Paragraph(f"{block.number}. " + markup(block.text), item))
        elif block.kind == "table":
            header, *rows = block.rows
            for row in rows:
                rest = "; ".join(f"{markup(h)}: {markup(c)}" for h, c in zip(header[1:], row[1:]))
                story.append(Paragraph(f"\u2013 <b>{markup(row[0])}</b> \u2014 {rest}", item))
            story.append(Spacer(1, 4))

    doc_title = blocks[0].text

    def footer(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.setFillColor(colors.grey)
        canvas.drawString(20 * mm, 12 * mm, f"Parcelwise Help Centre - {doc_title}")
        canvas.drawRightString(A4[0] - 20 * mm, 12 * mm, f"Page {doc.page}")
        canvas.restoreState()

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=20 * mm,
                            bottomMargin=22 * mm, title=doc_title, author=AUTHOR, subject="Parcelwise Help Centre",
                            creator=AUTHOR, producer=AUTHOR, invariant=1)
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    target.write_bytes(buffer.getvalue())


# ------------------------------------------------------------------------------------------ DOCX
def write_docx(blocks: list[Block], target: Path) -> None:
    from docx import Document
    from docx.shared import Pt

    document = Document()
    props = document.core_properties
    props.author = AUTHOR
    props.last_modified_by = AUTHOR
    props.title = blocks[0].text
    props.subject = "Parcelwise Help Centre"
    props.comments = ""
    props.keywords = ""
    props.category = ""
    props.revision = 1
    props.created = FIXED_DATE
    props.modified = FIXED_DATE
    props.last_printed = FIXED_DATE

    def add_runs(paragraph, text: str) -> None:
        for style, part in inline_runs(text):
            run = paragraph.add_run(part)
            if style == "bold":
                run.bold = True
            elif style == "code":
                run.font.name = "Consolas"
                run.font.size = Pt(10)

    for block in blocks:
        if block.kind == "title":
            add_runs(document.add_heading(level=1), block.text)
        elif block.kind == "h2":
            add_runs(document.add_heading(level=2), block.text)
        elif block.kind == "h3":
            add_runs(document.add_heading(level=3), block.text)
        elif block.kind == "para":
            add_runs(document.add_paragraph(), block.text)
        elif block.kind == "bullet":
            add_runs(document.add_paragraph(style="List Bullet"), block.text)
        elif block.kind == "number":
            # Explicit numbers keep "rule 3" meaning rule 3 whatever Word's list numbering does.
            add_runs(document.add_paragraph(), f"{block.number}. {block.text}")
        elif block.kind == "table":
            table = document.add_table(rows=len(block.rows), cols=len(block.rows[0]))
            table.style = "Table Grid"
            for r, row in enumerate(block.rows):
                for c, value in enumerate(row):
                    paragraph = table.cell(r, c).paragraphs[0]
                    add_runs(paragraph, f"**{value}**" if r == 0 else value)
            document.add_paragraph()

    buffer = io.BytesIO()
    document.save(buffer)
    target.write_bytes(_normalise_zip(buffer.getvalue()))


def _normalise_zip(blob: bytes) -> bytes:
    """Re-pack a ZIP with fixed timestamps and attributes so the bytes depend only on the content."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_DATE.timetuple()[:6])
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            fixed.create_system = 0
            target.writestr(fixed, source.read(info.filename), compresslevel=9)
    return out.getvalue()


# ------------------------------------------------------------------------------------------ main
def main() -> int:
    sources = sorted(p for p in SOURCES.glob("*.md") if p.name != "README.md")
    if not sources:
        print(f"no sources found in {SOURCES}", file=sys.stderr)
        return 1
    for source in sources:
        match = SOURCE_NAME.match(source.name)
        if not match:
            print(f"skipping {source.name}: expected <folder>__<name>.<pdf|docx>.md", file=sys.stderr)
            continue
        blocks = parse_markdown(source.read_text(encoding="utf-8"))
        target = DOCS / match["folder"] / f"{match['name']}.{match['fmt']}"
        target.parent.mkdir(parents=True, exist_ok=True)
        (write_pdf if match["fmt"] == "pdf" else write_docx)(blocks, target)
        print(f"{source.relative_to(ROOT)} -> {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
