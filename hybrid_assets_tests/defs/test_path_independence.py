"""The heart of the design: neither path triggers the other.

- In the asset graph, nothing of the knowledge path is upstream of the adapter, and nothing of the
  behaviour path is upstream of the knowledge index (so a change on one side can never make the other
  side stale); the two meet only in the on-demand serving asset, which no path's job includes.
- Each sensor hashes only its own folder and requests only its own job (build_sensor_context +
  evaluate_tick on real files): docs changing requests the knowledge job only, behaviour data
  changing requests the behaviour job only.
"""

from __future__ import annotations

import dagster as dg

from hybrid_assets.defs.behaviour.automation import behaviour_data_sensor
from hybrid_assets.defs.definitions import defs
from hybrid_assets.defs.knowledge.automation import documents_changed_sensor

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


def tick(sensor, cursor=None):
    instance = dg.DagsterInstance.ephemeral()
    return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))


def test_each_sensor_requests_only_its_own_job(monkeypatch, data_dir):
    monkeypatch.setenv("HYBRID_DATA_DIR", str(data_dir))
    docs_cursor = tick(documents_changed_sensor).cursor
    behaviour_first = tick(behaviour_data_sensor)
    assert [r.job_name for r in behaviour_first.run_requests] in ([None], ["behaviour_job"])
    behaviour_cursor = behaviour_first.cursor

    # a document changes: only the documents sensor fires
    (data_dir / "knowledge/docs/product/ship-overview.md").write_text("# Ship\n\nNow with freight quotes.")
    assert len(tick(documents_changed_sensor, docs_cursor).run_requests) == 1
    assert tick(behaviour_data_sensor, behaviour_cursor).run_requests == []
    docs_cursor = tick(documents_changed_sensor).cursor

    # behaviour data changes: only the behaviour sensor fires
    with open(data_dir / "behaviour/tickets.jsonl", "a") as handle:
        handle.write("\n")
    assert tick(documents_changed_sensor, docs_cursor).run_requests == []
    assert len(tick(behaviour_data_sensor, behaviour_cursor).run_requests) == 1
    assert behaviour_data_sensor.job_name == "behaviour_job" and documents_changed_sensor.job_name == "knowledge_job"
