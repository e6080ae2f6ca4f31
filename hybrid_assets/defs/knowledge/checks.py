"""Asset checks of the knowledge path. Each one can fail: they compare stored state with the data."""


import dagster as dg

from hybrid_assets.defs.knowledge.assets import customer_accounts_index, document_chunks, knowledge_index
from hybrid_assets.defs.resources import WeaviateResource
from hybrid_assets.knowledge.accounts import load_accounts
from hybrid_assets.store.collections import accounts_collection_name, existing_chunk_ids, knowledge_collection_name


@dg.asset_check(asset=document_chunks, description="No chunk is empty or whitespace.")
def no_empty_chunks(document_chunks) -> dg.AssetCheckResult:
    empty = [c.chunk_id for chunks in document_chunks.chunks_by_doc.values() for c in chunks if not c.text.strip()]
    return dg.AssetCheckResult(passed=not empty, metadata={"empty_chunks": dg.MetadataValue.json(empty)})


@dg.asset_check(
    asset=document_chunks,
    description="Lists every document that failed to parse, with its reason (warns when any failed).",
)
def parse_failures_listed(document_chunks) -> dg.AssetCheckResult:
    failures = dict(sorted(document_chunks.failures.items()))
    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"failure_count": len(failures), "failures": dg.MetadataValue.json(failures)},
    )


@dg.asset_check(
    asset=knowledge_index,
    additional_ins={"document_chunks": dg.AssetIn("document_chunks")},
    description="Weaviate holds exactly the chunk ids of every parsed document, and its object count "
    "equals the chunk count (plus the kept chunks of documents that failed to parse).",
)
def weaviate_matches_chunks(weaviate: WeaviateResource, document_chunks) -> dg.AssetCheckResult:
    settings = weaviate.settings()
    with weaviate.client() as client:
        stored = existing_chunk_ids(client.collections.get(knowledge_collection_name(settings.embedding_model)))
    mismatched = [
        doc_id
        for doc_id, chunks in document_chunks.chunks_by_doc.items()
        if stored.get(doc_id, set()) != {c.chunk_id for c in chunks}
    ]
    unexpected = sorted(set(stored) - set(document_chunks.chunks_by_doc) - set(document_chunks.failures))
    expected = document_chunks.chunk_count + sum(len(stored.get(d, ())) for d in document_chunks.failures)
    count = sum(len(ids) for ids in stored.values())
    return dg.AssetCheckResult(
        passed=not mismatched and not unexpected and count == expected,
        metadata={
            "objects_in_weaviate": count,
            "expected_objects": expected,
            "documents_mismatched": dg.MetadataValue.json(mismatched),
            "documents_not_in_folder": dg.MetadataValue.json(unexpected),
        },
    )


@dg.asset_check(asset=customer_accounts_index, description="One tenant per customer in the account files.")
def one_tenant_per_customer(weaviate: WeaviateResource) -> dg.AssetCheckResult:
    settings = weaviate.settings()
    wanted = {a.customer_id for a in load_accounts(settings.accounts_dir)}
    with weaviate.client() as client:
        tenants = set(client.collections.get(accounts_collection_name(settings.embedding_model)).tenants.get())
    return dg.AssetCheckResult(
        passed=tenants == wanted,
        metadata={
            "tenants": len(tenants),
            "customers": len(wanted),
            "missing": dg.MetadataValue.json(sorted(wanted - tenants)),
            "extra": dg.MetadataValue.json(sorted(tenants - wanted)),
        },
    )
