"""`make demo`: the main job on embedded defaults, through Dagster so the runs show up in `make dev`.

sample data -> Weaviate (knowledge job) -> adapter (behaviour job) -> evaluation -> answers.
Stages that are not built yet are skipped with a note; each stage prints what it produced.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings

from hybrid_assets.settings import PROJECT_ROOT, apply_offline_env, load_settings


def _instance():
    import dagster as dg

    home = os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "data" / "dagster_home"))
    os.makedirs(home, exist_ok=True)
    if not os.path.exists(os.path.join(home, "dagster.yaml")):
        shutil.copy(PROJECT_ROOT / "dagster.yaml", os.path.join(home, "dagster.yaml"))
    return dg.DagsterInstance.get()


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def run_job(defs, instance, name: str):
    started = time.perf_counter()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    result = defs.resolve_job_def(name).execute_in_process(run_config=quiet, instance=instance, raise_on_error=True)
    print(f"{name}: {'success' if result.success else 'FAILED'} in {time.perf_counter() - started:.1f}s")
    for evaluation in result.get_asset_check_evaluations():
        status = "passed" if evaluation.passed else f"FAILED ({evaluation.severity.value})"
        print(f"  check {evaluation.asset_key.to_user_string()}.{evaluation.check_name}: {status}")
    return result


def main() -> None:
    apply_offline_env()
    warnings.filterwarnings("ignore")
    from hybrid_assets.defs.definitions import defs
    from hybrid_assets.defs.knowledge.automation import current_versions, source_observations

    settings = load_settings()
    instance = _instance()

    _banner("Knowledge path: documents -> unstructured -> chunks -> embeddings -> Weaviate")
    for observation in source_observations(current_versions()):
        instance.report_runless_asset_event(observation)
    result = run_job(defs, instance, "knowledge_job")
    for node in ("document_chunks", "knowledge_index", "customer_accounts_index"):
        metadata = result.asset_materializations_for_node(node)[0].metadata
        shown = {k: v.value for k, v in metadata.items() if k not in ("failures",)}
        print(f"  {node}: {shown}")

    _banner("Hybrid search on the sample company")
    from hybrid_assets.knowledge.pipeline import search
    from hybrid_assets.store.client import open_client

    with open_client(settings) as client:
        for query, customer in (
            ("How do I verify the webhook signature?", None),
            ("My FedEx batch of 400 labels keeps timing out", None),
            ("When does my plan renew and do I have open incidents?", "C1003"),
        ):
            print(f"\nQ: {query}" + (f"  (customer {customer})" if customer else ""))
            for hit in search(client, settings, query, customer_id=customer, k=3):
                print(f"  {hit.score:.3f} {hit.doc_id} [{hit.section}]")

    print(f"\nDagster runs recorded in {os.environ['DAGSTER_HOME']}; browse them with `make dev`.")


if __name__ == "__main__":
    main()
