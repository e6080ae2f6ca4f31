"""Find knowledge documents and fingerprint them by content (the data version of the file set).

Symbolic links are never followed. Every symlink under the documents folder (to a file or a folder,
pointing inside or outside the folder, or dangling) is listed as a document of kind ``"symlink"``
and refused by the parser with the reason ``symbolic link (not followed)``; its target is never read
and a folder link is never descended into. One rule for every link is the simplest that is safe:
``docs/x.txt -> /etc/passwd`` cannot leak into the shared collection, and a link inside the folder
cannot index one file twice under two ids. Put a real copy of the file in the folder instead.
Other non-regular files (FIFOs, sockets, devices) are listed as kind ``"special"`` and refused too
(reading a FIFO would block the ingest). Hidden files and folders (a name starting with ".") are
skipped.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SUPPORTED_FORMATS = {".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".pdf": "pdf",
                     ".docx": "docx", ".txt": "txt"}


@dataclass(frozen=True)
class DocumentRef:
    """One entry in the documents folder. ``doc_id`` is its path relative to that folder (stable).

    ``kind`` is ``"file"`` (a regular file), ``"symlink"`` or ``"special"``; only regular files are
    parsed. For a symlink ``sha256`` fingerprints the link text (so re-pointing it changes the
    folder version) and ``size`` is 0.
    """

    doc_id: str
    path: Path
    sha256: str
    size: int
    kind: str = "file"

    @property
    def extension(self) -> str:
        return self.path.suffix.lower()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _entry_ref(root: Path, path: Path) -> DocumentRef | None:
    doc_id = path.relative_to(root).as_posix()
    try:
        info = os.lstat(path)
    except FileNotFoundError:  # removed while scanning
        return None
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        return DocumentRef(doc_id, path, hashlib.sha256(f"symlink\0{target}".encode()).hexdigest(), 0, "symlink")
    if stat.S_ISREG(info.st_mode):
        return DocumentRef(doc_id, path, file_sha256(path), info.st_size)
    if stat.S_ISDIR(info.st_mode):
        return None
    return DocumentRef(doc_id, path, hashlib.sha256(f"special\0{info.st_mode}".encode()).hexdigest(), 0, "special")


def scan_documents(root: Path) -> list[DocumentRef]:
    """Every entry under ``root`` except folders and hidden names, sorted by doc id; symlinks are
    listed but not followed (see the module docstring).

    Unsupported extensions, symlinks and special files are included on purpose: they are reported as
    parse failures instead of being silently ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"documents folder not found: {root}")
    refs = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        links = [d for d in dirnames if (here / d).is_symlink()]  # listed, never descended into
        dirnames[:] = [d for d in dirnames if d not in links]
        for name in filenames + links:
            if not name.startswith(".") and (ref := _entry_ref(root, here / name)) is not None:
                refs.append(ref)
    return sorted(refs, key=lambda ref: PurePosixPath(ref.doc_id).parts)


def file_set_version(refs: list[DocumentRef]) -> str:
    """Content hash of a file set: changes iff a file is added, removed, renamed or edited."""
    digest = hashlib.sha256()
    for ref in sorted(refs, key=lambda r: r.doc_id):
        digest.update(f"{ref.doc_id}\0{ref.sha256}\n".encode())
    return digest.hexdigest()[:16]


def folder_version(root: Path) -> str:
    return file_set_version(scan_documents(root))
