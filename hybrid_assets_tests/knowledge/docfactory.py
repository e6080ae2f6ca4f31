"""Write small real documents of every supported format (and broken ones) for tests."""

from __future__ import annotations

from pathlib import Path

HEADING = "Webhook signatures"
BODY = (
    "Every webhook request carries the header X-Parcelwise-Signature. Compute an HMAC-SHA256 of the raw "
    "body with your signing secret and compare it in constant time before trusting the event."
)


def write_md(path: Path) -> Path:
    path.write_text(f"# Webhooks guide\n\n## {HEADING}\n\n{BODY}\n\n## Retries\n\nWe retry 8 times over 24 hours.\n")
    return path


def write_html(path: Path) -> Path:
    path.write_text(
        f"<html><body><h1>Webhooks guide</h1><h2>{HEADING}</h2><p>{BODY}</p>"
        "<h2>Retries</h2><p>We retry 8 times over 24 hours.</p></body></html>"
    )
    return path


def write_txt(path: Path) -> Path:
    path.write_text(f"WEBHOOKS GUIDE\n\n{HEADING.upper()}\n\n{BODY}\n\nRETRIES\n\nWe retry 8 times over 24 hours.\n")
    return path


def write_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Webhooks guide", level=1)
    document.add_heading(HEADING, level=2)
    document.add_paragraph(BODY)
    document.add_heading("Retries", level=2)
    document.add_paragraph("We retry 8 times over 24 hours.")
    document.save(str(path))
    return path


def write_pdf(path: Path) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    styles = getSampleStyleSheet()
    story = [
        Paragraph("Webhooks guide", styles["Heading1"]),
        Paragraph(HEADING, styles["Heading2"]),
        Paragraph(BODY, styles["BodyText"]),
        Paragraph("Retries", styles["Heading2"]),
        Paragraph("We retry 8 times over 24 hours.", styles["BodyText"]),
    ]
    SimpleDocTemplate(str(path), pagesize=A4, invariant=1).build(story)
    return path


WRITERS = {"md": write_md, "html": write_html, "txt": write_txt, "docx": write_docx, "pdf": write_pdf}

# name -> (bytes, the words the reported reason must contain)
BAD_INPUTS = {
    "corrupt.pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage without xref", "corrupt PDF"),
    "empty.md": (b"", "empty file"),
    "junk.txt": (bytes(range(256)) * 4, "binary content"),
    "notes.xyz": (b"some text in an unknown format", "unsupported extension '.xyz'"),
    "random.docx": (b"PK\x03\x04 not really a zip archive at all", "cannot parse as docx"),
}
