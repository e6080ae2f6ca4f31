"""The heart of the design: neither path triggers the other.

- In the asset graph, nothing of the knowledge path is upstream of the adapter, and nothing of the
  behaviour path is upstream of the knowledge index (so a change on one side can never make the other
  side stale); the two meet only in the on-demand serving asset, which no path's job includes.
- Dagster's own evaluation of the declarative automation conditions (``evaluate_automation_conditions``
  on real files, observed by the real source assets): a document change requests exactly the
  knowledge assets that depend on it, a behaviour data change only behaviour assets, an accounts
  change only the accounts index, an unchanged re-observation nothing; a refused adapter is never
  requested for promotion.
"""

from __future__ import annotations

import dagster as dg

from hybrid_assets.defs.behaviour.automation import behaviour_automation
from hybrid_assets.definitions import defs
from hybrid_assets.defs.knowledge.automation import knowledge_automation

KNOWLEDGE = {"knowledge_documents", "customer_account_files", "document_chunks", "knowledge_index",
             "customer_accounts_index"}
BEHAVIOUR = {"behaviour_data_files", "behaviour_dataset", "support_adapter", "promoted_adapter"}


def upstream(key: str) -> set[str]:
    graph = defs.resolve_asset_graph()
    seen, todo = set(), [dg.AssetKey(key)]
    while todo:
        for parent in graph.get(todo.pop()).parent_keys:
            if parent.to_user_string() not in seen:
                seen.add(parent.to_user_string())
                todo.append(parent)
    return seen


def test_no_graph_edge_between_the_paths():
    for key in BEHAVIOUR:
        assert not upstream(key) & KNOWLEDGE, key
    for key in KNOWLEDGE:
        assert not upstream(key) & BEHAVIOUR, key
    assert upstream("answer_samples") >= {"knowledge_index", "promoted_adapter"}
    assert upstream("hybrid_evaluation") >= {"knowledge_index", "promoted_adapter"}
    # RAFT reads the pinned snapshot, never the live knowledge assets
    assert not upstream("raft_examples") & (KNOWLEDGE | BEHAVIOUR)


def test_jobs_stay_on_their_side():
    def selected(job):
        return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.selected_asset_keys}

    assert selected("knowledge_job") <= KNOWLEDGE
    assert selected("behaviour_job") <= BEHAVIOUR
    # where the paths meet, nothing of either path is (re)materialised
    assert selected("serving_job") == {"answer_samples"}
    assert selected("evaluation_job") == {"hybrid_evaluation"}
    assert selected("raft_job") == {"raft_examples"}


SOURCES = {"knowledge_documents", "customer_account_files", "behaviour_data_files"}


class Automation:
    """A Dagster instance on which sources are observed for real and conditions evaluated tick by tick."""

    def __init__(self):
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor = None

    def observe(self, job: str) -> None:
        assert defs.resolve_job_def(job).execute_in_process(instance=self.instance).success

    def materialized(self, keys) -> None:
        for key in keys:
            self.instance.report_runless_asset_event(dg.AssetMaterialization(key))

    def tick(self) -> set[str]:
        result = dg.evaluate_automation_conditions(defs=defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {key for key in KNOWLEDGE | BEHAVIOUR if result.get_num_requested(dg.AssetKey(key))}


def test_each_change_requests_exactly_its_own_path(monkeypatch, data_dir):
    monkeypatch.setenv("HYBRID_DATA_DIR", str(data_dir))
    automation = Automation()
    automation.observe("knowledge_sources_job")
    automation.observe("behaviour_sources_job")
    automation.materialized((KNOWLEDGE | BEHAVIOUR) - SOURCES)
    assert automation.tick() == set()  # everything is up to date

    # a document changes: its chunks and the index, nothing of the behaviour path, not the accounts
    (data_dir / "knowledge/docs/product/ship-overview.md").write_text("# Ship\n\nNow with freight quotes.")
    automation.observe("knowledge_sources_job")
    automation.observe("behaviour_sources_job")
    assert automation.tick() == {"document_chunks", "knowledge_index"}
    automation.materialized({"document_chunks", "knowledge_index"})
    assert automation.tick() == set()

    # behaviour data changes: the dataset and the adapter, nothing of the knowledge path
    with open(data_dir / "behaviour/tickets.jsonl", "a") as handle:
        handle.write("\n")
    automation.observe("knowledge_sources_job")
    automation.observe("behaviour_sources_job")
    requested = automation.tick()
    assert {"behaviour_dataset", "support_adapter"} <= requested <= BEHAVIOUR

    # account data changes: only the accounts index
    automation.materialized(BEHAVIOUR - SOURCES)
    automation.tick()
    accounts = data_dir / "knowledge/accounts/customers.json"
    accounts.write_text(accounts.read_text() + "\n")
    automation.observe("knowledge_sources_job")
    assert automation.tick() == {"customer_accounts_index"}

    # an unchanged folder observed again requests nothing
    automation.materialized({"customer_accounts_index"})
    automation.tick()
    automation.observe("knowledge_sources_job")
    automation.observe("behaviour_sources_job")
    assert automation.tick() == set()


def test_a_refused_adapter_is_never_requested_for_promotion(monkeypatch, data_dir):
    monkeypatch.setenv("HYBRID_DATA_DIR", str(data_dir))
    automation = Automation()
    automation.observe("behaviour_sources_job")
    automation.materialized({"behaviour_dataset", "promoted_adapter"})
    automation.tick()
    automation.materialized({"support_adapter"})  # a new candidate ...
    automation.instance.report_runless_asset_event(dg.AssetCheckEvaluation(  # ... that the gate refused
        asset_key=dg.AssetKey("support_adapter"), check_name="adapter_beats_base", passed=False))
    assert "promoted_adapter" not in automation.tick()


def test_each_path_has_its_own_automation_sensor():
    graph = defs.resolve_asset_graph()
    for sensor, group in ((knowledge_automation, "knowledge"), (behaviour_automation, "behaviour")):
        targeted = {key.to_user_string() for key in sensor.asset_selection.resolve(graph, allow_missing=False)}
        assert targeted == (KNOWLEDGE if group == "knowledge" else BEHAVIOUR)
    assert knowledge_automation.default_status == dg.DefaultSensorStatus.RUNNING
    assert behaviour_automation.default_status == dg.DefaultSensorStatus.STOPPED  # training is never a surprise
