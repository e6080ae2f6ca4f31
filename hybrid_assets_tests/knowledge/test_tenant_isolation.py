"""Tenant isolation with many tenants (issue #13, item 3), through the retrieval serving uses
(``serving.retrieval.retrieve``), against a real Weaviate server:

- 60 generated customers, each its own tenant beside the sample company's shared documents. Every
  customer asks an adversarial query set naming OTHER customers (their ids, e-mails, company names,
  contacts, invoices, incidents, code words): not one passage may come from another tenant. A passage
  is a leak when its chunk id is neither a shared-document chunk nor one of the asker's own account
  chunks (both computed from the data, not read back from the server), or when its text names another
  customer's identifier. Each query is checked on its own and the failure names the leak.
- Positive control: each customer asking about its own company finds its own account, so "no hits at all" can
  never pass for isolation.
- A tenant made COLD (INACTIVE) is re-activated on demand by a query and answers with its own data;
  the other COLD tenants stay COLD.
- No customer: shared documents only, never an account. An unknown customer id (no tenant) is a clear
  ``UnknownCustomer`` naming it (the API's 404), never another customer's data.
"""

from __future__ import annotations

import re

import pytest

from hybrid_assets.knowledge.accounts import account_chunks, load_accounts
from hybrid_assets.knowledge.pipeline import UnknownCustomer, ingest_knowledge, set_tenant_activity, tenant_states
from hybrid_assets.serving.retrieval import retrieve
from hybrid_assets_tests.knowledge.accountfactory import adversarial_queries, make_customers, write_customers

pytestmark = pytest.mark.integration

N_CUSTOMERS = 60
# Each customer asks about these others (by offset), so every customer is named by two others and
# the pairs span the whole id range; 8 queries per named customer (``adversarial_queries``).
OFFSETS = (1, N_CUSTOMERS // 2 + 1)
K = 8  # more than the serving default (4): more room for a leak to show


@pytest.fixture
def many_tenants(client, settings):
    customers = make_customers(N_CUSTOMERS)
    write_customers(settings.accounts_dir, customers)
    report = ingest_knowledge(client, settings)
    assert len(report.accounts) == N_CUSTOMERS and not report.chunking.failures
    shared_ids = {c.chunk_id for chunks in report.chunking.chunks_by_doc.values() for c in chunks}
    own_ids = {a.customer_id: {c.chunk_id for c in account_chunks(a)} for a in load_accounts(settings.accounts_dir)}
    return customers, shared_ids, own_ids


def identifier_owners(customers) -> tuple[re.Pattern, dict[str, str]]:
    owner = {ident.lower(): c.customer_id for c in customers for ident in c.identifiers}
    alternatives = "|".join(re.escape(i) for i in sorted(owner, key=len, reverse=True))
    return re.compile(rf"(?<!\w)({alternatives})(?!\w)", re.IGNORECASE), owner


def leaks(retrieved, asker: str, shared_ids: set[str], own_ids: set[str], pattern, owner) -> list[str]:
    found = []
    for short_id, hit in retrieved.hits.items():
        if hit.chunk_id not in shared_ids and hit.chunk_id not in own_ids:
            found.append(f"{short_id}: chunk {hit.chunk_id} ({hit.doc_id}) is neither shared nor {asker}'s own")
    for passage in retrieved.passages:
        for match in pattern.finditer(passage.text):
            if owner[match.group(1).lower()] != asker:
                found.append(f"{passage.short_id}: names {match.group(1)!r} of {owner[match.group(1).lower()]} "
                             f"(source {passage.source})")
    return found


@pytest.mark.scale  # ~1,000 retrievals: 1-6 min on the shared 2-core host
def test_no_query_naming_another_customer_reaches_its_tenant(client, settings, many_tenants):
    customers, shared_ids, own_ids = many_tenants
    pattern, owner = identifier_owners(customers)
    failures, queries = [], 0
    for i, asker in enumerate(customers):
        others = [customers[(i + offset) % N_CUSTOMERS] for offset in OFFSETS]
        for query in adversarial_queries(asker, others):
            got = retrieve(client, settings, query, asker.customer_id, k=K)
            queries += 1
            failures += [f"{asker.customer_id} asked {query!r}: {leak}"
                         for leak in leaks(got, asker.customer_id, shared_ids, own_ids[asker.customer_id], pattern, owner)]

        own = retrieve(client, settings, f"open incidents and plan for {asker.company}", asker.customer_id, k=K)
        mine = [p for p in own.passages if p.source == f"account:{asker.customer_id}" and asker.company in p.text]
        assert mine, f"{asker.customer_id} does not find its own account: {[p.source for p in own.passages]}"
    assert queries == N_CUSTOMERS * len(OFFSETS) * 8
    assert failures == [], f"{len(failures)} cross-tenant hits in {queries} queries, e.g. {failures[:5]}"


def test_a_cold_tenant_is_reactivated_on_demand_and_answers(client, settings, many_tenants):
    customers, shared_ids, own_ids = many_tenants
    pattern, owner = identifier_owners(customers)
    cold = [c.customer_id for c in customers[10:]]
    assert set_tenant_activity(client, settings, cold, active=False) == sorted(cold)
    states = tenant_states(client, settings)
    assert {states[c] for c in cold} == {"INACTIVE"} and states[customers[0].customer_id] == "ACTIVE"

    asker = customers[20]
    got = retrieve(client, settings, f"open incidents and plan for {asker.company}", asker.customer_id, k=K)
    assert any(asker.company in p.text and p.source == f"account:{asker.customer_id}" for p in got.passages), \
        [p.source for p in got.passages]
    assert leaks(got, asker.customer_id, shared_ids, own_ids[asker.customer_id], pattern, owner) == []
    states = tenant_states(client, settings)
    assert states[asker.customer_id] == "ACTIVE"
    assert {states[c] for c in cold if c != asker.customer_id} == {"INACTIVE"}, "only the asked tenant wakes up"


def test_without_a_customer_no_account_is_searched_and_an_unknown_one_is_named(client, settings, many_tenants):
    customers, shared_ids, _ = many_tenants
    target = customers[5]
    for query in (target.customer_id, f"code word {target.codeword}", f"invoice {target.invoice} for {target.company}"):
        got = retrieve(client, settings, query, None, k=K)
        assert all(hit.chunk_id in shared_ids for hit in got.hits.values()), [p.source for p in got.passages]
        assert not any(target.codeword in p.text or target.invoice in p.text for p in got.passages)

    with pytest.raises(UnknownCustomer, match="T99999"):
        retrieve(client, settings, f"code word {target.codeword}", "T99999", k=K)
