"""The retrieval evidence of behaviour records: each record's best context passage's cosine similarity
to its ticket, measured with the embedding model serving retrieves with (``Settings.embedding_model``),
so the decision's retrieval evidence (``models/decision.RetrievalEvidence``) is fitted and gated on the
same signal serving reads from its search hits (``serving/retrieval.Retrieved.top_similarity``).

``fit_evidence`` chooses nothing on the records it reports: it is fitted on the dev split, its figure is
cross-validated inside that split (5 folds x 5 shuffles), and it is used only when that figure beats the
tokens' own dev macro F1 (``behaviour/calibration.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from hybrid_assets.behaviour.dataset import BehaviourRecord
from hybrid_assets.models.decision import EVIDENCE_THRESHOLD, RetrievalEvidence, choose
from hybrid_assets.models.embedding import Embedder
from hybrid_assets.schema import ANSWER

FOLDS, SHUFFLES = 5, 5
MIN_PER_CLASS = FOLDS  # stratified folds need every class in every fold


def context_similarities(records: Sequence[BehaviourRecord], embedding_model: str) -> list[float | None]:
    """Per record: max cosine(ticket, passage) over its context (None without context)."""
    embedder = Embedder(embedding_model)
    texts = [c.text for r in records for c in r.context]
    vectors = iter(embedder.embed(texts))
    tickets = embedder.embed([r.ticket for r in records])
    out: list[float | None] = []
    for record, query in zip(records, tickets):
        passages = [next(vectors) for _ in record.context]
        out.append(max(sum(a * b for a, b in zip(query, p)) for p in passages) if passages else None)  # normalised
    return out


def _decisions(evidence: RetrievalEvidence, distributions, similarities) -> list[str]:
    return [choose(evidence.reweigh(d, s), EVIDENCE_THRESHOLD) for d, s in zip(distributions, similarities)]


def fit_evidence(gold: Sequence[str], distributions: Sequence[dict], similarities: Sequence[float],
                 score) -> tuple[RetrievalEvidence, dict] | None:
    """Class-balanced logistic regression of "answer" vs the rest on (similarity, tokens' P(answer)),
    and its cross-validated ``score(gold, predicted)`` on these records (None: too few of a class)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    y = np.array([g == ANSWER for g in gold])
    if min(y.sum(), (~y).sum()) < MIN_PER_CLASS:
        return None
    x = np.array([[s, d.get(ANSWER, 0.0)] for d, s in zip(distributions, similarities)])

    def fitted(rows) -> RetrievalEvidence:
        model = LogisticRegression(class_weight="balanced", max_iter=1000).fit(x[rows], y[rows])
        (w_s, w_p), b = model.coef_[0], model.intercept_[0]
        return RetrievalEvidence(float(w_s), float(w_p), float(b))

    scores = []
    for shuffle in range(SHUFFLES):
        predicted = [""] * len(y)
        for train, test in StratifiedKFold(FOLDS, shuffle=True, random_state=shuffle).split(x, y):
            for i, decision in zip(test, _decisions(fitted(train), [distributions[i] for i in test],
                                                    [similarities[i] for i in test])):
                predicted[i] = decision
        scores.append(score(list(gold), predicted))
    evidence = fitted(np.arange(len(y)))
    return evidence, {**evidence.to_dict(), "dev_macro_f1_cv": round(float(np.mean(scores)), 4),
                      "dev_macro_f1_cv_spread": [round(float(min(scores)), 4), round(float(max(scores)), 4)],
                      "folds": FOLDS, "shuffles": SHUFFLES}
