"""The behaviour job really runs in Dagster (real model, NF4, one training step, tiny eval): the dataset
is validated, an adapter is trained, evaluated against the base and committed to the registry, and the
blocking gate refuses to promote an adapter that does not beat the base (one step cannot), so
``promoted_adapter`` is skipped and the promoted pointer is never written."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from hybrid_assets_tests.behaviour.conftest import FIXTURES

pytestmark = pytest.mark.integration

RUN_CONFIG = {
    "ops": {"support_adapter": {"config": {"max_steps": 1, "batch_size": 2, "grad_accum": 1, "max_length": 512,
                                           "eval_limit": 2}}},
    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
}


def test_behaviour_job_trains_registers_and_the_gate_blocks_promotion(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from hybrid_assets.behaviour.registry import AdapterRegistry
    from hybrid_assets.definitions import defs
    from hybrid_assets.settings import load_settings

    shutil.copytree(FIXTURES, tmp_path / "data" / "behaviour")
    monkeypatch.setenv("HYBRID_DATA_DIR", str(tmp_path / "data"))

    result = defs.resolve_job_def("behaviour_job").execute_in_process(
        run_config=RUN_CONFIG, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)

    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"behaviour_dataset", "support_adapter"}
    dataset_meta = result.asset_materializations_for_node("behaviour_dataset")[0].metadata
    assert dataset_meta["records"].value > 0 and dataset_meta["eval"].value > 0

    adapter_meta = result.asset_materializations_for_node("support_adapter")[0].metadata
    assert adapter_meta["train_steps"].value == 1
    assert adapter_meta["eval_records"].value == min(2, dataset_meta["eval"].value)
    assert "| json_validity |" in adapter_meta["base_vs_adapter"].value

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["adapter_beats_base"].passed is False
    assert "promoted_adapter" not in materialized

    registry = AdapterRegistry(load_settings().adapters_dir)
    versions = registry.list_versions()
    assert [v.version_id for v in versions] == [adapter_meta["version_id"].value]
    lineage = versions[0].lineage
    assert lineage["base_model"] == "smollm2-135m-instruct"
    assert lineage["train_config"]["max_steps"] == 1 and lineage["train_config"]["quantization"] == "nf4"
    assert set(lineage["metrics"]) >= {"base", "adapter", "train"}
    assert registry.current() is None and not registry.current_file.exists()
