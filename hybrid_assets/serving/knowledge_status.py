"""What the knowledge path holds right now, for the console: documents indexed (read from Weaviate),
the last ingest and its parse failures (the ingest manifest, ``knowledge/manifest.py``), and one tenant
per customer. Read-only: nothing here writes to the index or the data."""

from __future__ import annotations

from hybrid_assets.knowledge.accounts import AccountDataError, load_accounts
from hybrid_assets.knowledge.documents import file_set_version, scan_documents
from hybrid_assets.knowledge.manifest import read_manifest
from hybrid_assets.settings import Settings
from hybrid_assets.store.collections import (
    accounts_collection_name,
    document_chunks_of,
    existing_chunk_ids,
    knowledge_collection_name,
    tenant_object_counts,
)


def knowledge_version(settings: Settings) -> dict:
    """The knowledge an answer is given with: the last recorded ingest of the documents."""
    documents = read_manifest(settings).get("documents") or {}
    return {"version": documents.get("version"), "ingested_at": documents.get("finished_at"),
            "collection": documents.get("collection") or knowledge_collection_name(settings.embedding_model)}


def customers(settings: Settings) -> tuple[list[dict], str | None]:
    """The customers of the account files (id, company, plan), or an error naming the bad record."""
    try:
        accounts = load_accounts(settings.accounts_dir) if settings.accounts_dir.is_dir() else []
    except AccountDataError as exc:
        return [], str(exc)
    return [{"customer_id": a.customer_id, "company": str(a.get("company") or ""), "plan": str(a.get("plan") or ""),
             "source": a.source} for a in accounts], None


def knowledge_status(client, settings: Settings) -> dict:
    manifest = read_manifest(settings)
    last = manifest.get("documents") or {}
    failures: dict[str, str] = dict(last.get("failures") or {})
    refs = scan_documents(settings.docs_dir) if settings.docs_dir.is_dir() else []
    name = knowledge_collection_name(settings.embedding_model)
    stored = existing_chunk_ids(client.collections.get(name)) if client.collections.exists(name) else {}
    documents = []
    for ref in refs:
        chunks = len(stored.get(ref.doc_id, ()))
        if ref.doc_id in failures:
            state = "failed" if not chunks else "failed (earlier chunks kept)"
        else:
            state = "indexed" if chunks else "not indexed"
        documents.append({"doc_id": ref.doc_id, "size": ref.size, "kind": ref.kind, "chunks": chunks, "state": state,
                          "reason": failures.get(ref.doc_id)})
    on_disk = {ref.doc_id for ref in refs}
    for doc_id in sorted(set(stored) - on_disk):
        documents.append({"doc_id": doc_id, "size": None, "kind": "removed", "chunks": len(stored[doc_id]),
                          "state": "removed from the folder (indexed until the next ingest)", "reason": None})
    current = file_set_version(refs)

    accounts_name = accounts_collection_name(settings.embedding_model)
    counts = tenant_object_counts(client.collections.get(accounts_name)) if client.collections.exists(accounts_name) \
        else {}
    people, accounts_error = customers(settings)
    tenants = [{**c, "objects": counts.get(c["customer_id"]), "state": "indexed" if c["customer_id"] in counts
                else "no tenant yet"} for c in people]
    known = {c["customer_id"] for c in people}
    tenants += [{"customer_id": t, "company": "", "plan": "", "source": None, "objects": n,
                 "state": "not in the account files (removed at the next ingest)"}
                for t, n in counts.items() if t not in known]
    return {
        "collection": name,
        "documents_in_folder": len(refs),
        "documents_indexed": sum(1 for d in documents if d["chunks"] and d["kind"] != "removed"),
        "objects": sum(len(ids) for ids in stored.values()),
        "folder_version": current,
        "last_ingest": last or None,
        "up_to_date": bool(last) and last.get("version") == current,
        "failures": [{"doc_id": d, "reason": r} for d, r in sorted(failures.items())],
        "documents": documents,
        "accounts": {"collection": accounts_name, "last_ingest": manifest.get("accounts"), "error": accounts_error,
                     "tenants": tenants},
    }


def document_view(client, settings: Settings, doc_id: str, tenant: str | None = None) -> dict | None:
    """One document's stored chunks (a customer's account: from that customer's tenant only)."""
    name = accounts_collection_name(settings.embedding_model) if tenant else \
        knowledge_collection_name(settings.embedding_model)
    if not client.collections.exists(name):
        return None
    collection = client.collections.get(name)
    if tenant and tenant not in collection.tenants.get_by_names([tenant]):
        return None
    chunks = document_chunks_of(collection, doc_id, tenant=tenant)
    if not chunks:
        return None
    return {"doc_id": doc_id, "tenant": tenant, "title": chunks[0].title, "collection": name,
            "chunks": [{"chunk_id": c.chunk_id, "section": c.section, "text": c.text, "position": c.position}
                       for c in chunks]}
