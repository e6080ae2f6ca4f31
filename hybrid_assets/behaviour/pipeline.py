"""Train -> evaluate against the base -> commit to the registry -> (gate) promote: one function that
the Dagster assets and ``hybrid-assets train`` share, so both follow the same rules.

Nothing here touches ``current.json`` except ``promote_if_passing``: a failed or interrupted run
leaves the promoted adapter as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hybrid_assets.behaviour.dataset import BehaviourDataset, BehaviourRecord, load_behaviour_data, split_records
from hybrid_assets.behaviour.evaluate import evaluate_model
from hybrid_assets.behaviour.evaluate import promote_if_passing as gate_and_promote
from hybrid_assets.behaviour.registry import AdapterRegistry, AdapterVersion, build_lineage
from hybrid_assets.behaviour.train import StepLog, TrainConfig, TrainResult, train_adapter
from hybrid_assets.schema import LabelSpace
from hybrid_assets.settings import Settings

log = logging.getLogger(__name__)

# Evaluating on the whole eval split costs minutes per model on a 2-core CPU; the default evaluates
# a fixed, content-hash-chosen subset (the same one every run, so figures stay comparable).
DEFAULT_EVAL_LIMIT = 32
EVAL_MAX_NEW_TOKENS = 320  # a full answer is ~150-280 tokens; a model that rambles past this is invalid


@dataclass(frozen=True)
class TrainedCandidate:
    version: AdapterVersion
    train: TrainResult
    base_metrics: dict
    adapter_metrics: dict
    eval_records: int


def eval_subset(records: Sequence[BehaviourRecord], limit: int) -> list[BehaviourRecord]:
    """The first ``limit`` eval records by id hash: deterministic and independent of file order."""
    ordered = sorted(records, key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())
    return ordered[:limit] if limit else ordered


def _base_eval_cache(settings: Settings, base_model: str, records: Sequence[BehaviourRecord]) -> Path:
    # Everything that changes the base's figures: the scorer's version ("decisions-v2": labels read
    # from cut answers too), the decoding (budget, grammar, n-gram guard) and the records.
    key = hashlib.sha256(json.dumps([base_model, EVAL_MAX_NEW_TOKENS, "constrained", "decisions-v2",
                                     settings.answer_no_repeat_ngram, [r.target + r.ticket for r in records]])
                         .encode()).hexdigest()[:16]
    return settings.adapters_dir / "base_eval" / f"{key}.json"


def evaluate_base(settings: Settings, base_model: str, records: Sequence[BehaviourRecord], labels: LabelSpace) -> dict:
    """Base-model metrics, cached by (base model, eval records): the base never changes between
    adapter trainings, so re-training pays only for the adapter's evaluation."""
    cache = _base_eval_cache(settings, base_model, records)
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    metrics = evaluate_model(base_model, None, records, labels, EVAL_MAX_NEW_TOKENS, settings=settings).metrics.to_dict()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    tmp.replace(cache)
    return metrics


def train_candidate(
    settings: Settings,
    config: TrainConfig,
    *,
    eval_limit: int = DEFAULT_EVAL_LIMIT,
    on_step: Callable[[StepLog], None] | None = None,
    data_dir: Path | None = None,
    data: BehaviourDataset | None = None,
    labels: LabelSpace | None = None,
) -> TrainedCandidate:
    """Train on the behaviour data's train split, evaluate base and adapter on its eval split, and
    commit the adapter as a new (unpromoted) registry version with its lineage. ``data`` + ``labels``:
    records already loaded and validated (the Dagster dataset asset's output), so nothing is reloaded."""
    data_dir = Path(data_dir or settings.behaviour_dir)
    labels = labels or LabelSpace.from_file(data_dir / "labels.json")
    data = data if data is not None else load_behaviour_data(data_dir, labels)
    base_model = config.base_model or settings.base_model
    registry = AdapterRegistry(settings.adapters_dir)
    # Deterministic staging dir per (data, config): an interrupted run resumes where it stopped.
    staging = registry.staging_dir(f"run-{config.fingerprint(data.version, base_model)}")
    result = train_adapter(config, data_dir, staging, resume=True, labels=labels, settings=settings, on_step=on_step,
                           data=data)

    records = eval_subset(split_records(data.records, config.eval_fraction).eval, eval_limit)
    base_metrics = evaluate_base(settings, base_model, records, labels)
    adapter_metrics = evaluate_model(base_model, staging, records, labels, EVAL_MAX_NEW_TOKENS,
                                     settings=settings).metrics.to_dict()
    metrics = {"base": base_metrics, "adapter": adapter_metrics, "eval_records": len(records),
               "train": {k: v for k, v in result.to_dict().items() if k != "output_dir"}}
    version = registry.commit(staging, build_lineage(base_model, data.version, result.config, metrics))
    return TrainedCandidate(version, result, base_metrics, adapter_metrics, len(records))


def promote_if_passing(settings: Settings, candidate: TrainedCandidate) -> tuple[bool, list[str]]:
    return gate_and_promote(AdapterRegistry(settings.adapters_dir), candidate.version.version_id,
                            candidate.base_metrics, candidate.adapter_metrics)


COMPARED_METRICS = ("json_validity", "category_accuracy", "sentiment_accuracy", "escalation_accuracy",
                    "answerable_accuracy")


def comparison_table(base: dict, adapter: dict) -> str:
    """Markdown table of base vs adapter on the eval subset."""
    rows = [f"| {name} | {base[name]:.3f} | {adapter[name]:.3f} |" for name in COMPARED_METRICS]
    return "| metric | base | adapter |\n|---|---|---|\n" + "\n".join(rows)
