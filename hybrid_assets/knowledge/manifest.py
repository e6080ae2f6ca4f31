"""The ingest manifest: what the last knowledge ingest indexed, one small JSON file (run-time state).

``<data>/runs/knowledge/ingest_manifest.json``::

    {"documents": {"version", "finished_at", "documents", "chunks", "parsed_this_run", "failures": {doc: reason},
                   "collection", "objects", "chunks_written", "chunks_deleted"},
     "accounts":  {"version", "finished_at", "collection", "tenants": [customer ids]}}

Written by every ingest (``pipeline.ingest_knowledge``: the CLI, the demo, tests; the Dagster knowledge
assets) after Weaviate accepted the writes, so it describes what is indexed. ``version`` is the content
hash of the folder that was ingested (``documents.file_set_version``): the *knowledge version* an answer
is given with. Each half is replaced under a lock with an atomic rename, so a reader never sees a
half-written file and the two writers (documents, accounts) never lose each other's update.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from hybrid_assets.settings import Settings

MANIFEST_FILE = "ingest_manifest.json"


def manifest_path(settings: Settings) -> Path:
    return settings.runs_dir / "knowledge" / MANIFEST_FILE


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_manifest(settings: Settings) -> dict:
    """The manifest, or ``{}`` before the first recorded ingest (or when the file is unreadable)."""
    try:
        data = json.loads(manifest_path(settings).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _update(settings: Settings, part: str, value: dict) -> dict:
    path = manifest_path(settings)
    with _locked(path):
        data = read_manifest(settings)
        data[part] = value
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    return data


def record_documents(settings: Settings, *, version: str, documents: int, chunks: int, parsed: list[str],
                     failures: dict[str, str], collection: str, objects: int | None, written: int,
                     deleted: int) -> dict:
    return _update(settings, "documents", {
        "version": version, "finished_at": now_iso(), "documents": documents, "chunks": chunks,
        "parsed_this_run": sorted(parsed), "failures": dict(sorted(failures.items())), "collection": collection,
        "objects": objects, "chunks_written": written, "chunks_deleted": deleted,
    })


def record_accounts(settings: Settings, *, version: str, collection: str, tenants: list[str]) -> dict:
    return _update(settings, "accounts", {"version": version, "finished_at": now_iso(), "collection": collection,
                                          "tenants": sorted(tenants)})
