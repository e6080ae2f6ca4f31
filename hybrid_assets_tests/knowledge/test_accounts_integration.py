"""Customer data: one Weaviate tenant per customer; a query for customer A never returns customer B's
data; a removed customer loses its tenant; bad account records fail with file, record and field."""

from __future__ import annotations

import json

import pytest

from hybrid_assets.knowledge.accounts import AccountDataError, load_accounts
from hybrid_assets.knowledge.pipeline import UnknownCustomer, index_accounts, search
from hybrid_assets.store.collections import accounts_collection_name

ACCOUNTS = [
    {"customer_id": "C1", "company": "Acme Outdoor", "plan": "Scale", "renewal_date": "2026-12-01",
     "open_incidents": [], "notes": "Prefers phone calls about invoices."},
    {"customer_id": "C2", "company": "Bluebird Tea", "plan": "Starter", "renewal_date": "2027-02-01",
     "open_incidents": [{"id": "INC-7", "summary": "Chargeback on invoice 4471 for $812"}],
     "notes": "Disputed invoice 4471 (the zebra-striped mugs order)."},
]


def write_accounts(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*"):
        old.unlink()
    (folder / "customers.json").write_text(json.dumps(records))


@pytest.mark.integration
def test_tenant_isolation_and_removal(client, settings):
    write_accounts(settings.accounts_dir, ACCOUNTS)
    reports = index_accounts(client, settings, load_accounts(settings.accounts_dir))
    assert {k: len(r.inserted) for k, r in reports.items()} == {"C1": 3, "C2": 3}

    # C2's distinctive words, asked as C1: only shared knowledge or C1's own tenant may answer.
    hits = search(client, settings, "zebra-striped mugs chargeback invoice 4471", customer_id="C1", k=10)
    assert hits and all(hit.tenant in (None, "C1") for hit in hits)
    assert not any("zebra" in hit.text or "4471" in hit.text for hit in hits)
    # ...while C2 finds its own record.
    own = search(client, settings, "zebra-striped mugs chargeback invoice 4471", customer_id="C2", k=3)
    assert own[0].tenant == "C2" and "4471" in own[0].text

    with pytest.raises(UnknownCustomer, match="C9"):
        search(client, settings, "renewal", customer_id="C9")

    # unchanged data writes nothing; a removed customer loses its tenant
    again = index_accounts(client, settings, load_accounts(settings.accounts_dir))
    assert not any(r.wrote_anything for r in again.values())
    write_accounts(settings.accounts_dir, ACCOUNTS[:1])
    index_accounts(client, settings, load_accounts(settings.accounts_dir))
    tenants = client.collections.get(accounts_collection_name(settings.embedding_model)).tenants.get()
    assert set(tenants) == {"C1"}


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"customer_id": "C1", "plan": "Scale", "renewal_date": "2027-01-01"}], "record 0: missing field 'company'"),
        ([ACCOUNTS[0], ACCOUNTS[0]], "record 1: duplicate customer_id 'C1'"),
        ([{**ACCOUNTS[0], "customer_id": "C 1/x"}], "field 'customer_id'='C 1/x'"),
    ],
)
def test_bad_account_records_are_named(tmp_path, records, message):
    write_accounts(tmp_path, records)
    with pytest.raises(AccountDataError, match=message.replace("(", r"\(")) as error:
        load_accounts(tmp_path)
    assert "customers.json" in str(error.value)
