"""The shipped release adapter (behaviour/release.py): installed once into the registry, promoted only
when nothing is promoted, found as "already trained on this data", and - for the real shipped one -
trained on exactly the shipped behaviour data with a decision threshold in its lineage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hybrid_assets.behaviour.calibration import decision_rule_of
from hybrid_assets.behaviour.dataset import dataset_version, find_behaviour_files
from hybrid_assets.behaviour.registry import AdapterRegistry, build_lineage
from hybrid_assets.behaviour.release import adapter_trained_on, export_release, install_release, release_lineage
from hybrid_assets.models.decision import PROBE_FILE
from hybrid_assets.settings import PROJECT_ROOT, load_settings

SHIPPED = PROJECT_ROOT / "adapters" / "release"


def _release(folder: Path, data_version: str, version_id: str = "20260101T000000Z-release") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}", encoding="utf-8")
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    lineage = {"version_id": version_id, **build_lineage("base", data_version, {}, {"decision_calibration": None})}
    (folder / "lineage.json").write_text(json.dumps(lineage), encoding="utf-8")
    return folder


@pytest.fixture
def release_settings(tmp_path, monkeypatch):
    (tmp_path / "data" / "behaviour").mkdir(parents=True)
    (tmp_path / "data" / "behaviour" / "tickets.jsonl").write_text("", encoding="utf-8")
    monkeypatch.setenv("HYBRID_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    data_version = dataset_version(find_behaviour_files(settings.behaviour_dir))
    release = _release(tmp_path / "shipped", data_version)
    return dataclasses.replace(settings, release_adapter_dir=release)


def test_a_fresh_registry_gets_the_release_installed_and_promoted_once(release_settings):
    registry = AdapterRegistry(release_settings.adapters_dir)
    assert registry.current() is None
    version = install_release(release_settings)
    assert registry.current().version_id == version.version_id == "20260101T000000Z-release"
    assert (version.path / "adapter_model.safetensors").read_bytes() == b"weights"
    assert install_release(release_settings).version_id == version.version_id  # idempotent
    assert [v.version_id for v in registry.list_versions()] == [version.version_id]
    assert not [p for p in registry.versions_dir.iterdir() if p.name.startswith(".")]  # no partial copy left


def test_a_recalibrated_release_refreshes_the_installed_lineage_and_never_other_weights(release_settings):
    """The shipped lineage's decision rule changed since install (``hybrid-assets calibrate``): serving
    reads the installed copy's lineage, so it is refreshed - but only while the weights are the same."""
    version = install_release(release_settings)
    shipped = release_settings.release_adapter_dir / "lineage.json"
    lineage = json.loads(shipped.read_text())
    lineage["metrics"]["decision_calibration"] = {"answer_threshold": 0.4, "method": "tokens"}
    shipped.write_text(json.dumps(lineage), encoding="utf-8")
    install_release(release_settings)
    installed = json.loads((version.path / "lineage.json").read_text())
    assert installed["metrics"]["decision_calibration"] == {"answer_threshold": 0.4, "method": "tokens"}
    # Other weights under the same version id: the installed version is immutable, its lineage stays.
    (release_settings.release_adapter_dir / "adapter_model.safetensors").write_bytes(b"other weights")
    lineage["metrics"]["decision_calibration"] = {"answer_threshold": 0.9, "method": "tokens"}
    shipped.write_text(json.dumps(lineage), encoding="utf-8")
    install_release(release_settings)
    assert json.loads((version.path / "lineage.json").read_text())["metrics"]["decision_calibration"][
        "answer_threshold"] == 0.4


def test_the_release_never_replaces_an_adapter_in_service(release_settings, tmp_path):
    registry = AdapterRegistry(release_settings.adapters_dir)
    other = _release(tmp_path / "other", "0" * 64, "20250101T000000Z-other")
    registry.versions_dir.mkdir(parents=True)
    (registry.versions_dir / "20250101T000000Z-other").symlink_to(other)
    registry.promote("20250101T000000Z-other")
    install_release(release_settings)
    assert registry.current().version_id == "20250101T000000Z-other"


def test_unchanged_data_finds_the_release_and_changed_data_does_not(release_settings):
    data_version = dataset_version(find_behaviour_files(release_settings.behaviour_dir))
    assert adapter_trained_on(release_settings, data_version).version_id == "20260101T000000Z-release"
    (release_settings.behaviour_dir / "tickets.jsonl").write_text("\n", encoding="utf-8")
    changed = dataset_version(find_behaviour_files(release_settings.behaviour_dir))
    assert adapter_trained_on(release_settings, changed) is None


def test_no_release_configured_installs_nothing(release_settings):
    settings = dataclasses.replace(release_settings, release_adapter_dir=None)
    assert install_release(settings) is None and AdapterRegistry(settings.adapters_dir).current() is None


def test_export_writes_only_the_peft_files_and_the_lineage(release_settings, tmp_path):
    version = install_release(release_settings)
    (version.path / "checkpoints").mkdir()
    (version.path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": str(tmp_path / "cache" / "converted-base")}))
    out = export_release(version, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "lineage.json"]
    shipped = json.loads((out / "adapter_config.json").read_text())  # the base as configured, no machine path
    assert shipped == {"peft_type": "LORA", "base_model_name_or_path": "base"}
    (version.path / PROBE_FILE).write_bytes(b"probe")  # an adapter calibrated with a probe ships it too
    out = export_release(version, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                     PROBE_FILE, "lineage.json"]


@pytest.mark.skipif(not (SHIPPED / "lineage.json").is_file(), reason="no release adapter shipped")
def test_the_shipped_release_adapter_was_trained_on_the_shipped_data_and_is_calibrated():
    """If this fails, data/behaviour changed after the release adapter was trained: retrain it with the
    documented command (README, "Release adapter") so a fresh machine has nothing to train."""
    lineage = release_lineage(SHIPPED)
    shipped_data = dataset_version(find_behaviour_files(PROJECT_ROOT / "data" / "behaviour"))
    assert lineage["dataset_version"] == shipped_data
    calibration = lineage["metrics"]["decision_calibration"]
    assert calibration["dev_records"] >= 8 and calibration["method"] in ("tokens", "probe")
    threshold = calibration["answer_threshold"]
    assert threshold is None or 0.0 <= threshold <= 1.0
    rule = decision_rule_of(SHIPPED, lineage, lineage["version_id"])
    assert (rule.probe is not None) == (calibration["method"] == "probe")  # its probe file is shipped with it
    assert rule.probe is None or rule.probe.features == 576  # SmolLM2-135M's hidden size
    evidence = calibration.get("evidence") or {}
    assert (rule.evidence is not None) == bool(evidence.get("used"))  # served as calibration chose
    assert not evidence or evidence["embedding_model"]  # fitted on the similarity of a named embedder
    adapter_config = json.loads((SHIPPED / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == lineage["base_model"]
    assert adapter_config["peft_type"] == "LORA"  # a standard PEFT folder (vLLM / PEFT load it as is)
