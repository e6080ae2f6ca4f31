"""Behaviour assets: run only when the behaviour data's content hash changes (``defs/rules.py``).

behaviour_data_files (source) -> behaviour_dataset -> support_adapter -[adapter_beats_base, blocking]-> promoted_adapter
"""

import dagster as dg
from pydantic import Field, create_model

from hybrid_assets.behaviour.calibration import describe as describe_decision
from hybrid_assets.behaviour.dataset import dataset_version, find_behaviour_files, load_behaviour_data, split_records
from hybrid_assets.behaviour.evaluate import promotion_gate
from hybrid_assets.behaviour.pipeline import DEFAULT_EVAL_LIMIT, comparison_table, train_candidate
from hybrid_assets.behaviour.registry import AdapterRegistry
from hybrid_assets.behaviour.release import adapter_trained_on
from hybrid_assets.behaviour.train import TrainConfig
from hybrid_assets.defs.rules import OBSERVE_EVERY_MINUTE, ON_PARENT_CHANGE, ON_PARENT_CHANGE_GATED
from hybrid_assets.schema import LabelSpace
from hybrid_assets.settings import load_settings

GROUP = "behaviour"
RUNS_WHEN = {"runs_when": "behaviour_data_changed"}


def _training_run_config() -> type[dg.Config]:
    """The Dagster run config of ``support_adapter``, generated from ``TrainConfig`` (the one definition
    of the training knobs, their defaults and help), plus the evaluation's size. No torch is imported."""
    knobs = {}
    for name, kind, default, help_text in TrainConfig.knobs():
        if name == "base_model":  # Dagster's UI edits strings: '' stands for "the configured default"
            kind, default, help_text = str, "", f"{help_text}; '' = HYBRID_BASE_MODEL"
        elif kind == tuple[str, ...]:
            kind, default = list[str], list(default)
        knobs[name] = (kind, Field(default=default, description=help_text))
    knobs["retrain_unchanged"] = (bool, Field(default=False, description="Train even when an adapter trained on "
                                              "exactly this behaviour data exists (e.g. the shipped release adapter); "
                                              "off: the behaviour path retrains only when the data changed"))
    knobs["eval_limit"] = (int, Field(default=DEFAULT_EVAL_LIMIT, description="Evaluate base and adapter on this "
                                      "many eval records (a fixed subset; 0 = the whole eval split, minutes more on a CPU)"))
    return create_model("AdapterTrainingConfig", __base__=dg.Config, __doc__="Training knobs (defaults: the CPU "
                        "profile of hybrid_assets/behaviour/train.py).", **knobs)


AdapterTrainingConfig = _training_run_config()


@dg.observable_source_asset(
    group_name=GROUP,
    tags={"dagster/kind/file": ""},
    automation_condition=OBSERVE_EVERY_MINUTE,
    description="Behaviour data files under data/behaviour (tickets, RAFT examples, intent CSVs, labels), "
    "observed by content hash.",
)
def behaviour_data_files() -> dg.DataVersion:
    return dg.DataVersion(dataset_version(find_behaviour_files(load_settings().behaviour_dir))[:16])


@dg.asset(
    group_name=GROUP,
    kinds={"python", "json"},
    deps=[behaviour_data_files],
    tags=RUNS_WHEN,
    automation_condition=ON_PARENT_CHANGE,
    description="Behaviour records validated against the answer schema (bad records listed with file:line), "
    "duplicates removed, split train/eval by content hash.",
)
def behaviour_dataset(context: dg.AssetExecutionContext):
    settings = load_settings()
    labels = LabelSpace.from_file(settings.behaviour_dir / "labels.json")
    data = load_behaviour_data(settings.behaviour_dir, labels)
    split = split_records(data.records)
    for problem in data.problems:
        context.log.warning(f"invalid behaviour record: {problem}")
    counts: dict[str, dict[str, int]] = {"category": {}, "escalation": {}, "sentiment": {}}
    for record in data.records:
        answer = record.answer
        for key, value in (("category", answer["category"]), ("escalation", answer["escalation"]["level"]),
                           ("sentiment", answer["sentiment"])):
            counts[key][value] = counts[key].get(value, 0) + 1
    problems_md = "\n".join(f"| `{p.file}:{p.line}` | {p.reason} |" for p in data.problems)
    return dg.Output(
        {"dataset": data, "split": split, "labels": labels},
        data_version=dg.DataVersion(data.version[:16]),
        metadata={
            "records": len(data.records),
            "train": len(split.train),
            "eval": len(split.eval),
            "invalid_records": len(data.problems),
            "duplicates_removed": len(data.duplicates),
            "dataset_version": data.version[:16],
            "label_counts": dg.MetadataValue.json(counts),
            "problems": dg.MetadataValue.md("| where | reason |\n|---|---|\n" + problems_md if problems_md else "none"),
        },
    )


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch", "peft"},
    tags=RUNS_WHEN,
    automation_condition=ON_PARENT_CHANGE,
    description="A QLoRA adapter trained on the train split (checkpointed, resumable), evaluated against "
    "the base model on the eval split, and stored as a new registry version (not yet promoted).",
)
def support_adapter(context: dg.AssetExecutionContext, config: AdapterTrainingConfig, behaviour_dataset) -> dict:
    settings = load_settings()
    knobs = config.model_dump(exclude={"eval_limit", "retrain_unchanged"})
    knobs["base_model"] = knobs["base_model"] or settings.base_model
    knobs["target_modules"] = tuple(knobs["target_modules"])
    train_config = TrainConfig(**knobs)

    def log_step(step) -> None:
        if step.step == 1 or step.step % 5 == 0 or step.step == step.total_steps:
            context.log.info(f"step {step.step}/{step.total_steps} loss {step.loss:.4f} ({step.seconds:.1f}s)")

    existing = None if config.retrain_unchanged else adapter_trained_on(settings, behaviour_dataset["dataset"].version)
    if existing is not None:  # e.g. the shipped release adapter on the shipped data: nothing to train
        metrics = existing.lineage.get("metrics", {})
        context.add_output_metadata({"version_id": existing.version_id, "reused": True,
                                     "dataset_version": behaviour_dataset["dataset"].version[:16]})
        context.log.info(f"adapter {existing.version_id} was trained on exactly this data: not retraining")
        champion = (metrics.get("champion") or {}).get("metrics")
        return {"version_id": existing.version_id, "base": metrics["base"], "adapter": metrics["adapter"],
                "champion": champion, "champion_version": (metrics.get("champion") or {}).get("version_id")}
    # The dataset asset's output (validated records + labels) is what is trained on: loaded once per run.
    candidate = train_candidate(settings, train_config, eval_limit=config.eval_limit, on_step=log_step,
                                data=behaviour_dataset["dataset"], labels=behaviour_dataset["labels"])
    result = candidate.train
    context.add_output_metadata({
        "version_id": candidate.version.version_id,
        "dataset_version": behaviour_dataset["dataset"].version[:16],
        "eval_records": candidate.eval_records,
        "train_steps": result.total_steps,
        "resumed_from_step": result.resumed_from_step,
        "final_loss": round(result.loss_curve[-1][1], 4) if result.loss_curve else None,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "train_wall_s": round(result.wall_s, 1),
        "peak_rss_mb": round(result.peak_rss_mb),
        "base_vs_adapter": dg.MetadataValue.md(comparison_table(candidate.base_metrics, candidate.adapter_metrics,
                                                                candidate.champion_metrics)),
        "champion_version": candidate.champion_version or "none promoted",
        "decision": describe_decision(candidate.calibration),
    })
    return {"version_id": candidate.version.version_id, "base": candidate.base_metrics,
            "adapter": candidate.adapter_metrics, "champion": candidate.champion_metrics,
            "champion_version": candidate.champion_version}


@dg.asset(
    group_name=GROUP,
    kinds={"peft"},
    tags=RUNS_WHEN,
    automation_condition=ON_PARENT_CHANGE_GATED,
    description="Points the registry's current.json at the new adapter (atomic). Runs only when the "
    "blocking check adapter_beats_base passed; serving picks it up without a restart.",
)
def promoted_adapter(support_adapter: dict) -> dg.MaterializeResult:
    # The blocking check already gates this in the same run; checked again here so that no way of
    # launching this asset alone (a UI click, a later automation tick) can promote a refused adapter.
    passed, reasons = promotion_gate(support_adapter["base"], support_adapter["adapter"], support_adapter.get("champion"))
    if not passed:
        raise dg.Failure(f"adapter {support_adapter['version_id']} did not pass the gate: " + "; ".join(reasons))
    version = AdapterRegistry(load_settings().adapters_dir).promote(support_adapter["version_id"])
    return dg.MaterializeResult(metadata={"version_id": version.version_id, "path": str(version.path)})
