"""Contract of ``hybrid_assets.behaviour.registry`` and the promotion gate (no model needed):

- only a complete staging dir becomes a version (atomic rename; checkpoints dropped) with a
  ``lineage.json`` (base model, dataset hash, config, metrics, code version, created_at);
- ``promote`` replaces ``current.json`` atomically: a crash mid-promotion leaves the old pointer
  intact and no partial file; promoting an unknown version changes nothing;
- a failed or interrupted run never touches ``current.json`` or ``versions/``;
- versions are listed oldest first; ``current()`` is None before the first promotion;
- the gate passes only when the adapter beats the base on JSON validity, category, sentiment and
  escalation (or ties at 1.0), and a refused gate leaves the registry unchanged.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pytest

import hybrid_assets
from hybrid_assets.behaviour import registry as registry_module
from hybrid_assets.behaviour.evaluate import EvalMetrics, Prediction, promote_if_passing, promotion_gate, score
from hybrid_assets.behaviour.registry import AdapterRegistry, RegistryError, build_lineage


def _fake_adapter(path, checkpoints: bool = True):
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text("{}", encoding="utf-8")
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    if checkpoints:
        (path / "checkpoints" / "step-000001").mkdir(parents=True)
    return path


def _commit(registry, dataset_version="abcdef0123456789", when=None, metrics=None):
    staging = _fake_adapter(registry.staging_dir(f"run-{dataset_version[:8]}-{(when or datetime.now()).timestamp():.0f}"))
    lineage = build_lineage("smollm2-135m-instruct", dataset_version, {"lora_r": 16}, metrics or {"loss": 1.0})
    return registry.commit(staging, lineage, AdapterRegistry.new_version_id(dataset_version, when))


def _snapshot(root) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_commit_creates_a_complete_version_with_lineage(tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    assert registry.current() is None and registry.list_versions() == []

    version = _commit(registry, when=datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc))

    assert version.version_id == "20261124T120000Z-abcdef01"
    assert version.path == registry.versions_dir / version.version_id
    assert not (version.path / "checkpoints").exists()
    assert list(registry.staging_root.iterdir()) == []  # moved, not copied
    lineage = json.loads((version.path / "lineage.json").read_text())
    assert lineage["base_model"] == "smollm2-135m-instruct"
    assert lineage["dataset_version"] == "abcdef0123456789"
    assert lineage["train_config"] == {"lora_r": 16} and lineage["metrics"] == {"loss": 1.0}
    assert lineage["code_version"]["hybrid_assets"] == hybrid_assets.__version__
    assert "git_commit" in lineage["code_version"] and lineage["created_at"]
    assert registry.current() is None  # committing never promotes


def test_versions_are_listed_oldest_first(tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    later = _commit(registry, "bbbbbbbb11", datetime(2026, 11, 25, tzinfo=timezone.utc))
    earlier = _commit(registry, "aaaaaaaa22", datetime(2026, 11, 24, tzinfo=timezone.utc))
    assert [v.version_id for v in registry.list_versions()] == [earlier.version_id, later.version_id]
    assert registry.get(later.version_id).lineage["dataset_version"] == "bbbbbbbb11"


def test_incomplete_staging_is_never_committed(tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    staging = registry.staging_dir("interrupted-run")
    (staging / "adapter_config.json").write_text("{}", encoding="utf-8")  # weights never written
    with pytest.raises(RegistryError, match="not a complete adapter"):
        registry.commit(staging, build_lineage("m", "0123456789", {}, {}))
    assert registry.list_versions() == []


def test_promote_points_current_at_the_version(tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    first, second = _commit(registry, "11111111aa"), _commit(registry, "22222222bb")
    registry.promote(first.version_id)
    assert registry.current().version_id == first.version_id
    registry.promote(second.version_id)
    assert registry.current().version_id == second.version_id
    assert json.loads(registry.current_file.read_text())["version_id"] == second.version_id
    assert [p.name for p in registry.root.iterdir() if p.name.endswith(".tmp")] == []


def test_promote_is_atomic_when_interrupted(tmp_path, monkeypatch):
    registry = AdapterRegistry(tmp_path / "adapters")
    first, second = _commit(registry, "11111111aa"), _commit(registry, "22222222bb")
    registry.promote(first.version_id)
    pointer_before = registry.current_file.read_bytes()
    replaced = []

    def crash(src, dst):  # the process dies right before the atomic replace
        replaced.append((src, dst))
        raise KeyboardInterrupt

    monkeypatch.setattr(registry_module.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        registry.promote(second.version_id)
    monkeypatch.undo()

    assert replaced and replaced[0][1] == registry.current_file  # the one write is a replace of current.json
    assert registry.current_file.read_bytes() == pointer_before
    assert registry.current().version_id == first.version_id
    assert [p.name for p in registry.root.iterdir() if p.name.endswith(".tmp")] == []  # temp file cleaned up


def test_promoting_an_unknown_or_incomplete_version_changes_nothing(tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    first = _commit(registry, "11111111aa")
    registry.promote(first.version_id)
    _fake_adapter(registry.versions_dir / "half-copied", checkpoints=False)  # no lineage.json
    before = _snapshot(registry.root)
    for bad in ("does-not-exist", "half-copied", "../escape"):
        with pytest.raises(RegistryError):
            registry.promote(bad)
    assert _snapshot(registry.root) == before


def test_a_failed_run_leaves_current_and_versions_untouched(tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    first = _commit(registry, "11111111aa")
    registry.promote(first.version_id)
    versions_before, pointer_before = _snapshot(registry.versions_dir), registry.current_file.read_bytes()

    staging = registry.staging_dir("crashed-run")
    (staging / "checkpoints" / "step-000003").mkdir(parents=True)  # what a crash leaves behind
    with pytest.raises(RegistryError):
        registry.commit(staging, build_lineage("m", "33333333cc", {}, {}))

    assert _snapshot(registry.versions_dir) == versions_before
    assert registry.current_file.read_bytes() == pointer_before


# -- the promotion gate -----------------------------------------------------------------------
def _metrics(**overrides) -> dict:
    base = {"json_validity": 0.5, "category_accuracy": 0.5, "sentiment_accuracy": 0.5, "escalation_accuracy": 0.5}
    return {**base, **overrides}


def test_gate_passes_only_when_the_adapter_beats_the_base_everywhere():
    base = _metrics()
    passed, reasons = promotion_gate(base, _metrics(json_validity=0.9, category_accuracy=0.6,
                                                    sentiment_accuracy=0.7, escalation_accuracy=0.8))
    assert passed and len(reasons) == 4

    passed, reasons = promotion_gate(base, _metrics(json_validity=0.9, category_accuracy=0.6,
                                                    sentiment_accuracy=0.7, escalation_accuracy=0.5))
    assert not passed
    assert any("escalation_accuracy" in r and "does not beat" in r for r in reasons)

    passed, _ = promotion_gate(base, _metrics(json_validity=0.4, category_accuracy=0.9,
                                              sentiment_accuracy=0.9, escalation_accuracy=0.9))
    assert not passed  # worse JSON validity blocks even with better labels


def test_gate_accepts_a_tie_only_at_perfect():
    perfect = _metrics(json_validity=1.0, category_accuracy=1.0, sentiment_accuracy=1.0, escalation_accuracy=1.0)
    assert promotion_gate(perfect, perfect)[0]
    assert not promotion_gate(_metrics(), _metrics())[0]


def test_refused_gate_leaves_the_registry_unchanged(tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    first, candidate = _commit(registry, "11111111aa"), _commit(registry, "22222222bb")
    registry.promote(first.version_id)
    before = _snapshot(registry.root)

    passed, reasons = promote_if_passing(registry, candidate.version_id, _metrics(), _metrics(category_accuracy=0.9))

    assert not passed and reasons
    assert _snapshot(registry.root) == before
    assert registry.current().version_id == first.version_id

    passed, _ = promote_if_passing(registry, candidate.version_id, _metrics(),
                                   _metrics(json_validity=0.6, category_accuracy=0.6,
                                            sentiment_accuracy=0.6, escalation_accuracy=0.6))
    assert passed and registry.current().version_id == candidate.version_id


def test_unparseable_answers_count_as_wrong(behaviour_dir, labels):
    from hybrid_assets.behaviour.dataset import load_behaviour_data

    records = load_behaviour_data(behaviour_dir, labels).records[:4]
    predictions = [Prediction(r.id, r.target, r.answer, None, 10) for r in records[:2]]
    predictions += [Prediction(r.id, "not json", None, "invalid", 10) for r in records[2:]]

    metrics = score(records, predictions, seconds=2.0)

    assert isinstance(metrics, EvalMetrics)
    assert metrics.json_validity == metrics.category_accuracy == metrics.sentiment_accuracy == 0.5
    assert metrics.escalation_accuracy == metrics.decision_accuracy == 0.5
    assert metrics.mean_latency_s == 0.5 and metrics.tokens_per_s == 20.0
    assert promotion_gate(metrics.to_dict(), metrics)[0] is False


def test_registry_writes_nothing_outside_its_root(tmp_path):
    root = tmp_path / "adapters"
    registry = AdapterRegistry(root)
    registry.promote(_commit(registry, "11111111aa").version_id)
    assert sorted(os.listdir(tmp_path)) == ["adapters"]


def test_a_challenger_must_match_the_adapter_in_service_not_only_beat_the_base():
    base = _metrics()
    champion = _metrics(json_validity=1.0, category_accuracy=0.9, sentiment_accuracy=0.8, escalation_accuracy=0.8,
                        decision_accuracy=0.8)
    quick = _metrics(json_validity=1.0, category_accuracy=0.6, sentiment_accuracy=0.6, escalation_accuracy=0.6,
                     decision_accuracy=0.7)
    passed, reasons = promotion_gate(base, quick)
    assert passed  # it does beat the base ...
    passed, reasons = promotion_gate(base, quick, champion)
    assert not passed and "adapter in service" in reasons[-1]  # ... but not the champion
    better = {**champion, "escalation_accuracy": 0.9}
    assert promotion_gate(base, better, champion)[0]


def test_a_refused_challenger_leaves_the_champion_in_service(tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    champion = _commit(registry, "1111111111")
    registry.promote(champion.version_id)
    challenger = _commit(registry, "2222222222")
    strong = _metrics(json_validity=1.0, category_accuracy=0.9, sentiment_accuracy=0.9, escalation_accuracy=0.9,
                      decision_accuracy=0.9)
    weak = _metrics(json_validity=0.9, category_accuracy=0.6, sentiment_accuracy=0.6, escalation_accuracy=0.6,
                    decision_accuracy=0.6)
    passed, _ = promote_if_passing(registry, challenger.version_id, _metrics(), weak, strong)
    assert not passed and registry.current().version_id == champion.version_id
