"""Synthetic customers for the many-tenant test and benchmark: every customer has identifiers that
no other customer shares (id, company, e-mail, contact, invoice number, incident id, a code word), so
a hit carrying one of them in another customer's search is a cross-tenant leak, provably."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

ADJECTIVES = ["Amber", "Blue", "Cedar", "Dune", "Ember", "Fjord", "Granite", "Harbor", "Iris", "Juniper", "Kestrel",
              "Lumen", "Maple", "Nimbus", "Onyx", "Pine", "Quartz", "Rowan", "Sable", "Tidal", "Umber", "Vale",
              "Willow", "Yarrow", "Zephyr"]
NOUNS = ["Coffee", "Ceramics", "Cycles", "Tea", "Outdoor", "Prints", "Botanics", "Audio", "Textiles", "Candles",
         "Games", "Optics", "Bakery", "Leather", "Pet Supplies", "Toys", "Skincare", "Books", "Tools", "Spices"]
WORDS = ["falcon", "marble", "lantern", "saffron", "glacier", "walnut", "cobalt", "meadow", "harpoon", "violet",
         "anchor", "thistle", "copper", "orchid", "canyon", "pepper", "quill", "raven", "tundra", "velvet"]
PLANS = ["Starter", "Growth", "Scale", "Enterprise"]
CARRIERS = ["DHL", "UPS", "FedEx", "PostNL", "Royal Mail", "DPD", "USPS"]


@dataclass(frozen=True)
class Customer:
    customer_id: str
    company: str
    email: str
    contact: str
    invoice: str
    incident: str
    codeword: str
    record: dict

    @property
    def identifiers(self) -> list[str]:
        """What must never appear in another customer's results."""
        return [self.customer_id, self.company, self.email, self.contact, self.invoice, self.incident, self.codeword]


def make_customers(n: int, seed: int = 13) -> list[Customer]:
    rng = random.Random(seed)
    customers = []
    for i in range(n):
        cid = f"T{i + 1:05d}"
        company = f"{ADJECTIVES[i % 25]} {NOUNS[(i // 25) % 20]} {['Ltd', 'GmbH', 'B.V.', 'Inc', 'SAS'][(i // 500) % 5]} {i + 1}"
        slug = company.lower().replace(" ", "-").replace(".", "")
        contact = f"{rng.choice(['Ana', 'Ben', 'Chen', 'Dara', 'Eli', 'Fay', 'Gus', 'Hana'])} Contact{i + 1:05d}"
        email = f"ops@{slug}.example"
        invoice = f"INV-{700000 + i}"
        incident = f"INC-{90000 + i}"
        codeword = f"{WORDS[i % 20]}{WORDS[(i // 20) % 20]}{i + 1}"
        record = {
            "customer_id": cid,
            "company": company,
            "plan": PLANS[i % 4],
            "billing_cycle": "monthly" if i % 3 else "annual",
            "renewal_date": f"2027-{1 + i % 12:02d}-{1 + i % 28:02d}",
            "monthly_label_usage": 200 + (i * 37) % 5000,
            "integrations": [rng.choice(["Shopify", "WooCommerce", "Magento", "BigCommerce"])],
            "region": rng.choice(["EU", "UK", "US"]),
            "open_incidents": [{"id": incident, "summary": f"{rng.choice(CARRIERS)} labels rejected on invoice {invoice}"}],
            "notes": f"Support code word {codeword}. Disputed invoice {invoice} for {company}; "
                     f"prefers e-mail to {email}.",
            "contact": {"name": contact, "email": email},
        }
        customers.append(Customer(cid, company, email, contact, invoice, incident, codeword, record))
    return customers


def write_customers(folder: Path, customers: list[Customer]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*"):
        old.unlink()
    path = folder / "customers.json"
    path.write_text(json.dumps([c.record for c in customers], indent=1))
    return path


def adversarial_queries(victim: Customer, others: list[Customer]) -> list[str]:
    """Queries that name other customers: their ids, e-mails, company names, contacts, invoices,
    incidents and code words, alone and mixed with the asker's own topic."""
    queries = []
    for other in others:
        queries += [other.customer_id, other.email, other.company, f"invoice {other.invoice} dispute",
                    f"incident {other.incident} status", f"code word {other.codeword}",
                    f"what plan is {other.company} ({other.customer_id}) on, contact {other.contact}",
                    f"renewal date and open incidents for account {other.customer_id} {other.email}"]
    return queries
