"""The evaluation that proves (or disproves) the hybrid: one held-out set through four configurations.

    base           base model, no retrieval
    rag_only       base model + retrieval
    finetune_only  adapter, no retrieval
    hybrid         adapter + retrieval          (what `hybrid-assets serve` runs)

All four run through the serving engine (same prompt builder, same schema-constrained greedy decoding,
same grounding guards), so the only differences are the adapter and the context. Metrics, per config:

- json_validity, sentiment / category / escalation accuracy: the shared decision scorer
  (``hybrid_assets/scoring.py``, as the promotion gate): validity = completed within the token budget;
  a label counts what the model decided (of a cut answer: what its prefix had decided), exact match
  with the gold labels where the set has them;
- decision_accuracy: the answer's decision (answer / clarify / not_answerable) equals the gold one;
- answer_f1: SQuAD-style token F1 of the reply against the gold answer, on gold-answerable items
  (0 where the system did not answer);
- citation precision / recall: the cited chunks' documents vs the gold documents (macro over items;
  precision over items that cite anything, recall over answerable items with gold documents);
- abstention precision / recall / F1: positive class = decision "not_answerable", against the gold
  decision (defined when the set has such items);
- clarification precision / recall / F1: positive class = decision "clarify" (defined when the set
  has items whose gold decision is "clarify");
- repeated_reply_rate: share of replies that repeat a run of 8 words (a loop), and truncated_rate:
  share of answers the token budget cut (both lower is better; they are in the "where beaten" list);
- retrieval recall@k: share of answerable items with a gold document among the retrieved chunks;
- overall: the mean of the metrics above that the set defines (our single ranking figure).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from hybrid_assets.evaluation.datasets import EvalItem
from hybrid_assets.evaluation.metrics import decision_class_scores, mean, repeats_a_run, token_f1
from hybrid_assets.schema import ANSWER, CLARIFY, NOT_ANSWERABLE
from hybrid_assets.scoring import Scored, decision_scores
from hybrid_assets.serving.retrieval import Retrieved
from hybrid_assets.settings import repo_relative


@dataclass(frozen=True)
class Configuration:
    name: str
    adapter: bool
    retrieval: bool


CONFIGURATIONS = (
    Configuration("base", adapter=False, retrieval=False),
    Configuration("rag_only", adapter=False, retrieval=True),
    Configuration("finetune_only", adapter=True, retrieval=False),
    Configuration("hybrid", adapter=True, retrieval=True),
)


@dataclass(frozen=True)
class EvalCase:
    """An item plus, when the set has them, the gold labels of the answer schema."""
    item: EvalItem
    gold_labels: dict | None = None  # {"sentiment", "category", "escalation"} (escalation = level)
    as_of: date | None = None  # the day the ticket was written (the escalation policy counts renewals from it)


@dataclass
class ConfigReport:
    name: str
    n: int
    metrics: dict
    seconds: float
    answers: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# -- scoring ------------------------------------------------------------------------------------
def score(cases: Sequence[EvalCase], results: Sequence, retrieval: bool) -> dict:
    """Metrics for one configuration (``results`` are serving ``AnswerResult``s, in case order)."""
    decisions, f1s, precisions, recalls, retrieved_gold = [], [], [], [], []
    gold_decisions, predicted_decisions, repeated = [], [], []
    for case, result in zip(cases, results, strict=True):
        answer, item = result.answer, case.item
        gold = {"decision": item.decision}
        if case.gold_labels:
            gold.update({"sentiment": case.gold_labels["sentiment"], "category": case.gold_labels["category"],
                         "escalation_level": case.gold_labels["escalation"]})
        elif item.category is not None:
            gold["category"] = item.category
        decisions.append(Scored(gold, result.decided, result.complete))
        gold_decisions.append(item.decision)
        predicted_decisions.append(answer["decision"])
        repeated.append(repeats_a_run(answer["reply"]))
        gold_docs = set(item.gold_passage_ids)
        cited_docs = {source["doc_id"] for source in result.sources}
        if item.answerable and item.gold_answer:
            f1s.append(token_f1(item.gold_answer, answer["reply"]) if answer["decision"] == ANSWER else 0.0)
        if cited_docs and gold_docs:
            precisions.append(len(cited_docs & gold_docs) / len(cited_docs))
        elif cited_docs and not item.answerable:
            precisions.append(0.0)  # cited something for a question the documents do not answer
        if item.answerable and gold_docs:
            recalls.append(len(cited_docs & gold_docs) / len(gold_docs))
            if retrieval:
                retrieved_gold.append(any(chunk["doc_id"] in gold_docs for chunk in result.retrieved))
    abstention = decision_class_scores(gold_decisions, predicted_decisions, NOT_ANSWERABLE) \
        if NOT_ANSWERABLE in gold_decisions else None
    clarification = decision_class_scores(gold_decisions, predicted_decisions, CLARIFY) \
        if CLARIFY in gold_decisions else None
    decided = decision_scores(decisions)
    metrics = {
        "json_validity": decided["json_validity"],
        "sentiment_accuracy": decided["sentiment_accuracy"],
        "category_accuracy": decided["category_accuracy"],
        "escalation_accuracy": decided["escalation_accuracy"],
        "decision_accuracy": decided["decision_accuracy"],
        "answer_f1": mean(f1s),
        "citation_precision": mean(precisions),
        "citation_recall": mean(recalls),
        "abstention_precision": abstention["precision"] if abstention else None,
        "abstention_recall": abstention["recall"] if abstention else None,
        "abstention_f1": abstention["f1"] if abstention else None,
        "clarification_precision": clarification["precision"] if clarification else None,
        "clarification_recall": clarification["recall"] if clarification else None,
        "clarification_f1": clarification["f1"] if clarification else None,
        "retrieval_recall_at_k": mean(retrieved_gold) if retrieval else None,
        "repeated_reply_rate": mean(repeated),
        "truncated_rate": mean(not result.complete for result in results),
    }
    metrics["overall"] = overall(metrics)
    return metrics


# What "overall" averages: every one of these that the set defines.
OVERALL_METRICS = ("json_validity", "sentiment_accuracy", "category_accuracy", "escalation_accuracy",
                   "decision_accuracy", "answer_f1", "citation_precision", "citation_recall", "abstention_f1",
                   "clarification_f1")


def overall(metrics: dict) -> float | None:
    values = []
    for name in OVERALL_METRICS:
        value = metrics.get(name)
        if value is None and name == "citation_precision" and metrics.get("citation_recall") is not None:
            value = 0.0  # cited nothing although the set has gold documents: no free pass
        if value is not None:
            values.append(value)
    return mean(values)


# -- running ------------------------------------------------------------------------------------
Retriever = Callable[[EvalItem], object]  # EvalItem -> serving.retrieval.Retrieved


def run_configuration(engine, client, cases: Sequence[EvalCase], config: Configuration,
                      retriever: Retriever | None, adapter_dir: Path | None) -> ConfigReport:
    """Answer every case with one configuration. ``retriever=None`` uses the live knowledge search."""
    engine.use_adapter = config.adapter
    engine.adapter_dir = Path(adapter_dir) if (config.adapter and adapter_dir) else None
    requests = [{"ticket": c.item.question, "customer_id": c.item.customer_id, "history": list(c.item.history),
                 "as_of": c.as_of}
                for c in cases]
    if not config.retrieval:
        contexts = [Retrieved([], {}, 0.0) for _ in cases]
    elif retriever is not None:
        contexts = [retriever(c.item) for c in cases]
    else:
        contexts = None  # the engine's own tenant-scoped retrieval
    started = time.perf_counter()
    results = engine.answer_many(client, requests, retrieval=config.retrieval, contexts=contexts)
    seconds = time.perf_counter() - started
    metrics = score(cases, results, config.retrieval)
    metrics["mean_latency_s"] = seconds / len(cases)
    answers = [{"id": c.item.id, "answer": r.answer, "cited_docs": [s["doc_id"] for s in r.sources],
                "retrieved_docs": [x["doc_id"] for x in r.retrieved], "guards": r.guards,
                "generated": r.text}  # what the model wrote before the guards: why a guard fired
               for c, r in zip(cases, results)]
    return ConfigReport(config.name, len(cases), metrics, seconds, answers)


def compare(engine, client, cases: Sequence[EvalCase], adapter_dir: Path | None, *,
            retriever: Retriever | None = None, configurations: Sequence[Configuration] = CONFIGURATIONS,
            progress: Callable[[str], None] | None = None) -> dict:
    """Run the configurations and return the report (JSON-serialisable)."""
    if not cases:
        raise ValueError("no evaluation cases")
    if any(c.adapter for c in configurations) and adapter_dir is None:
        raise ValueError("an adapter configuration needs an adapter (none is promoted; train one first)")
    reports = []
    # Each configuration sets the engine's adapter mode; a shared (serving) engine gets its own back.
    serving_mode = (engine.use_adapter, engine.adapter_dir)
    try:
        for config in configurations:
            report = run_configuration(engine, client, cases, config, retriever, adapter_dir)
            reports.append(report)
            if progress:
                progress(f"{config.name}: overall {report.metrics['overall']:.3f} in {report.seconds:.0f}s")
    finally:
        engine.use_adapter, engine.adapter_dir = serving_mode
    best = max(reports, key=lambda r: r.metrics["overall"] or 0.0).name
    return {
        "n": len(cases),
        "adapter": repo_relative(adapter_dir) if adapter_dir else None,
        "k": engine.k,
        "configurations": {r.name: r.to_dict() for r in reports},
        "best_overall": best,
        "metric_definitions": (__doc__ or "").split("Metrics, per config:")[-1].strip(),
    }


# -- presenting ---------------------------------------------------------------------------------
TABLE_METRICS = ("overall", "json_validity", "sentiment_accuracy", "category_accuracy", "escalation_accuracy",
                 "decision_accuracy", "answer_f1", "citation_precision", "citation_recall", "abstention_precision",
                 "abstention_recall", "abstention_f1", "clarification_precision", "clarification_recall",
                 "clarification_f1", "retrieval_recall_at_k", "repeated_reply_rate", "truncated_rate",
                 "mean_latency_s")
# Lower is better for these; the table bolds the lowest and "where beaten" compares downwards.
LOWER_IS_BETTER = {"repeated_reply_rate", "truncated_rate"}
# One side of a trade-off whose balance is reported as F1 (abstaining on everything maximises recall,
# never abstaining maximises nothing): shown in the table, left out of "where beaten".
TRADE_OFF_HALVES = {"abstention_precision", "abstention_recall", "clarification_precision", "clarification_recall"}


def markdown_table(report: dict) -> str:
    names = list(report["configurations"])
    header = "| metric | " + " | ".join(names) + " |\n|---|" + "---|" * len(names)
    rows = []
    for metric in TABLE_METRICS:
        values = [report["configurations"][n]["metrics"].get(metric) for n in names]
        if all(v is None for v in values):
            continue
        present = [v for v in values if v is not None]
        best = None if metric == "mean_latency_s" or not present else \
            (min(present) if metric in LOWER_IS_BETTER else max(present))
        cells = ["—" if v is None else (f"**{v:.3f}**" if v == best and metric != "mean_latency_s" else f"{v:.3f}")
                 for v in values]
        rows.append(f"| {metric} | " + " | ".join(cells) + " |")
    return header + "\n" + "\n".join(rows)


def where_beaten(report: dict, name: str = "hybrid") -> list[str]:
    """One line per quality metric on which another configuration scores higher than ``name``
    (the honest footnote to "best overall"), e.g. ``escalation_accuracy: hybrid 0.417 < base 0.458``."""
    configs = report["configurations"]
    lines = []
    for metric in TABLE_METRICS:
        mine = configs[name]["metrics"].get(metric)
        if metric == "mean_latency_s" or metric in TRADE_OFF_HALVES or mine is None:
            continue
        others = {n: c["metrics"].get(metric) for n, c in configs.items() if n != name}
        lower = metric in LOWER_IS_BETTER
        better = {n: v for n, v in others.items() if v is not None and (v < mine if lower else v > mine)}
        if better:
            top = (min if lower else max)(better, key=better.get)
            lines.append(f"{metric}: {name} {mine:.3f} {'>' if lower else '<'} {top} {better[top]:.3f}")
    return lines


def bar_chart(report: dict, path: Path, title: str) -> Path:
    """Grouped bars of the quality metrics per configuration (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["configurations"])
    metrics = [m for m in TABLE_METRICS if m != "mean_latency_s" and m not in LOWER_IS_BETTER
               and any(report["configurations"][n]["metrics"].get(m) is not None for n in names)]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(8, len(metrics) * 1.1), 4.2), dpi=110)
    for i, name in enumerate(names):
        values = [report["configurations"][name]["metrics"].get(m) or 0.0 for m in metrics]
        ax.bar([x + i * width for x in range(len(metrics))], values, width, label=name)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(metrics))])
    ax.set_xticklabels([m.replace("_", "\n") for m in metrics], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncols=len(names))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(report: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path
