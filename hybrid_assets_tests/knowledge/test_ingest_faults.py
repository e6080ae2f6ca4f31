"""Faults during an ingest (issue #13, item 4), with the real entry point (`hybrid-assets ingest`, i.e.
``knowledge.pipeline.ingest_knowledge``) in its own process and a Weaviate server owned by the test:

(a) the Weaviate server is SIGKILLed while the ingest writes: the ingest exits 2 with a clear error
    (no traceback) saying nothing indexed was removed and to rerun; after a restart on the same data
    folder a rerun converges;
(b) the ingest process itself is SIGKILLed while it writes; a rerun converges.

"While it writes" is detected on the server (an object of the new data version appears), never by
sleeping. Each fault hits an ingest that has real work on both collections: documents edited, added
and deleted; every customer's account changed, customers added and removed. Converged means: for
the documents and for every tenant, the stored ids are exactly the chunk ids of the current data, the
object count equals the chunk count, no id is listed twice, no stale chunk of a changed or deleted
document (or account) is left, and removed customers have no tenant.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hybrid_assets.knowledge.accounts import account_chunks, load_accounts
from hybrid_assets.knowledge.documents import scan_documents
from hybrid_assets.knowledge.pipeline import build_document_chunks, ingest_knowledge
from hybrid_assets.settings import PROJECT_ROOT, load_settings
from hybrid_assets.store.client import open_client
from hybrid_assets.store.collections import accounts_collection_name, existing_chunk_ids, knowledge_collection_name
from hybrid_assets.store.server import EmbeddedServer
from hybrid_assets_tests.knowledge.accountfactory import make_customers, write_customers

pytestmark = [pytest.mark.integration, pytest.mark.scale]

# Not the session server: this one is killed. Its gossip/raft ports are HTTP + 10..13.
HTTP = int(os.environ.get("HYBRID_TEST_FAULT_WEAVIATE_HTTP_PORT", "8483"))
GRPC = int(os.environ.get("HYBRID_TEST_FAULT_WEAVIATE_GRPC_PORT", "8480"))
FIRST_CUSTOMER_AFTER = "T00011"  # the second version removes T00001-T00010 and adds T00121-T00130
INGEST = [sys.executable, "-c", "from hybrid_assets.cli import main; main()", "ingest"]
DEADLINE_S = 600  # against a hang only


@pytest.fixture
def own_server(tmp_path, monkeypatch, data_dir):
    binary = EmbeddedServer.from_settings(load_settings()).binary
    server = EmbeddedServer(binary, tmp_path / "weaviate", HTTP, GRPC)
    if server.is_ready():
        pytest.fail(f"a Weaviate server already answers on {server.url}: set HYBRID_TEST_FAULT_WEAVIATE_HTTP_PORT/_GRPC_PORT")
    server.start()
    monkeypatch.setenv("HYBRID_DATA_DIR", str(data_dir))
    monkeypatch.setenv("WEAVIATE_HTTP_PORT", str(HTTP))
    monkeypatch.setenv("WEAVIATE_GRPC_PORT", str(GRPC))
    monkeypatch.delenv("WEAVIATE_URL", raising=False)
    try:
        yield server, load_settings()
    finally:
        server.stop()


def bulk_doc(docs, i: int, revision: str = "") -> None:
    (docs / "bulk").mkdir(exist_ok=True)
    (docs / "bulk" / f"note-{i:03d}.md").write_text(f"# Warehouse note {i}\n\n" + "\n\n".join(
        f"## Part {j}\n\nWarehouse note {i}-{j}{revision}: parcels for route {i * 10 + j} leave at {j + 6} am."
        for j in range(6)))


def first_version(settings) -> None:
    for i in range(60):
        bulk_doc(settings.docs_dir, i)
    write_customers(settings.accounts_dir, make_customers(130)[:120])


def second_version(settings) -> None:
    """Edit 20 documents, delete 10, add 40; change every customer's incident; remove 10, add 10."""
    for i in range(20):
        bulk_doc(settings.docs_dir, i, revision=" (revised)")
    for i in range(50, 60):
        (settings.docs_dir / "bulk" / f"note-{i:03d}.md").unlink()
    for i in range(60, 100):
        bulk_doc(settings.docs_dir, i)
    after = make_customers(130)[10:]
    for customer in after:
        customer.record["open_incidents"][0]["summary"] += " (escalated to the carrier)"
    write_customers(settings.accounts_dir, after)


def wanted(settings) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The chunk ids the current data produces: per document, per tenant (computed, not read back)."""
    chunking = build_document_chunks(scan_documents(settings.docs_dir), settings.cache_dir)
    assert not chunking.failures, chunking.failures
    docs = {doc: {c.chunk_id for c in chunks} for doc, chunks in chunking.chunks_by_doc.items()}
    tenants = {a.customer_id: {c.chunk_id for c in account_chunks(a)} for a in load_accounts(settings.accounts_dir)}
    return docs, tenants


def assert_converged(client, settings, stale: set[str]) -> None:
    docs, tenants = wanted(settings)
    knowledge = client.collections.get(knowledge_collection_name(settings.embedding_model))
    ids = [str(o.uuid) for o in knowledge.iterator()]
    assert len(ids) == len(set(ids)), "an id is stored twice"
    assert existing_chunk_ids(knowledge) == docs, "stored document chunks differ from the data's chunks"
    assert knowledge.aggregate.over_all(total_count=True).total_count == sum(map(len, docs.values()))
    assert not stale & set(ids), f"{len(stale & set(ids))} stale document chunks left"

    accounts = client.collections.get(accounts_collection_name(settings.embedding_model))
    assert set(accounts.tenants.get()) == set(tenants), "tenants differ from the customers"
    for name, chunk_ids in tenants.items():
        tenant = accounts.with_tenant(name)
        stored = [str(o.uuid) for o in tenant.iterator()]
        assert len(stored) == len(set(stored)) == len(chunk_ids) and set(stored) == chunk_ids, name
        assert tenant.aggregate.over_all(total_count=True).total_count == len(chunk_ids), name


def converged_first_version(settings) -> set[str]:
    """Ingest the first version (and check it), switch the data to the second; returns the ids that
    only the first version has (what must be gone after the second converged)."""
    first_version(settings)
    with open_client(settings, start_embedded=False) as client:
        ingest_knowledge(client, settings)
        assert_converged(client, settings, set())
    before = wanted(settings)
    second_version(settings)
    after = wanted(settings)
    ids = lambda version: {i for part in version for chunk_ids in part.values() for i in chunk_ids}  # noqa: E731
    return ids(before) - ids(after)


def start_ingest(tmp_path) -> tuple[subprocess.Popen, object]:
    log = open(tmp_path / "ingest.log", "w+")
    return subprocess.Popen(INGEST, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, text=True), log


def wait_until(process: subprocess.Popen, written) -> None:
    """Poll the server until ``written()`` is true (some new objects are stored); the ingest must
    still be running then, or the fault would hit nothing."""
    deadline = time.monotonic() + DEADLINE_S
    while not written():
        assert process.poll() is None, f"the ingest ended (rc {process.returncode}) before it wrote anything new"
        assert time.monotonic() < deadline, "no new object appeared"
        time.sleep(0.02)
    assert process.poll() is None, "the ingest finished before the fault"


def test_weaviate_killed_mid_ingest_fails_clearly_and_a_rerun_converges(own_server, tmp_path):
    server, settings = own_server
    stale = converged_first_version(settings)
    with open_client(settings, start_embedded=False) as watcher:
        knowledge = watcher.collections.get(knowledge_collection_name(settings.embedding_model))
        before = knowledge.aggregate.over_all(total_count=True).total_count
        process, log = start_ingest(tmp_path)
        wait_until(process, lambda: knowledge.aggregate.over_all(total_count=True).total_count > before)
        assert server.kill()
    rc = process.wait(timeout=DEADLINE_S)
    log.seek(0)
    output = log.read()
    log.close()
    assert rc == 2, output  # the CLI's exit code for a clean failure
    assert "Traceback" not in output, output
    assert "nothing already indexed was removed; rerun `hybrid-assets ingest` once Weaviate is healthy" in output, output

    server.start()  # same data folder: what was written before the kill is there
    with open_client(settings, start_embedded=False) as client:
        ingest_knowledge(client, settings)
        assert_converged(client, settings, stale)


def test_ingest_process_killed_mid_write_and_a_rerun_converges(own_server, tmp_path):
    _, settings = own_server
    stale = converged_first_version(settings)
    _, tenants = wanted(settings)
    first = FIRST_CUSTOMER_AFTER  # the first tenant the accounts step writes
    with open_client(settings, start_embedded=False) as watcher:
        tenant = watcher.collections.get(accounts_collection_name(settings.embedding_model)).with_tenant(first)
        fresh = {i for i in tenants[first] if not tenant.data.exists(i)}
        assert fresh, "the second version must change every account"
        new_chunk = sorted(fresh)[0]
        process, log = start_ingest(tmp_path)
        wait_until(process, lambda: tenant.data.exists(new_chunk))  # documents done, accounts being written
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
        log.close()

    with open_client(settings, start_embedded=False) as client:
        ingest_knowledge(client, settings)
        assert_converged(client, settings, stale)
