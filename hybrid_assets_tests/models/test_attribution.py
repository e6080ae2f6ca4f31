"""Post-hoc attribution (``models/attribution.py``): an answer cites the passages its own words come from."""

from __future__ import annotations

import json
from pathlib import Path

from hybrid_assets.behaviour.dataset import load_behaviour_data, split_records
from hybrid_assets.models.attribution import RELATIVE_SUPPORT, attribute, content_words
from hybrid_assets.schema import LabelSpace

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "Account C1004 — Account overview: plan: Starter renewal date: 2026-12-14 integrations: Shopify"
RETURNS = "Returns portal — QR code returns: shoppers without a printer get a QR code for DHL, UPS and PostNL."
VOIDING = "Voiding labels: void an unused label within 28 days for a refund to your balance."
SIGN = "— The Parcelwise Support Team"


def test_the_reply_s_source_is_cited_not_the_first_id():
    reply = "QR code returns work with DHL, UPS and PostNL, so shoppers without a printer can return."
    cited = attribute([reply, "Explain QR returns."], {"S1": ACCOUNT, "S2": RETURNS, "S3": VOIDING}, ["S1"], [SIGN])
    assert cited == ["S2"]


def test_every_passage_within_the_relative_support_of_the_best_is_kept_in_retrieval_order():
    reply = "Void the unused label within 28 days for a refund; QR code returns work for shoppers without a printer."
    assert attribute([reply], {"S1": RETURNS, "S2": ACCOUNT, "S3": VOIDING}, ["S2"]) == ["S1", "S3"]


def test_no_shared_word_keeps_the_model_s_citations_and_boilerplate_counts_for_nothing():
    assert attribute(["Thanks for reaching out!"], {"S1": RETURNS, "S2": VOIDING}, ["S2"]) == ["S2"]
    assert content_words(f"Hi Femke, thanks! {SIGN}", [SIGN]) == {"femke"}


def test_on_the_train_split_the_gold_replies_are_attributed_to_their_gold_documents():
    """What ``RELATIVE_SUPPORT`` was chosen on (the train split only): the gold replies' attributed
    documents match the gold citations' with precision >= 0.95 and recall >= 0.95."""
    labels = LabelSpace.from_file(ROOT / "data/behaviour/labels.json")
    records = [r for r in split_records(load_behaviour_data(ROOT / "data/behaviour", labels).records).train
               if r.origin.split(":")[0].endswith("tickets.jsonl") and r.answer["decision"] == "answer"
               and r.answer["citations"]]
    precisions, recalls = [], []
    for record in records:
        source = {c.id: c.source for c in record.context}
        chosen = attribute([record.answer["reply"], record.answer["resolution"]],
                           {c.id: c.text for c in record.context}, record.answer["citations"], [SIGN])
        gold = {source[c] for c in record.answer["citations"] if c in source}
        docs = {source[c] for c in chosen}
        precisions.append(len(docs & gold) / len(docs))
        recalls.append(len(docs & gold) / len(gold))
    assert len(records) > 150 and RELATIVE_SUPPORT == 0.6
    assert sum(precisions) / len(precisions) >= 0.95, json.dumps(sum(precisions) / len(precisions))
    assert sum(recalls) / len(recalls) >= 0.95
