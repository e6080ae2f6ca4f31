"""`make demo`: the main job on embedded defaults, through Dagster so the runs show up in `make dev`.

sample data -> Weaviate (knowledge job) -> adapter (behaviour job, or nothing to do when the shipped
release adapter was trained on exactly this behaviour data) -> answers -> evaluation.
Stages that are not built yet are skipped with a note; each stage prints what it produced.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings

from hybrid_assets.behaviour.calibration import describe as describe_decision
from hybrid_assets.behaviour.dataset import dataset_version, find_behaviour_files
from hybrid_assets.behaviour.evaluate import promotion_gate
from hybrid_assets.behaviour.pipeline import comparison_table
from hybrid_assets.behaviour.registry import AdapterRegistry
from hybrid_assets.behaviour.release import adapter_trained_on, release_lineage
from hybrid_assets.definitions import defs
from hybrid_assets.knowledge.pipeline import search
from hybrid_assets.settings import PROJECT_ROOT, apply_offline_env, load_settings
from hybrid_assets.store.client import open_client


def _instance():
    import dagster as dg

    home = os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "data" / "dagster_home"))
    os.makedirs(home, exist_ok=True)
    if not os.path.exists(os.path.join(home, "dagster.yaml")):
        shutil.copy(PROJECT_ROOT / "dagster.yaml", os.path.join(home, "dagster.yaml"))
    return dg.DagsterInstance.get()


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def run_job(defs, instance, name: str, raise_on_error: bool = True, log_level: str = "WARNING"):
    started = time.perf_counter()
    quiet = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    result = defs.resolve_job_def(name).execute_in_process(run_config=quiet, instance=instance,
                                                           raise_on_error=raise_on_error)
    print(f"{name}: {'success' if result.success else 'FAILED'} in {time.perf_counter() - started:.1f}s")
    for evaluation in result.get_asset_check_evaluations():
        status = "passed" if evaluation.passed else f"FAILED ({evaluation.severity.value})"
        print(f"  check {evaluation.asset_key.to_user_string()}.{evaluation.check_name}: {status}")
    return result


def main() -> None:
    apply_offline_env()
    warnings.filterwarnings("ignore")

    settings = load_settings()
    instance = _instance()

    _banner("Knowledge path: documents -> unstructured -> chunks -> embeddings -> Weaviate")
    run_job(defs, instance, "knowledge_sources_job")  # record the folders' content hashes (data versions)
    result = run_job(defs, instance, "knowledge_job")
    for node in ("document_chunks", "knowledge_index", "customer_accounts_index"):
        metadata = result.asset_materializations_for_node(node)[0].metadata
        shown = {k: v.value for k, v in metadata.items() if k not in ("failures",)}
        print(f"  {node}: {shown}")

    _banner("Hybrid search on the sample company")

    with open_client(settings) as client:
        for query, customer in (
            ("How do I verify the webhook signature?", None),
            ("My FedEx batch of 400 labels keeps timing out", None),
            ("When does my plan renew and do I have open incidents?", "C1003"),
        ):
            print(f"\nQ: {query}" + (f"  (customer {customer})" if customer else ""))
            for hit in search(client, settings, query, customer_id=customer, k=3):
                print(f"  {hit.score:.3f} {hit.doc_id} [{hit.section}]")

    behaviour_stage(defs, instance, settings)
    answers_stage(defs, instance)
    evaluation_stage(defs, instance)

    print(f"\nDagster runs recorded in {os.environ['DAGSTER_HOME']}; browse them with `make dev`.")


def _already_trained(settings):
    """(version, promoted) of the newest adapter trained on exactly the current behaviour data (the
    shipped release adapter included), or (None, False). Then the behaviour path has nothing to do:
    unchanged data never retrains, whether or not that adapter passed the promotion gate; a challenger
    is one command (`hybrid-assets train --profile quick`)."""
    existing = adapter_trained_on(settings, dataset_version(find_behaviour_files(settings.behaviour_dir)))
    current = AdapterRegistry(settings.adapters_dir).current()
    if existing is None:
        return None, False
    return existing, current is not None and current.version_id == existing.version_id


def behaviour_stage(defs, instance, settings) -> None:
    _banner("Behaviour path: behaviour data -> SFT -> QLoRA adapter -> eval vs base -> promotion gate")
    existing, promoted = _already_trained(settings)
    if existing is not None:
        shipped = existing.version_id == (release_lineage(settings.release_adapter_dir) or {}).get("version_id")
        print(f"behaviour data unchanged since adapter {existing.version_id}"
              f"{' (the shipped release adapter, adapters/release)' if shipped else ''} was trained on it: "
              f"nothing to do ({'promoted' if promoted else 'not promoted: it did not pass the gate'})")
        metrics = existing.lineage["metrics"]
    else:
        run_job(defs, instance, "behaviour_sources_job")  # record data/behaviour's content hash
        print("behaviour data changed: training an adapter with the default profile (about 30 minutes on a "
              "2-core CPU; progress is logged)...", flush=True)
        result = run_job(defs, instance, "behaviour_job", raise_on_error=False, log_level="INFO")
        nodes = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        if "support_adapter" not in nodes:
            raise SystemExit("behaviour_job failed before an adapter was trained; see the log above")
        output = result.output_for_node("support_adapter")
        metrics = {"base": output["base"], "adapter": output["adapter"],
                   "champion": {"metrics": output.get("champion")} if output.get("champion") else None}
        promoted = "promoted_adapter" in nodes
        print(f"adapter {output['version_id']} " + ("PROMOTED" if promoted else "NOT promoted (gate failed)"))
    champion = (metrics.get("champion") or {}).get("metrics")
    print(f"\nbase vs adapter on the held-out eval subset ({metrics['adapter']['n']} records, greedy, "
          "schema-constrained as served):")
    print(comparison_table(metrics["base"], metrics["adapter"], champion))
    calibration = metrics.get("decision_calibration")
    print(describe_decision(calibration))
    print("gate: " + "; ".join(promotion_gate(metrics["base"], metrics["adapter"], champion)[1]))


def answers_stage(defs, instance) -> None:
    _banner("Serving: tenant-scoped retrieval + promoted adapter + schema-constrained JSON")
    result = run_job(defs, instance, "serving_job")
    answers = result.asset_materializations_for_node("answer_samples")[0].metadata["answers"].value
    for item in answers:
        who = f" (customer {item['customer_id']})" if item["customer_id"] else ""
        print(f"\nTICKET{who}: {item['ticket']}")
        print(json.dumps(item["answer"], indent=2, ensure_ascii=False))
        cited = ", ".join(f"{s['id']}={s['doc_id']}" for s in item["sources"]) or "none"
        print(f"  adapter {item['adapter_version'] or '(base)'}; cited: {cited}; "
              f"retrieval {item['timing_ms']['retrieval']:.0f} ms, generation {item['timing_ms']['generation']:.0f} ms")


def evaluation_stage(defs, instance) -> None:
    _banner("Evaluation: base vs RAG-only vs fine-tune-only vs hybrid on the held-out tickets")
    result = run_job(defs, instance, "evaluation_job")
    metadata = result.asset_materializations_for_node("hybrid_evaluation")[0].metadata
    print(metadata["table"].value)
    best = metadata["best_overall"].value
    print(f"\nbest overall: {best}" + ("" if best == "hybrid" else
          "  <- the hybrid is NOT the best here; see the per-metric rows above for why"))
    print(f"metrics where another configuration beats the hybrid: {metadata['hybrid_beaten_on'].value}")
    print(f"report: {metadata['report_path'].value} (+ .png chart)")


if __name__ == "__main__":
    main()
