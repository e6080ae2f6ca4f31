"""A versioned adapter registry on the local file system (``settings.adapters_dir``).

    <root>/staging/<run key>/          training writes here (checkpoints included, resumable)
    <root>/versions/<version id>/      complete adapters only: PEFT files + tokenizer + lineage.json
    <root>/current.json                {"version_id": ...}: the promoted adapter, read by serving

Every state change is one atomic rename on the same file system: a staging dir becomes a version
with ``os.rename``, and promotion replaces ``current.json`` with ``os.replace``. A reader therefore
sees either the old or the new state, never a half-written one; a crashed or failed training run
only ever leaves a staging dir behind and never touches ``versions/`` or ``current.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import hybrid_assets
from hybrid_assets.settings import PROJECT_ROOT

LINEAGE_FILE = "lineage.json"
CURRENT_FILE = "current.json"
REQUIRED_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_VERSION_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")


class RegistryError(RuntimeError):
    pass


@dataclass(frozen=True)
class AdapterVersion:
    version_id: str
    path: Path
    lineage: dict

    def to_dict(self) -> dict:
        return {"version_id": self.version_id, "path": str(self.path), **self.lineage}


def git_commit() -> str | None:
    """The checked-out commit, when the code runs from a git checkout (read-only git call)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def build_lineage(base_model: str, dataset_version: str, train_config: dict, metrics: dict) -> dict:
    return {
        "base_model": base_model,
        "dataset_version": dataset_version,
        "train_config": train_config,
        "metrics": metrics,
        "code_version": {"hybrid_assets": hybrid_assets.__version__, "git_commit": git_commit()},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _write_json_atomic(path: Path, data: dict) -> None:
    # A unique temp name: two concurrent writers never share (and corrupt) one temp file.
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_lineage(adapter_dir: Path) -> dict | None:
    """The lineage of an adapter folder (a registry version or any folder with a lineage.json), or
    None when it has none (an adapter trained elsewhere)."""
    try:
        lineage = json.loads((Path(adapter_dir) / LINEAGE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{Path(adapter_dir) / LINEAGE_FILE} is not valid JSON: {exc}") from exc
    return lineage if isinstance(lineage, dict) else None


def write_lineage(adapter_dir: Path, lineage: dict) -> None:
    """Replace an adapter folder's lineage atomically: a reader sees the old one or the new one."""
    _write_json_atomic(Path(adapter_dir) / LINEAGE_FILE, lineage)


class AdapterRegistry:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def staging_root(self) -> Path:
        return self.root / "staging"

    @property
    def current_file(self) -> Path:
        return self.root / CURRENT_FILE

    # -- writing -------------------------------------------------------------------------------
    def staging_dir(self, run_key: str) -> Path:
        """Where a training run writes. The key should be deterministic (dataset version + config
        fingerprint) so that a rerun after an interruption resumes in the same place."""
        if not _VERSION_ID.match(run_key):
            raise ValueError(f"invalid run key {run_key!r}")
        path = self.staging_root / run_key
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def new_version_id(dataset_version: str, now: datetime | None = None) -> str:
        now = now or datetime.now(timezone.utc)
        return f"{now.strftime('%Y%m%dT%H%M%S')}Z-{dataset_version[:8]}"

    def commit(self, staging: Path, lineage: dict, version_id: str | None = None) -> AdapterVersion:
        """Turn a finished staging dir into an immutable version (checkpoints are dropped)."""
        staging = Path(staging)
        missing = [name for name in REQUIRED_ADAPTER_FILES if not (staging / name).is_file()]
        if missing:
            raise RegistryError(f"{staging} is not a complete adapter: missing {missing}")
        version_id = version_id or self.new_version_id(lineage.get("dataset_version", "unknown"))
        if not _VERSION_ID.match(version_id):
            raise ValueError(f"invalid version id {version_id!r}")
        target = self.versions_dir / version_id
        if target.exists():
            raise RegistryError(f"version {version_id} already exists")
        shutil.rmtree(staging / "checkpoints", ignore_errors=True)
        _write_json_atomic(staging / LINEAGE_FILE, {"version_id": version_id, **lineage})
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        os.rename(staging, target)
        return self.get(version_id)

    def promote(self, version_id: str) -> AdapterVersion:
        """Point ``current.json`` at ``version_id`` (atomic replace; the version must be complete)."""
        version = self.get(version_id)
        _write_json_atomic(self.current_file, {
            "version_id": version_id,
            "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        return version

    # -- reading -------------------------------------------------------------------------------
    def get(self, version_id: str) -> AdapterVersion:
        if not _VERSION_ID.match(version_id):
            raise RegistryError(f"invalid version id {version_id!r}")
        path = self.versions_dir / version_id
        lineage_file = path / LINEAGE_FILE
        if not lineage_file.is_file() or any(not (path / name).is_file() for name in REQUIRED_ADAPTER_FILES):
            raise RegistryError(f"no complete adapter version {version_id!r} in {self.versions_dir}")
        lineage = json.loads(lineage_file.read_text(encoding="utf-8"))
        lineage.pop("version_id", None)
        return AdapterVersion(version_id, path, lineage)

    def current(self) -> AdapterVersion | None:
        """The promoted version, or None before the first promotion."""
        try:
            pointer = json.loads(self.current_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:  # cannot happen through promote(); someone edited it
            raise RegistryError(f"{self.current_file} is not valid JSON: {exc}") from exc
        return self.get(pointer["version_id"])

    def list_versions(self) -> list[AdapterVersion]:
        """All complete versions, oldest first (ids start with a UTC timestamp)."""
        if not self.versions_dir.is_dir():
            return []
        versions = []
        for path in sorted(self.versions_dir.iterdir()):
            if path.is_dir() and (path / LINEAGE_FILE).is_file():
                versions.append(self.get(path.name))
        return versions
