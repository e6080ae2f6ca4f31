"""Serving in Dagster: a small asset that answers sample tickets with the current adapter and knowledge.

It is where the two paths meet (its lineage shows both), and it runs only when asked (the demo or
the UI): neither path's job includes it, so neither path triggers the other through it.
"""

import json

import dagster as dg

from hybrid_assets.defs.resources import WeaviateResource
from hybrid_assets.serving.engine import AnswerEngine, load_labels
from hybrid_assets.settings import load_settings


@dg.asset(
    group_name="serving",
    kinds={"python", "weaviate"},
    deps=["knowledge_index", "customer_accounts_index", "promoted_adapter"],
    tags={"runs_when": "on_demand"},
    description="Answers data/serving/sample_tickets.jsonl with retrieval + the promoted adapter; the JSON "
    "answers are in the metadata.",
)
def answer_samples(context: dg.AssetExecutionContext, weaviate: WeaviateResource) -> dg.MaterializeResult:
    settings = weaviate.settings()
    path = load_settings().data_dir / "serving" / "sample_tickets.jsonl"
    tickets = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    engine = AnswerEngine(settings, load_labels(settings))
    with weaviate.client() as client:
        answered = engine.answer_many(client, tickets)  # one batched generation
    results = []
    for item, result in zip(tickets, answered):
        context.log.info(f"{item['ticket'][:60]}... -> {result.answer['category']}/{result.answer['escalation']['level']}")
        results.append({"ticket": item["ticket"], "customer_id": item.get("customer_id"), **result.to_dict()})
    table = "\n".join(
        f"| {r['ticket'][:50]}… | {r['answer']['category']} | {r['answer']['escalation']['level']} | "
        f"{r['answer']['decision']} | {', '.join(s['doc_id'] for s in r['sources']) or '—'} |"
        for r in results
    )
    return dg.MaterializeResult(
        metadata={
            "adapter_version": results[0]["adapter_version"] if results else None,
            "answers": dg.MetadataValue.json(results),
            "summary": dg.MetadataValue.md(
                "| ticket | category | escalation | decision | cited |\n|---|---|---|---|---|\n" + table
            ),
        }
    )


serving_job = dg.define_asset_job(
    "serving_job",
    selection=dg.AssetSelection.groups("serving"),
    description="Answer the sample tickets with the current knowledge and promoted adapter.",
)
