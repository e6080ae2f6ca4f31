"""Definitions contract: a snapshot of asset keys, checks, jobs, schedules and sensors (a definition
that silently disappears fails here), and loading the code location never imports torch."""

from __future__ import annotations

import subprocess
import sys

from hybrid_assets.definitions import defs

EXPECTED_ASSETS = {
    "behaviour_data_files",
    "behaviour_dataset",
    "support_adapter",
    "promoted_adapter",
    "answer_samples",
    "hybrid_evaluation",
    "raft_examples",
    "knowledge_documents",
    "customer_account_files",
    "document_chunks",
    "knowledge_index",
    "customer_accounts_index",
}
EXPECTED_CHECKS = {
    ("document_chunks", "no_empty_chunks"),
    ("document_chunks", "parse_failures_listed"),
    ("knowledge_index", "weaviate_matches_chunks"),
    ("customer_accounts_index", "one_tenant_per_customer"),
    ("behaviour_dataset", "behaviour_records_valid"),
    ("behaviour_dataset", "behaviour_replies_state_only_sourced_figures"),
    ("support_adapter", "adapter_beats_base"),
}
EXPECTED_JOBS = {"knowledge_job", "knowledge_sources_job", "behaviour_job", "behaviour_sources_job", "raft_job",
                 "serving_job", "evaluation_job"}
EXPECTED_SENSORS = {"knowledge_automation", "behaviour_automation"}
EXPECTED_GROUPS = {
    "knowledge_documents": "knowledge",
    "customer_account_files": "knowledge",
    "document_chunks": "knowledge",
    "knowledge_index": "knowledge",
    "customer_accounts_index": "knowledge",
    "behaviour_data_files": "behaviour",
    "behaviour_dataset": "behaviour",
    "support_adapter": "behaviour",
    "promoted_adapter": "behaviour",
    "answer_samples": "serving",
    "hybrid_evaluation": "evaluation",
    "raft_examples": "raft",
}


def test_definitions_snapshot():
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == EXPECTED_ASSETS
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert checks == EXPECTED_CHECKS
    jobs = {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    assert jobs == EXPECTED_JOBS
    assert not defs.schedules  # the daily re-sync is an automation condition (defs/rules.py)
    assert {s.name for s in defs.sensors} == EXPECTED_SENSORS
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == EXPECTED_GROUPS


def test_promotion_check_is_blocking():
    from hybrid_assets.defs.behaviour.checks import adapter_beats_base

    (spec,) = adapter_beats_base.check_specs
    assert spec.blocking and spec.asset_key.to_user_string() == "support_adapter"


def test_every_materializable_asset_declares_kinds_and_description():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        assert node.kinds, key


def test_loading_definitions_does_not_import_torch():
    code = (
        "import sys, hybrid_assets.definitions as d; d.defs.resolve_asset_graph();"
        "heavy=[m for m in ('torch','transformers','sentence_transformers','peft','weaviate') if m in sys.modules];"
        "print(','.join(heavy)); sys.exit(1 if heavy else 0)"
    )
    run = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"heavy modules imported at load: {run.stdout} {run.stderr[-500:]}"


def test_the_code_location_is_described_one_way_everywhere():
    import tomllib

    import yaml

    from hybrid_assets.settings import PROJECT_ROOT

    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())["load_from"]
    (location,) = [entry["python_module"] for entry in workspace]
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]
    assert location["module_name"] == project["dagster"]["module_name"] == \
        project["dg"]["project"]["code_location_target_module"] == "hybrid_assets.definitions"
    assert location["location_name"] == project["dagster"]["code_location_name"] == \
        project["dg"]["project"]["code_location_name"] == "hybrid_assets"


def test_definitions_are_loaded_from_the_defs_folder():
    """As `dg` scaffolds a project: nothing is listed by hand, so a new module under defs/ is picked up."""
    from hybrid_assets.settings import PROJECT_ROOT

    source = (PROJECT_ROOT / "hybrid_assets" / "definitions.py").read_text()
    assert "load_from_defs_folder(" in source and "import hybrid_assets.defs." not in source


def test_the_instance_config_uses_public_settings_only(tmp_path, monkeypatch):
    import shutil

    import dagster as dg

    from hybrid_assets.settings import PROJECT_ROOT

    text = (PROJECT_ROOT / "dagster.yaml").read_text()
    assert "_core" not in text  # no private module paths
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    instance = dg.DagsterInstance.get()
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1


def test_no_private_dagster_api_is_imported():
    from hybrid_assets.settings import PROJECT_ROOT

    offenders = [str(path.relative_to(PROJECT_ROOT)) for root in ("hybrid_assets", "benchmarks")
                 for path in (PROJECT_ROOT / root).rglob("*.py") if "dagster._" in path.read_text(encoding="utf-8")]
    assert offenders == []
