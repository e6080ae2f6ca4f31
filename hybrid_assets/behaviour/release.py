"""The release adapter: the default adapter, shipped in the repository with its lineage.

``adapters/release/`` is a standard PEFT adapter folder (``adapter_config.json``,
``adapter_model.safetensors``) plus ``lineage.json`` (data hash, training config, gate figures,
decision calibration) and, when calibration chose one, the decision probe
(``decision_probe.safetensors``, ``models/decision.py``). It was trained by the documented release command (README, "Release adapter")
on exactly the behaviour data in ``data/behaviour``, so on a fresh machine the behaviour path has
nothing to do: ``install_release`` copies it into the local registry as an ordinary version and,
when no adapter is promoted yet, promotes it. From then on it is the champion that any newly trained
candidate must match (``behaviour/evaluate.promotion_gate``): a quick adapter never replaces it.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path

from hybrid_assets.behaviour.dataset import dataset_version, find_behaviour_files
from hybrid_assets.behaviour.registry import (
    LINEAGE_FILE,
    REQUIRED_ADAPTER_FILES,
    AdapterRegistry,
    AdapterVersion,
    RegistryError,
    read_lineage,
    write_lineage,
)
from hybrid_assets.models.decision import PROBE_FILE
from hybrid_assets.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

RELEASE_DIR = PROJECT_ROOT / "adapters" / "release"  # the default of ``Settings.release_adapter_dir``


def release_lineage(release_dir: Path | None) -> dict | None:
    """The shipped adapter's lineage, or None when no complete release adapter is shipped."""
    if release_dir is None:
        return None
    release_dir = Path(release_dir)
    if any(not (release_dir / name).is_file() for name in REQUIRED_ADAPTER_FILES):
        return None
    return read_lineage(release_dir)


def release_matches_data(settings: Settings) -> bool:
    """True when the shipped adapter was trained on exactly the current behaviour data."""
    lineage = release_lineage(settings.release_adapter_dir)
    if not lineage:
        return False
    return lineage.get("dataset_version") == dataset_version(find_behaviour_files(settings.behaviour_dir))


def install_release(settings: Settings, promote_if_none: bool = True) -> AdapterVersion | None:
    """Copy the shipped adapter into the registry (once; versions are immutable) and promote it when no
    adapter is promoted. Returns the registry version, or None when nothing is shipped."""
    release_dir = settings.release_adapter_dir
    lineage = release_lineage(release_dir)
    if lineage is None:
        return None
    version_id = lineage.get("version_id")
    if not isinstance(version_id, str):
        raise RegistryError(f"{Path(release_dir) / LINEAGE_FILE}: lineage has no version_id")
    registry = AdapterRegistry(settings.adapters_dir)
    installed = registry.versions_dir / version_id
    if installed.is_dir() and read_lineage(installed) != lineage and _same_weights(release_dir, installed):
        # The same weights recalibrated since they were installed (``hybrid-assets calibrate``): the
        # decision rule serving reads is the lineage's, so the installed copy takes the shipped lineage.
        write_lineage(installed, lineage)
        log.info("release adapter %s: installed lineage refreshed from %s (recalibrated)", version_id, release_dir)
    if not installed.is_dir():
        # Copy beside the target, then one rename: a reader never sees a half-copied version.
        registry.versions_dir.mkdir(parents=True, exist_ok=True)
        partial = registry.versions_dir / f".{version_id}.{uuid.uuid4().hex[:8]}.partial"
        shutil.copytree(release_dir, partial)
        try:
            partial.rename(registry.versions_dir / version_id)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not (registry.versions_dir / version_id).is_dir():
                raise
        log.info("installed the release adapter %s into %s", version_id, registry.versions_dir)
    version = registry.get(version_id)
    if promote_if_none and registry.current() is None:
        registry.promote(version_id)
        log.info("promoted the release adapter %s (no adapter was promoted)", version_id)
    return version


def _same_weights(a: Path, b: Path) -> bool:
    return all((Path(a) / name).read_bytes() == (Path(b) / name).read_bytes() for name in REQUIRED_ADAPTER_FILES
               if name != LINEAGE_FILE)


def export_release(version: AdapterVersion, release_dir: Path = RELEASE_DIR) -> Path:
    """Write a registry version as the shipped release adapter (the release command's last step):
    only the PEFT files and the lineage, no checkpoints."""
    release_dir = Path(release_dir)
    staging = release_dir.with_name(f".{release_dir.name}.{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    for name in (*REQUIRED_ADAPTER_FILES, LINEAGE_FILE):
        shutil.copy2(version.path / name, staging / name)
    if (version.path / PROBE_FILE).is_file():  # the decision probe, when calibration chose one
        shutil.copy2(version.path / PROBE_FILE, staging / PROBE_FILE)
    _portable_base_name(staging / "adapter_config.json", version.lineage.get("base_model"))
    if release_dir.exists():
        shutil.rmtree(release_dir)
    staging.rename(release_dir)
    return release_dir


def _portable_base_name(config_path: Path, base_model: str | None) -> None:
    """PEFT records the base model as it was loaded - here the converted folder under this machine's
    cache. The shipped copy names it as configured instead (``HYBRID_BASE_MODEL``, the lineage's
    ``base_model``): serving loads the base itself and vLLM is given the base folder, so the field is
    only a label, and a committed file must not carry a machine path."""
    if not base_model:
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def adapter_trained_on(settings: Settings, data_version: str) -> AdapterVersion | None:
    """The newest registry adapter (the shipped one included, installed first) trained on exactly this
    behaviour data version, or None. The behaviour path's own rule: retrain only when the data changed."""
    install_release(settings)
    for version in reversed(AdapterRegistry(settings.adapters_dir).list_versions()):
        if version.lineage.get("dataset_version") == data_version:
            return version
    return None
