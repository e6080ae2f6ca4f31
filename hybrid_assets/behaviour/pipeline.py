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
from hybrid_assets.behaviour.calibration import calibrate, decision_rule_of
from hybrid_assets.behaviour.evaluate import evaluate_model, load_model
from hybrid_assets.behaviour.evaluate import promote_if_passing as gate_and_promote
from hybrid_assets.behaviour.registry import AdapterRegistry, AdapterVersion, build_lineage, read_lineage, write_lineage
from hybrid_assets.behaviour.release import install_release
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
    champion_metrics: dict | None = None  # the adapter in service, on the same records (None: none promoted)
    champion_version: str | None = None
    calibration: dict | None = None  # the lineage's decision_calibration (None: skipped)


def eval_subset(records: Sequence[BehaviourRecord], limit: int) -> list[BehaviourRecord]:
    """The first ``limit`` eval records by id hash: deterministic and independent of file order."""
    ordered = sorted(records, key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())
    return ordered[:limit] if limit else ordered


def _records_key(records: Sequence[BehaviourRecord]) -> list[str]:
    return [r.target + r.ticket for r in records]


def _eval_cache(settings: Settings, kind: str, model_key: str, records: Sequence[BehaviourRecord]) -> Path:
    # Everything that changes the figures: the scorer's version ("decisions-v3": the decision field,
    # labels read from cut answers too), the decoding (budget, grammar, n-gram guard) and the records.
    key = hashlib.sha256(json.dumps([model_key, EVAL_MAX_NEW_TOKENS, "constrained", "decisions-v3",
                                     settings.answer_no_repeat_ngram, _records_key(records)])
                         .encode()).hexdigest()[:16]
    return settings.adapters_dir / kind / f"{key}.json"


def _cached_metrics(cache: Path, compute: Callable[[], dict]) -> dict:
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    metrics = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    tmp.replace(cache)
    return metrics


def evaluate_base(settings: Settings, base_model: str, records: Sequence[BehaviourRecord], labels: LabelSpace) -> dict:
    """Base-model metrics, cached by (base model, eval records): the base never changes between
    adapter trainings, so re-training pays only for the adapter's evaluation."""
    return _cached_metrics(
        _eval_cache(settings, "base_eval", base_model, records),
        lambda: evaluate_model(base_model, None, records, labels, EVAL_MAX_NEW_TOKENS,
                               settings=settings).metrics.to_dict())


def evaluate_champion(settings: Settings, champion: AdapterVersion, records: Sequence[BehaviourRecord],
                      labels: LabelSpace) -> dict:
    """The adapter in service on the candidate's eval records, decoded as served (its own threshold),
    cached by (version, records): versions are immutable."""
    base_model = champion.lineage.get("base_model") or settings.base_model
    rule = decision_rule_of(champion.path, champion.lineage, champion.version_id)
    # keyed by the calibration too: ``recalibrate`` changes how a version decides, not its weights
    calibration = json.dumps((champion.lineage.get("metrics") or {}).get("decision_calibration"), sort_keys=True)
    key = f"{champion.version_id}-{hashlib.sha256(calibration.encode()).hexdigest()[:8]}"
    return _cached_metrics(
        _eval_cache(settings, "champion_eval", key, records),
        lambda: evaluate_model(base_model, champion.path, records, labels, EVAL_MAX_NEW_TOKENS, settings=settings,
                               rule=rule).metrics.to_dict())


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
    """Train on the behaviour data's train split, choose the decision threshold on its dev split,
    evaluate base, candidate and the adapter in service on its eval split, and commit the candidate
    as a new (unpromoted) registry version with its lineage. ``data`` + ``labels``: records already
    loaded and validated (the Dagster dataset asset's output), so nothing is reloaded."""
    data_dir = Path(data_dir or settings.behaviour_dir)
    labels = labels or LabelSpace.from_file(data_dir / "labels.json")
    data = data if data is not None else load_behaviour_data(data_dir, labels)
    base_model = config.base_model or settings.base_model
    registry = AdapterRegistry(settings.adapters_dir)
    champion = registry.current() or install_release(settings)  # the shipped adapter is in service by default
    # Deterministic staging dir per (data, config): an interrupted run resumes where it stopped.
    staging = registry.staging_dir(f"run-{config.fingerprint(data.version, base_model)}")
    result = train_adapter(config, data_dir, staging, resume=True, labels=labels, settings=settings, on_step=on_step,
                           data=data)

    split = split_records(data.records, config.eval_fraction, config.dev_fraction)
    records = eval_subset(split.eval, eval_limit)
    base_metrics = evaluate_base(settings, base_model, records, labels)
    loaded = load_model(base_model, staging, settings)
    calibrated = calibrate(*loaded, split.dev, labels, settings.answer_no_repeat_ngram,
                           train_records=split.train if config.decision_probes else (),
                           embedding_model=settings.embedding_model)
    calibration = calibrated.entry
    calibrated.save(staging)  # the probes it uses travel with the adapter (and a resumed run's old ones go)
    adapter_metrics = evaluate_model(base_model, staging, records, labels, EVAL_MAX_NEW_TOKENS, settings=settings,
                                     rule=calibrated.rule, loaded=loaded).metrics.to_dict()
    del loaded
    champion_metrics = evaluate_champion(settings, champion, records, labels) if champion else None
    metrics = {"base": base_metrics, "adapter": adapter_metrics, "eval_records": len(records),
               "decision_calibration": calibration,
               "champion": {"version_id": champion.version_id, "metrics": champion_metrics} if champion else None,
               "train": {k: v for k, v in result.to_dict().items() if k != "output_dir"}}
    version = registry.commit(staging, build_lineage(base_model, data.version, result.config, metrics))
    return TrainedCandidate(version, result, base_metrics, adapter_metrics, len(records), champion_metrics,
                            champion.version_id if champion else None, calibration)


def lineage_split(settings: Settings, adapter_dir: Path, data_dir: Path | None = None):
    """(lineage, labels, split) of a trained adapter: the behaviour data split as its training split it
    (fractions from its lineage), so its dev split is the one held out from it. Refuses an adapter whose
    lineage names other behaviour data (its dev split would not be held out)."""
    lineage = read_lineage(Path(adapter_dir))
    if not lineage or "metrics" not in lineage:
        raise ValueError(f"{adapter_dir}: no lineage.json with metrics: nothing says which split is held out")
    data_dir = Path(data_dir or settings.behaviour_dir)
    labels = LabelSpace.from_file(data_dir / "labels.json")
    data = load_behaviour_data(data_dir, labels)
    if lineage.get("dataset_version") != data.version:
        raise ValueError(f"{adapter_dir} was trained on behaviour data {str(lineage.get('dataset_version'))[:8]}, "
                         f"{data_dir} is {data.version[:8]}: its dev split is not held out from that data")
    config = (lineage["metrics"].get("train") or {}).get("config") or {}
    defaults = TrainConfig()  # a lineage from before these fields were recorded used the defaults
    split = split_records(data.records, config.get("eval_fraction", defaults.eval_fraction),
                          config.get("dev_fraction", defaults.dev_fraction))
    return lineage, labels, split


def recalibrate(settings: Settings, adapter_dir: Path, *, eval_limit: int = DEFAULT_EVAL_LIMIT,
                data_dir: Path | None = None) -> dict:
    """Choose a trained adapter's decision calibration again (threshold and retrieval evidence, on the
    dev split of the data and split its lineage names), measure it on the gate's eval records, and
    write both into the adapter folder's lineage (``metrics.decision_calibration``; the earlier one
    kept under ``metrics.decision_calibration_before``, the new figures under
    ``metrics.adapter_recalibrated``). Weights, data version and training metrics are untouched.
    Refuses an adapter whose lineage names other behaviour data (its dev split would not be held out)."""
    adapter_dir = Path(adapter_dir)
    lineage, labels, split = lineage_split(settings, adapter_dir, data_dir)
    base_model = lineage.get("base_model") or settings.base_model
    loaded = load_model(base_model, adapter_dir, settings)
    calibrated = calibrate(*loaded, split.dev, labels, settings.answer_no_repeat_ngram,
                           embedding_model=settings.embedding_model)
    records = eval_subset(split.eval, eval_limit)
    measured = evaluate_model(base_model, adapter_dir, records, labels, EVAL_MAX_NEW_TOKENS, settings=settings,
                              rule=calibrated.rule, loaded=loaded).metrics.to_dict()
    metrics = lineage["metrics"]
    metrics["decision_calibration_before"] = metrics.get("decision_calibration")
    metrics["decision_calibration"] = calibrated.entry
    metrics["adapter_recalibrated"] = {**measured, "eval_records": len(records)}
    calibrated.save(adapter_dir)
    write_lineage(adapter_dir, lineage)
    return {"calibration": calibrated.entry, "metrics": measured, "before": metrics["decision_calibration_before"],
            "adapter_metrics": metrics.get("adapter")}


def promote_if_passing(settings: Settings, candidate: TrainedCandidate) -> tuple[bool, list[str]]:
    return gate_and_promote(AdapterRegistry(settings.adapters_dir), candidate.version.version_id,
                            candidate.base_metrics, candidate.adapter_metrics, candidate.champion_metrics)


COMPARED_METRICS = ("json_validity", "category_accuracy", "sentiment_accuracy", "escalation_accuracy",
                    "decision_accuracy")


def comparison_table(base: dict, adapter: dict, champion: dict | None = None) -> str:
    """Markdown table of base vs candidate (vs the adapter in service) on the eval subset."""
    if champion is None:
        rows = [f"| {name} | {base[name]:.3f} | {adapter[name]:.3f} |" for name in COMPARED_METRICS]
        return "| metric | base | adapter |\n|---|---|---|\n" + "\n".join(rows)
    rows = [f"| {name} | {base[name]:.3f} | {champion[name]:.3f} | {adapter[name]:.3f} |" for name in COMPARED_METRICS]
    return "| metric | base | in service | candidate |\n|---|---|---|---|\n" + "\n".join(rows)
