"""Write data/behaviour/policy_examples.jsonl: behaviour examples generated from the escalation
policy's decision tree crossed with the sample company's account facts, plus clarifying questions.

Why generated: the hand-written tickets cover each rule a few times, mostly with the account facts
that make the rule fire, so a small model learns "angry -> account_manager" instead of the rule
("Scale or Enterprise, and threatening to cancel or renewing within 30 days while negative"). Here
every branch comes with its contrasts - the same ticket from a plan the rule does not cover, a
dispute under the $500 line, a leaked key from an unhappy Enterprise customer near renewal (rule 1
wins: first match) - and each example's context is what serving shows the model: the customer's
account overview (as ``knowledge/accounts.account_chunks`` writes it) and the policy passages that
decide it, cited. Clarify examples teach the third decision: a ticket too vague to act on gets one
short question, cites nothing, and escalates nowhere yet.

Deterministic (no randomness beyond a fixed seed); rerun after editing the templates:
    .venv/bin/python scripts/make_policy_examples.py
A test checks that the committed file is this script's output and that every record is valid.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hybrid_assets.knowledge.accounts import account_chunks, load_accounts  # noqa: E402

OUT = ROOT / "data" / "behaviour" / "policy_examples.jsonl"
SNAPSHOT = ROOT / "data" / "raft" / "corpus_snapshot.jsonl"
ACCOUNTS = ROOT / "data" / "knowledge" / "accounts"
SIGN = "\n\n— The Parcelwise Support Team"
SEED = 7

# (doc id, section) of the passages the rules rest on.
SECURITY = ("policies/account-access-and-security.docx", "If You Think Your Account Is Compromised")
PRIVACY = ("policies/data-retention-and-privacy.html", "Deletion and privacy requests (GDPR and CCPA)")
KI107 = ("known_issues/ki-107-fedex-batch-timeouts.pdf", "Workaround")
KI107_STATUS = ("known_issues/ki-107-fedex-batch-timeouts.pdf", "KI-107: FedEx Batches Above 300 Labels Time Out")
BILLING_EXCEPTIONS = ("pricing/refunds-and-billing-policy.pdf", "Credits and Exceptions")
CHARGEBACKS = ("pricing/refunds-and-billing-policy.pdf", "Chargebacks")
EXTRA_LABELS = ("pricing/refunds-and-billing-policy.pdf", "Extra Labels and Plan Allowances")
MONTHLY = ("pricing/refunds-and-billing-policy.pdf", "Subscription Refunds / Monthly Plans")
TRACKING = ("product/track-tracking-pages.html", "Where tracking events come from")
CHANNELS = ("policies/support-channels-and-response-times.txt", "CHANNELS PER PLAN")
PRIORITY = ("policies/support-channels-and-response-times.txt", "PRIORITY LEVELS")
HELPING = ("policies/support-channels-and-response-times.txt", "HELPING US HELP YOU")


def load_snapshot() -> list[dict]:
    return [json.loads(line) for line in SNAPSHOT.read_text(encoding="utf-8").splitlines() if line.strip()]


def passage(snapshot: list[dict], doc_id: str, section: str | None) -> dict:
    for chunk in snapshot:
        if chunk["doc_id"] == doc_id and (section is None or chunk["section"] == section):
            heading = chunk["section"] if chunk["section"] and chunk["section"] != chunk["title"] else ""
            text = f"{chunk['title']}{' — ' + heading if heading else ''}: {' '.join(chunk['text'].split())}"
            return {"source": doc_id, "text": text}
    raise SystemExit(f"no chunk {doc_id} / {section} in {SNAPSHOT}")


def account_passage(account) -> dict:
    overview = account_chunks(account)[0]
    return {"source": f"account:{account.customer_id}",
            "text": f"{overview.title} — {overview.section}: {' '.join(overview.text.split())}"}


def record(rid: str, ticket: str, customer, passages: list[dict], cite: list[int], *, sentiment: str,
           category: str, decision: str, level: str, reason: str, resolution: str, reply: str) -> dict:
    context = [{"id": f"S{i}", **p} for i, p in enumerate(passages, 1)]
    return {
        "id": rid,
        "ticket": ticket,
        "customer_id": customer.customer_id if customer else None,
        "context": context,
        "answer": {
            "sentiment": sentiment, "category": category, "decision": decision,
            "escalation": {"level": level, "reason": reason},
            "citations": [f"S{i}" for i in cite],
            "resolution": resolution, "reply": reply + SIGN,
        },
    }


def first_name(account) -> str:
    contact = account.get("contact") or {}
    return (contact.get("name") or "there").split()[0]


def manager(account) -> str:
    return account.get("account_manager") or "your account manager"


def generate() -> list[dict]:
    snapshot = load_snapshot()
    accounts = load_accounts(ACCOUNTS)
    by_plan = {plan: [a for a in accounts if a.get("plan") == plan] for plan in ("Starter", "Growth", "Scale", "Enterprise")}
    big = by_plan["Scale"] + by_plan["Enterprise"]
    small = by_plan["Starter"] + by_plan["Growth"]
    ki107 = [a for a in accounts if any(i.get("id") == "KI-107" for i in a.get("open_incidents") or [])]
    rng = random.Random(SEED)
    out: list[dict] = []

    def pick(pool, n):
        return rng.sample(pool, min(n, len(pool)))

    # -- rule 1: security (first match: wins over every later rule) ----------------------------------
    security_tickets = [
        ("Someone we don't recognise signed in to our Parcelwise workspace last night from another country. "
         "What should we do?", "account_access"),
        ("Our contractor pushed our live Parcelwise API key to a public GitHub repository this morning.",
         "privacy_security"),
        ("Two of us got password reset emails we never asked for, and there are API calls in the log we "
         "didn't make.", "account_access"),
        ("We're furious: a leaked API key of ours was used to buy labels, and our renewal is in two weeks. "
         "If this isn't handled we're gone.", "privacy_security"),
    ]
    for n, (ticket, category) in enumerate(security_tickets):
        for account in pick(accounts if n < 3 else big, 3):
            out.append(record(
                f"policy-r1-{n}-{account.customer_id}", ticket, account,
                [account_passage(account), passage(snapshot, *SECURITY), passage(snapshot, *CHANNELS)], [2],
                sentiment="negative", category=category, decision="answer", level="security",
                reason="Rule 1: suspected account compromise or a leaked API key; first match wins.",
                resolution="Route to Security & Privacy (within 1 hour); customer to change passwords and sign "
                           "out all sessions.",
                reply=f"Thank you for telling us straight away, {first_name(account)}. Please change your password "
                      "and sign out all sessions under Profile → Security → Active sessions. I've passed this to "
                      "our Security & Privacy team, who will contact you within 1 hour."))
    for account in pick(accounts, 3):
        out.append(record(
            f"policy-r1-privacy-{account.customer_id}",
            "A shopper asked us to delete all the personal data you hold about her. How do we do that?", account,
            [account_passage(account), passage(snapshot, *PRIVACY), passage(snapshot, *MONTHLY)], [2],
            sentiment="neutral", category="privacy_security", decision="answer", level="security",
            reason="Rule 1: a data deletion / privacy request.",
            resolution="Point to More → Delete personal data; Security & Privacy to handle the wider request "
                       "(completed within 30 days).",
            reply="Thanks for checking with us. To delete one recipient's data, open the shipment and choose "
                  "More → Delete personal data. For all of her data across shipments, I've passed your request "
                  "to our Security & Privacy team: it is completed within 30 days, and we confirm in writing "
                  "when it is done."))

    # -- rule 2: ongoing incident (KI-107) or an outage -------------------------------------------------
    for account in ki107 + pick([a for a in accounts if a not in ki107], 2):
        out.append(record(
            f"policy-r2-ki107-{account.customer_id}",
            "Our morning FedEx batch of about 400 labels timed out again with 'Batch timed out'. We need these "
            "out today.", account,
            [account_passage(account), passage(snapshot, *KI107_STATUS), passage(snapshot, *KI107)], [2, 3],
            sentiment="negative", category="labels", decision="answer", level="engineering_oncall",
            reason="Rule 2: matches KI-107, an ongoing incident (investigating).",
            resolution="Escalate to engineering on-call and link to KI-107; customer to split batches to 250.",
            reply="I'm sorry your FedEx batch timed out again. This is a known ongoing incident (KI-107) that our "
                  "engineering on-call team is investigating. Until it is fixed, please split FedEx work into "
                  "batches of 250 or fewer labels. I've linked your ticket to the incident so engineering can "
                  "follow up with you."))
    for account in pick(accounts, 3):
        out.append(record(
            f"policy-r2-outage-{account.customer_id}",
            "Since 9am every single label purchase fails with an error. Hundreds of orders are stuck and we can't "
            "ship anything.", account,
            [account_passage(account), passage(snapshot, *PRIORITY), passage(snapshot, *HELPING)], [],
            sentiment="negative", category="labels", decision="not_answerable", level="engineering_oncall",
            reason="Rule 2: label purchase failing for many shipments (production outage).",
            resolution="Page engineering on-call as a P1; ask for a request_id or error message.",
            reply="I'm sorry, this is blocking your shipping and we're treating it as urgent. Our documentation "
                  "doesn't explain this failure, so I've paged our engineering on-call team, who are looking at "
                  "it now. If you can, reply with the exact error message or a request_id."))

    # -- rule 3: Scale / Enterprise threatening to cancel, or negative near renewal -----------------------
    threats = [
        "Tracking pages keep showing old scans for hours. Honestly we're looking at other shipping platforms "
        "and may cancel.",
        "Third time this month the returns portal was slow for our shoppers. We're seriously considering "
        "switching providers.",
        "We renew in a couple of weeks and the label printing problems this quarter have been really "
        "frustrating.",
    ]
    for n, ticket in enumerate(threats):
        for account in pick(big, 3):
            out.append(record(
                f"policy-r3-{n}-{account.customer_id}", ticket, account,
                [account_passage(account), passage(snapshot, *TRACKING), passage(snapshot, *CHANNELS)], [1],
                sentiment="negative", category="tracking" if n == 0 else "returns" if n == 1 else "labels",
                decision="answer", level="account_manager",
                reason=f"Rule 3: {account.get('plan')} customer, "
                       + ("threatening to cancel." if n < 2 else "renewal soon and negative about the service."),
                resolution=f"Hand to {manager(account)} (same business day); Tier 2 to look at the problem.",
                reply=f"I'm sorry, {first_name(account)}, that isn't the experience you should have on your "
                      f"{account.get('plan')} plan. I've asked {manager(account)}, your account manager, to contact "
                      "you today so we can go through what went wrong and fix it."))
    # The contrast: the same complaints from Starter / Growth are not rule 3.
    for n, ticket in enumerate(threats[:2]):
        for account in pick(small, 3):
            out.append(record(
                f"policy-r3-contrast-{n}-{account.customer_id}", ticket, account,
                [account_passage(account), passage(snapshot, *TRACKING), passage(snapshot, *CHANNELS)],
                [1, 2] if n == 0 else [],
                sentiment="negative", category="tracking" if n == 0 else "returns",
                decision="answer" if n == 0 else "not_answerable",
                level="none" if n == 0 else "tier_2",
                reason=(f"Rule 5: {account.get('plan')} plan is not eligible for rule 3; tracking updates are "
                        "documented.") if n == 0 else
                       (f"Rule 6: {account.get('plan')} plan is not eligible for rule 3; portal slowness is not "
                        "documented."),
                resolution="Explain the 30-minute carrier polling." if n == 0 else
                           "Tier 2 to investigate the returns portal slowness.",
                reply=(f"I'm sorry the tracking page looked out of date, {first_name(account)}. Tracking events are "
                       "pulled from the carriers every 30 minutes, so a new scan can take up to half an hour to "
                       "appear. If a parcel shows no new scan for longer than that, send me the tracking number and "
                       "I'll check it with the carrier.") if n == 0 else
                      (f"I'm sorry your shoppers had a slow returns portal, {first_name(account)}. Our documentation "
                       "doesn't explain this, so I've passed your ticket to our Tier 2 team, who will investigate "
                       "and reply within one business day.")))

    # -- rule 4: billing dispute above $500, chargeback, refund outside the policy ----------------------
    for account in pick(accounts, 3):
        out.append(record(
            f"policy-r4-dispute-{account.customer_id}",
            "I dispute invoice #48213: you charged us $780 for extra labels we never bought.", account,
            [account_passage(account), passage(snapshot, *BILLING_EXCEPTIONS), passage(snapshot, *EXTRA_LABELS)], [2],
            sentiment="negative", category="billing", decision="answer", level="billing_specialist",
            reason="Rule 4: billing dispute above $500.",
            resolution="Route to a billing specialist (reply within one business day).",
            reply="Thanks for flagging this invoice. A dispute above $500 is reviewed by one of our billing "
                  "specialists, and I've passed yours on: they will reply within one business day."))
        out.append(record(
            f"policy-r4-chargeback-{account.customer_id}",
            "We've filed a chargeback with our bank for last month's Parcelwise charge.", account,
            [account_passage(account), passage(snapshot, *CHARGEBACKS), passage(snapshot, *BILLING_EXCEPTIONS)], [1, 2],
            sentiment="negative", category="billing", decision="answer", level="billing_specialist",
            reason="Rule 4: a chargeback.",
            resolution="Route to a billing specialist; explain that label purchases are frozen while it is open.",
            reply="Thanks for letting us know. While a chargeback is open, label purchases on the workspace are "
                  "frozen; tracking pages keep working. I've passed this to our billing specialists, who will "
                  "contact you within one business day to resolve it."))
    # The contrast: under $500 and documented -> rule 5.
    for account in pick(accounts, 3):
        out.append(record(
            f"policy-r4-contrast-{account.customer_id}",
            "Why is there a $96 charge for extra labels on our invoice? We thought our plan covered everything.",
            account,
            [account_passage(account), passage(snapshot, *EXTRA_LABELS), passage(snapshot, *BILLING_EXCEPTIONS)], [2],
            sentiment="neutral", category="billing", decision="answer", level="none",
            reason="Rule 5: under $500 and documented (extra labels above the allowance).",
            resolution="Explain the plan allowance and the extra-label rate.",
            reply="Thanks for asking. Each plan includes a number of labels per billing month, and labels above the "
                  "allowance are charged at your plan's extra-label rate; unused labels don't roll over. The $96 "
                  "is for labels above your allowance last month."))

    # -- clarify: too vague to act on ---------------------------------------------------------------
    vague = [
        ("It's not working again.", "other",
         "which part of Parcelwise isn't working - buying labels, printing, tracking or an integration - and what "
         "do you see when it fails?"),
        ("How much is it?", "billing",
         "are you asking about the price of a plan, of extra labels above your allowance, or of SMS "
         "notifications?"),
        ("Can you cancel it for me?", "other",
         "what would you like cancelled - a label, a return, or your Parcelwise subscription?"),
        ("The labels are wrong.", "labels",
         "what is wrong with them - the address, the carrier or service, or how they print - and which order "
         "numbers are affected?"),
        ("Why is this happening??", "other",
         "what are you seeing, and roughly since when? An error message or an order number helps most."),
        ("Is it down?", "other",
         "which part are you having trouble with - the web app, the API, or tracking pages - and what error do "
         "you get?"),
        ("What's the limit?", "other",
         "which limit do you mean - labels per batch, API requests per minute, or the labels included in your "
         "plan?"),
        ("My orders aren't showing up.", "integrations",
         "which store or integration are the orders coming from, and when did the last one appear?"),
        ("Please change it back.", "other",
         "what would you like changed back, and what was it before?"),
        ("We need help with the thing from yesterday.", "other",
         "could you tell me a bit more about what happened yesterday, or send the ticket or order number?"),
    ]
    for n, (ticket, category, question) in enumerate(vague):
        for account in [None] + pick(accounts, 1):
            passages = [passage(snapshot, *HELPING), passage(snapshot, *PRIORITY), passage(snapshot, *TRACKING)]
            if account:
                passages = [account_passage(account)] + passages[:2]
            out.append(record(
                f"policy-clarify-{n}-{account.customer_id if account else 'anon'}", ticket, account, passages, [],
                sentiment="negative" if ticket.endswith(("again.", "??")) else "neutral", category=category,
                decision="clarify", level="none", reason="Unclear request: ask before applying the policy.",
                resolution="Ask the customer one clarifying question before routing.",
                reply=f"Thanks for getting in touch{', ' + first_name(account) if account else ''}. So I can help "
                      f"quickly: {question}"))
    return out


def main() -> None:
    examples = generate()
    OUT.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples), encoding="utf-8")
    print(f"wrote {len(examples)} examples to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
