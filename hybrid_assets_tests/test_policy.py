"""The escalation policy as data (``hybrid_assets/policy.py`` + ``data/serving/escalation_policy.json``):
first match wins, account facts and dates decide rule 3, level names are configuration, a bad file
names what is wrong, and the shipped policy routes the behaviour data's train and dev tickets as
their gold answers do (its eval split is what the benchmarks report, so it is not checked here)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from hybrid_assets.behaviour.dataset import load_behaviour_data, split_records, ticket_records
from hybrid_assets.knowledge.accounts import account_chunks, load_accounts, overview_fields
from hybrid_assets.policy import EscalationPolicy, Facts, PolicyError, days_until_renewal
from hybrid_assets.schema import LabelSpace

ROOT = Path(__file__).resolve().parents[1]
LABELS = LabelSpace.from_file(ROOT / "data/behaviour/labels.json")
SHIPPED = ROOT / "data/serving/escalation_policy.json"
SCALE_SOON = {"plan": "Scale", "renewal_date": "2026-12-05", "billing_cycle": "annual"}
AS_OF = date(2026, 11, 24)


def shipped() -> EscalationPolicy:
    return EscalationPolicy.from_file(SHIPPED, LABELS)


def test_first_matching_rule_wins_in_the_documents_order():
    # The policy's example A: a leaked key from a Scale customer near renewal, labels failing: rule 1.
    facts = Facts("A contractor posted our live API key in a public GitHub repo; all our labels fail now.",
                  sentiment="negative", decision="answer", account=SCALE_SOON, as_of=AS_OF)
    assert shipped().decide(facts).level == "security"
    # Without the key, the failing labels are rule 2; without both, the unhappy renewal is rule 3.
    facts = Facts("All our labels fail with a carrier error since 7am, hundreds of orders stuck.",
                  sentiment="negative", decision="answer", account=SCALE_SOON, as_of=AS_OF)
    assert shipped().decide(facts).level == "engineering_oncall"
    facts = Facts("The tracking page looked wrong again this week. Disappointing.", sentiment="negative",
                  decision="answer", account=SCALE_SOON, as_of=AS_OF)
    decided = shipped().decide(facts)
    assert (decided.level, decided.rule) == ("account_manager", "3")
    assert decided.reason.startswith("Rule 3")


def test_rule_3_reads_the_plan_and_the_renewal_date_from_the_account():
    ticket = "The tracking page looked wrong again this week. Disappointing."
    policy = shipped()
    growth = {**SCALE_SOON, "plan": "Growth"}
    far = {**SCALE_SOON, "renewal_date": "2027-08-15"}
    for account in (growth, far, None):  # not Scale / Enterprise, renewal far away, no account read
        assert policy.decide(Facts(ticket, "negative", "answer", account=account, as_of=AS_OF)).level == "none"
    # Positive customers near renewal are not rule 3; a cancel threat is, whatever the date.
    assert policy.decide(Facts(ticket, "positive", "answer", account=SCALE_SOON, as_of=AS_OF)).level == "none"
    threat = "Fix the sync or we cancel."
    assert policy.decide(Facts(threat, "neutral", "answer", account=far, as_of=AS_OF)).level == "account_manager"
    # Rule 5 / 6 follow the answer's decision.
    assert policy.decide(Facts(ticket, "neutral", "not_answerable", account=growth, as_of=AS_OF)).level == "tier_2"
    assert policy.decide(Facts(ticket, "neutral", "clarify", account=growth, as_of=AS_OF)).level == "none"


def test_an_ongoing_incident_counts_only_from_a_known_issue_not_from_the_account():
    policy = shipped()
    incident = "KI-107: FedEx Batches Above 300 Labels Time Out: Status: investigating — ongoing incident."
    account = "Account C1002 (Lone Star): open incidents: KI-107 (status: investigating — ongoing incident)"
    ticket = "Our FedEx batch of 400 times out. What now?"
    assert policy.decide(Facts(ticket, "neutral", "answer", cited=[incident])).level == "engineering_oncall"
    assert policy.decide(Facts(ticket, "neutral", "answer", cited=[account])).level == "none"
    # The model's own "engineering_oncall" counts only when such a passage was retrieved.
    assert policy.decide(Facts(ticket, "neutral", "answer", model_level="engineering_oncall",
                               retrieved=[incident])).level == "engineering_oncall"
    assert policy.decide(Facts(ticket, "neutral", "answer", model_level="engineering_oncall",
                               retrieved=[account])).level == "none"


def test_a_ticket_whose_best_match_is_a_known_issue_under_investigation_is_rule_2():
    """The policy's example B: the ticket matches KI-107 (its best retrieved passage is from that known
    issue, whose document says "investigating — ongoing incident"), whatever the answer cites."""
    policy = shipped()
    ki107 = "KI-107 — Symptom: batches above 300 FedEx labels time out.\nKI-107 — Status: investigating — ongoing incident."
    fixed = "KI-102 — Zebra labels cut off.\nKI-102 — Status: Fixed in Parcelwise Print Agent 3.4."
    ticket = "We tried to buy 400 FedEx labels in one batch and it keeps timing out."
    assert policy.decide(Facts(ticket, "negative", "answer", best_retrieved=ki107, account=SCALE_SOON,
                               as_of=AS_OF)).level == "engineering_oncall"  # rule 2 before rule 3
    assert policy.decide(Facts(ticket, "negative", "answer", best_retrieved=fixed, retrieved=[ki107],
                               account=SCALE_SOON, as_of=AS_OF)).level == "account_manager"


def test_monthly_renewals_roll_forward_and_annual_ones_do_not():
    assert days_until_renewal({"renewal_date": "2026-12-05", "billing_cycle": "annual"}, AS_OF) == 11
    assert days_until_renewal({"renewal_date": "2026-11-01", "billing_cycle": "annual"}, AS_OF) == -23
    assert days_until_renewal({"renewal_date": "2026-10-31", "billing_cycle": "monthly"}, AS_OF) == 6  # Nov 30
    assert days_until_renewal({"renewal_date": "not a date"}, AS_OF) is None


def test_the_account_overview_chunk_reads_back_as_the_record():
    accounts = load_accounts(ROOT / "data/knowledge/accounts")
    for account in accounts:
        overview = account_chunks(account)[0]
        fields = overview_fields(overview.text)
        assert fields["plan"] == account.get("plan")
        assert fields["renewal_date"] == account.get("renewal_date")
        assert fields["billing_cycle"] == account.get("billing_cycle")


def _write(tmp_path, rules) -> Path:
    path = tmp_path / "escalation_policy.json"
    path.write_text(json.dumps({"rules": rules}), encoding="utf-8")
    return path


def test_level_names_are_configuration(tmp_path):
    other = LabelSpace(sentiments=("calm", "upset"), categories=("orders", "misc"),
                       escalation_levels=("none", "human_review", "legal"))
    path = _write(tmp_path, [
        {"id": "L", "level": "legal", "reason": "Legal threat.", "when": {"ticket": ["lawyer"]}},
        {"id": "H", "level": "human_review", "reason": "Upset customers see a person.", "when": {"sentiment": ["upset"]}},
        {"id": "N", "level": "none", "reason": "Everything else."},
    ])
    policy = EscalationPolicy.from_file(path, other)
    assert policy.decide(Facts("I will call my LAWYER", sentiment="calm")).level == "legal"
    assert policy.decide(Facts("Where is my order?", sentiment="upset")).level == "human_review"
    assert policy.decide(Facts("Where is my order?", sentiment="calm")).level == "none"
    # The shipped file names this company's levels, so another label space rejects it by name.
    with pytest.raises(PolicyError, match="rule '1'.*'security' is not one of the escalation levels"):
        EscalationPolicy.from_file(SHIPPED, other)


@pytest.mark.parametrize("rules, message", [
    ([], "field 'rules' must be a non-empty list"),
    ([{"id": "1", "level": "none"}], "rule 0: field 'reason'"),
    ([{"id": "1", "level": "none", "reason": "r", "when": {"tickett": ["x"]}}], r"rule '1'.*unknown condition key.*tickett"),
    ([{"id": "1", "level": "none", "reason": "r", "when": {"ticket": ["(unclosed"]}}], r"rule '1'.*ticket: pattern"),
    ([{"id": "1", "level": "none", "reason": "r", "when": {"any": [{"sentiment": "negative"}]}}],
     r"any\[0\]\.sentiment: must be a list of strings"),
    ([{"id": "1", "level": "none", "reason": "r", "when": {"renewal_within_days": "30"}}], "whole number of days"),
])
def test_a_bad_policy_file_names_the_rule_and_field(tmp_path, rules, message):
    with pytest.raises(PolicyError, match=message):
        EscalationPolicy.from_file(_write(tmp_path, rules), LABELS)


def test_an_unreadable_policy_file_is_named(tmp_path):
    path = tmp_path / "escalation_policy.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(PolicyError, match="escalation_policy.json: cannot read"):
        EscalationPolicy.from_file(path, LABELS)


def test_the_shipped_policy_routes_the_train_and_dev_tickets_as_their_gold_answers_do():
    """With the gold sentiment and decision as the model's readings (what the policy is given), the
    shipped rules reproduce the gold level of >= 90% of the behaviour data's train + dev tickets
    (measured 0.967 of 359 on 2026-12-07). The patterns were written on these splits only."""
    data = load_behaviour_data(ROOT / "data/behaviour", LABELS)
    split = split_records(data.records, dev_fraction=0.1)
    accounts = {a.customer_id: dict(a.fields) for a in load_accounts(ROOT / "data/knowledge/accounts")}
    policy = shipped()
    records = ticket_records((*split.train, *split.dev))
    hits = 0
    for record in records:
        texts = {c.id: c.text for c in record.context}
        answer = record.answer
        facts = Facts(record.ticket, answer["sentiment"], answer["decision"],
                      account=accounts.get(record.customer_id or ""),
                      cited=[texts[c] for c in answer["citations"] if c in texts], retrieved=list(texts.values()),
                      as_of=AS_OF)
        hits += policy.decide(facts).level == answer["escalation"]["level"]
    assert len(records) > 300
    assert hits / len(records) >= 0.90, f"{hits} of {len(records)}"
