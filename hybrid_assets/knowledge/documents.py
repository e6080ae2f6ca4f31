"""Find knowledge documents and fingerprint them by content (the data version of the file set)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_FORMATS = {".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".pdf": "pdf",
                     ".docx": "docx", ".txt": "txt"}


@dataclass(frozen=True)
class DocumentRef:
    """One file in the documents folder. ``doc_id`` is its path relative to that folder (stable)."""

    doc_id: str
    path: Path
    sha256: str
    size: int

    @property
    def extension(self) -> str:
        return self.path.suffix.lower()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_documents(root: Path) -> list[DocumentRef]:
    """All files under ``root`` (hidden files and folders skipped), sorted by doc id.

    Unsupported extensions are included on purpose: they are reported as parse failures instead of
    being silently ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"documents folder not found: {root}")
    refs = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        refs.append(DocumentRef(relative.as_posix(), path, file_sha256(path), path.stat().st_size))
    return refs


def file_set_version(refs: list[DocumentRef]) -> str:
    """Content hash of a file set: changes iff a file is added, removed, renamed or edited."""
    digest = hashlib.sha256()
    for ref in sorted(refs, key=lambda r: r.doc_id):
        digest.update(f"{ref.doc_id}\0{ref.sha256}\n".encode())
    return digest.hexdigest()[:16]


def folder_version(root: Path) -> str:
    return file_set_version(scan_documents(root))
