"""The behaviour job really runs in Dagster (real model, NF4, one training step, tiny eval): the dataset
is validated, an adapter is trained, evaluated against the base and committed to the registry, and the
blocking gate refuses to promote an adapter that does not beat the base (one step cannot), so
``promoted_adapter`` is skipped and the promoted pointer is never written; and a candidate that
passes the gate is promoted by the same job."""

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


def _one_label_company(folder) -> None:
    """The fixture data re-labelled into a label space with one value per field: every label a model
    decides is then right by construction, so the gate's outcome rests on JSON validity alone."""
    import json

    (folder / "labels.json").write_text(json.dumps({"company": "Parcelwise", "sentiments": ["neutral"],
                                                    "categories": ["other"], "escalation_levels": ["none"]}))
    rows = []
    for line in (folder / "tickets.jsonl").read_text().splitlines():
        row = json.loads(line)
        row["answer"].update(sentiment="neutral", category="other")
        row["answer"]["escalation"] = {"level": "none", "reason": "Rule 5."}
        rows.append(json.dumps(row))
    (folder / "tickets.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "intents.csv").write_text("text,category\nWhat does a label cost?,other\n")


def test_a_passing_gate_promotes_through_dagster(tmp_path, monkeypatch):
    """The promote path of the gate, end to end: a candidate that ties the base at a perfect 1.0 on
    every gate metric passes (a 1.0 cannot be beaten), so the blocking check passes, promoted_adapter
    runs, and the registry's current.json points at the new version - which serving then loads.

    The candidate is real (trained, committed, evaluated as served), with a learning rate so small
    that it decodes like the base; the one-value label space makes the labels right by construction."""
    pytest.importorskip("torch")
    from hybrid_assets.behaviour.registry import AdapterRegistry
    from hybrid_assets.definitions import defs
    from hybrid_assets.settings import load_settings

    shutil.copytree(FIXTURES, tmp_path / "data" / "behaviour")
    _one_label_company(tmp_path / "data" / "behaviour")
    monkeypatch.setenv("HYBRID_DATA_DIR", str(tmp_path / "data"))
    config = {**RUN_CONFIG, "ops": {"support_adapter": {"config": {
        **RUN_CONFIG["ops"]["support_adapter"]["config"], "learning_rate": 1e-9}}}}

    result = defs.resolve_job_def("behaviour_job").execute_in_process(
        run_config=config, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    reasons = checks["adapter_beats_base"].metadata["reasons"].value
    assert checks["adapter_beats_base"].passed, reasons
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"behaviour_dataset", "support_adapter", "promoted_adapter"}
    version_id = result.asset_materializations_for_node("support_adapter")[0].metadata["version_id"].value
    registry = AdapterRegistry(load_settings().adapters_dir)
    assert registry.current().version_id == version_id
    assert (registry.current().path / "adapter_config.json").is_file()  # standard PEFT files, servable
