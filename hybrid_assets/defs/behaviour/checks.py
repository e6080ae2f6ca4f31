"""Behaviour checks: data validity, and the promotion gate (blocking: a failing adapter is never promoted)."""

import dagster as dg

from hybrid_assets.behaviour.dataset import unsourced_figures
from hybrid_assets.behaviour.evaluate import promotion_gate
from hybrid_assets.defs.behaviour.assets import behaviour_dataset, support_adapter


@dg.asset_check(asset=behaviour_dataset, description="Every behaviour record is valid (problems listed with file:line).")
def behaviour_records_valid(behaviour_dataset) -> dg.AssetCheckResult:
    problems = [str(p) for p in behaviour_dataset["dataset"].problems]
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"invalid_records": len(problems), "problems": dg.MetadataValue.json(problems)},
    )


@dg.asset_check(asset=behaviour_dataset, description="No ideal reply states a figure (amount, count, duration) that "
                "its cited context and its ticket do not hold: serving refuses such replies, training on them "
                "teaches the model to invent them.")
def behaviour_replies_state_only_sourced_figures(behaviour_dataset) -> dg.AssetCheckResult:
    found = unsourced_figures(behaviour_dataset["dataset"].records, behaviour_dataset["labels"])
    return dg.AssetCheckResult(
        passed=not found,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"records": len(found),
                  "where": dg.MetadataValue.json([f"{origin}: {', '.join(figures)}" for origin, figures in found])},
    )


@dg.asset_check(
    asset=support_adapter,
    blocking=True,
    description="On the eval split the adapter beats the base model on JSON validity and on category, "
    "sentiment and escalation accuracy, and is not worse than the adapter in service (champion / "
    "challenger). Blocking: promoted_adapter runs only if this passes.",
)
def adapter_beats_base(support_adapter: dict) -> dg.AssetCheckResult:
    passed, reasons = promotion_gate(support_adapter["base"], support_adapter["adapter"], support_adapter.get("champion"))
    return dg.AssetCheckResult(
        passed=passed,
        metadata={"version_id": support_adapter["version_id"], "reasons": dg.MetadataValue.json(reasons)},
    )
