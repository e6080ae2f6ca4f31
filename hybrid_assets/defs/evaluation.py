"""Evaluation in Dagster: the four-configuration comparison (base, RAG-only, fine-tune-only, hybrid) on
the sample company's held-out tickets, as a markdown table + PNG chart in the metadata and a JSON report.

Like serving, it reads both paths' outputs and runs only on demand (demo or UI): neither path's job
or automation sensor includes it, so evaluating never retrains or re-embeds anything.
"""

import base64

import dagster as dg
from pydantic import Field

from hybrid_assets.defs.resources import WeaviateResource
from hybrid_assets.evaluation.compare import bar_chart, markdown_table, where_beaten, write_report
from hybrid_assets.evaluation.runner import DEFAULT_SAMPLE_LIMIT, evaluate_sample


class EvaluationConfig(dg.Config):
    limit: int = Field(default=DEFAULT_SAMPLE_LIMIT, description="Held-out tickets evaluated (a fixed, "
                       "content-hash-chosen subset; each costs ~4 generations on the CPU)")


@dg.asset(
    group_name="evaluation",
    kinds={"python", "weaviate"},
    deps=["knowledge_index", "customer_accounts_index", "promoted_adapter"],
    tags={"runs_when": "on_demand"},
    description="Base vs RAG-only vs fine-tune-only vs hybrid on the held-out tickets: JSON validity, label "
    "accuracies, answer F1, citation precision/recall, abstention P/R/F1, retrieval recall@k.",
)
def hybrid_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig,
                      weaviate: WeaviateResource) -> dg.MaterializeResult:

    settings = weaviate.settings()
    with weaviate.client() as client:
        report = evaluate_sample(settings, client, limit=config.limit, progress=context.log.info)
    out = settings.runs_dir / "evaluation" / "sample_company.json"
    write_report(report, out)
    chart = bar_chart(report, out.with_suffix(".png"), f"sample company held-out tickets (n={report['n']})")
    png = base64.b64encode(chart.read_bytes()).decode()
    hybrid = report["configurations"]["hybrid"]["metrics"]
    return dg.MaterializeResult(metadata={
        "n": report["n"],
        "adapter": report["adapter"],
        "adapter_status": report.get("adapter_status"),
        "best_overall": report["best_overall"],
        "hybrid_overall": hybrid["overall"],
        "hybrid_beaten_on": "; ".join(where_beaten(report)) or "nothing",
        "table": dg.MetadataValue.md(markdown_table(report)),
        "chart": dg.MetadataValue.md(f"![four configurations](data:image/png;base64,{png})"),
        "report_path": dg.MetadataValue.path(str(out)),
    })


evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.groups("evaluation"),
    description="Four-configuration evaluation on the held-out tickets (on demand).",
)
