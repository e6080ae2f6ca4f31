"""An adapter's decision rule checked as served: on its dev split's tickets, through live retrieval.

Calibration (``behaviour/calibration.py``, ``behaviour/evidence.py``) runs in the behaviour path, on the
dev records' own stored contexts: the answerable ones hold their gold passage, the others a near miss.
Served, the same tickets get what the search returns, and the retrieval evidence's one input - the best
passage's similarity - does not behave the same there. Measured on the release adapter's 32 dev tickets
(2026-12-07): as served, the evidence decided worse than the tokens' threshold it was chosen over
(dev macro F1 0.345 vs 0.610; 14 vs 21 of 32 right).

So before an adapter is trusted with the evidence, its rule is checked where it is used: the dev tickets
are answered once by the served engine with no rule (greedy), which records at each row the tokens'
distribution over the decision and the best passage's similarity; every candidate rule - greedy, the
lineage's threshold, the threshold with the evidence - is then replayed on those records (the decision
is taken before anything that depends on it is written, so the replay is exact) and scored by dev macro
F1, the calibration's own score. The best one is written into the lineage (``decision_calibration.served_check``;
the evidence's ``used`` and the threshold follow it), so serving decodes with the rule that decides the
dev tickets best as served, when asked (``apply``). The reported eval split is never read.

Why applying is a separate step: the dev split holds only on-topic tickets (answerable, or a near miss).
Off topic - the demo's "ship by drone to Antarctica?" - the best passage's similarity is what declines,
so a rule chosen without such tickets can lose it: on the release adapter the check chose the threshold,
and the threshold alone answered the drone ticket with an invented reply that the evidence declines. The
shipped lineage records the check (``applied: false``) and keeps the evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from hybrid_assets.behaviour.calibration import macro_f1, threshold_of
from hybrid_assets.behaviour.dataset import ticket_records
from hybrid_assets.behaviour.pipeline import lineage_split
from hybrid_assets.behaviour.registry import read_lineage, write_lineage
from hybrid_assets.models.decision import EVIDENCE_THRESHOLD, DecisionRule, RetrievalEvidence, choose
from hybrid_assets.serving.engine import AnswerEngine

GREEDY, THRESHOLD, EVIDENCE = "greedy", "threshold", "threshold+evidence"


def replay(rows: list[dict], threshold: float | None, evidence: RetrievalEvidence | None) -> dict[str, list[str]]:
    """Each candidate rule's decisions on rows of ``{"tokens": distribution, "similarity": float | None}``."""
    decisions = {GREEDY: [choose(row["tokens"], None) for row in rows]}
    if threshold is not None:
        decisions[THRESHOLD] = [choose(row["tokens"], threshold) for row in rows]
    if evidence is not None:
        decisions[EVIDENCE] = [choose(evidence.reweigh(row["tokens"], row["similarity"]), EVIDENCE_THRESHOLD)
                               if row["similarity"] is not None else choose(row["tokens"], threshold)
                               for row in rows]
    return decisions


def check_decision_as_served(settings, client, adapter_dir: Path, *, write: bool = False, apply: bool = False,
                             as_of=None, limit: int | None = None,
                             progress: Callable[[str], None] | None = None) -> dict:
    """Answer the adapter's dev tickets as served (greedy), replay the candidate rules, (``write``) record
    the figures in its lineage and (``apply``) make the best rule the one served. Returns the figures.
    ``as_of``: the tickets' date (the policy reads it); ``limit``: the first n dev tickets only (tests)."""
    adapter_dir = Path(adapter_dir)
    lineage, labels, split = lineage_split(settings, adapter_dir)
    records = ticket_records(split.dev)[:limit]
    if not records:
        raise ValueError(f"{adapter_dir}: its dev split has no tickets to check the decision on")
    calibration = lineage["metrics"].get("decision_calibration") or {}
    if calibration.get("method") == "probe":
        raise ValueError(f"{adapter_dir}: decides with a probe; the served check compares token rules only")
    threshold = threshold_of(lineage, adapter_dir.name)
    raw_evidence = calibration.get("evidence") or {}
    evidence = RetrievalEvidence.from_dict(raw_evidence) if {"w_similarity", "w_answer", "bias"} <= raw_evidence.keys() \
        else None
    engine = AnswerEngine(settings, labels, adapter_dir=adapter_dir, decision_rule=DecisionRule())
    if progress:
        progress(f"answering {len(records)} dev tickets as served (greedy, the tokens' distribution recorded)")
    results = engine.answer_many(client, [{"ticket": r.ticket, "customer_id": r.customer_id, "as_of": as_of,
                                           "history": [{"role": role, "content": content} for role, content in r.history]}
                                          for r in records])
    if not any(result.retrieved for result in results):
        raise ValueError("no dev ticket retrieved anything: ingest the knowledge first (hybrid-assets ingest), "
                         "the check is of the decision as served")
    rows = [{"tokens": result.decision_probabilities, "similarity": result.top_similarity}
            for result in results if result.decision_probabilities is not None]
    gold = [r.answer["decision"] for r, result in zip(records, results) if result.decision_probabilities is not None]
    scores = {name: round(macro_f1(gold, decided), 4) for name, decided in replay(rows, threshold, evidence).items()}
    order = [EVIDENCE, THRESHOLD, GREEDY]  # on a tie, the rule already in use (the lineage's) stays
    in_use = EVIDENCE if raw_evidence.get("used") else THRESHOLD if threshold is not None else GREEDY
    chosen = max(scores, key=lambda name: (scores[name], name == in_use, -order.index(name)))
    figures = {"dev_records": len(rows), "dev_macro_f1_as_served": scores, "in_use_before": in_use, "chosen": chosen,
               "applied": apply, "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if write or apply:
        lineage = read_lineage(adapter_dir)
        entry = lineage["metrics"].setdefault("decision_calibration", {})
        entry["served_check"] = figures
        if apply:
            if entry.get("evidence"):
                entry["evidence"]["used"] = chosen == EVIDENCE
            if chosen == GREEDY and entry.get("answer_threshold") is not None:
                entry["answer_threshold_unused"] = entry.pop("answer_threshold")
        write_lineage(adapter_dir, lineage)
    return figures
