"""Knowledge assets: run when documents or account data change, and daily (``defs/rules.py``)."""


import dagster as dg

from hybrid_assets.defs.resources import WeaviateResource
from hybrid_assets.defs.rules import OBSERVE_EVERY_MINUTE, ON_PARENT_CHANGE_OR_DAILY
from hybrid_assets.knowledge.accounts import load_accounts
from hybrid_assets.knowledge.documents import file_set_version, scan_documents
from hybrid_assets.knowledge.pipeline import (
    build_document_chunks,
    count_objects,
    index_accounts,
    index_documents,
    record_account_ingest,
    record_document_ingest,
)
from hybrid_assets.settings import load_settings
from hybrid_assets.store.collections import accounts_collection_name, knowledge_collection_name

GROUP = "knowledge"
RUNS_WHEN = {"runs_when": "documents_changed.daily"}


@dg.observable_source_asset(
    group_name=GROUP,
    tags={"dagster/kind/file": ""},  # `kinds=` is not kept on source assets in dagster 1.13
    automation_condition=OBSERVE_EVERY_MINUTE,
    description="Files under data/knowledge/docs, observed by content hash (the data version of the set).",
)
def knowledge_documents() -> dg.DataVersion:
    return dg.DataVersion(file_set_version(scan_documents(load_settings().docs_dir)))


@dg.observable_source_asset(
    group_name=GROUP,
    tags={"dagster/kind/file": ""},  # `kinds=` is not kept on source assets in dagster 1.13
    automation_condition=OBSERVE_EVERY_MINUTE,
    description="Customer account files under data/knowledge/accounts, observed by content hash.",
)
def customer_account_files() -> dg.DataVersion:
    return dg.DataVersion(file_set_version(scan_documents(load_settings().accounts_dir)))


@dg.asset(
    group_name=GROUP,
    kinds={"python", "unstructured"},
    deps=[knowledge_documents],
    tags=RUNS_WHEN,
    automation_condition=ON_PARENT_CHANGE_OR_DAILY,
    description="Documents parsed with unstructured and chunked by section (ids = uuid5 of doc id + content).",
)
def document_chunks(context: dg.AssetExecutionContext):
    settings = load_settings()
    refs = scan_documents(settings.docs_dir)
    result = build_document_chunks(refs, settings.cache_dir)
    for doc_id, reason in sorted(result.failures.items()):
        context.log.warning(f"parse failure: {doc_id}: {reason}")
    failures_md = "\n".join(f"| `{d}` | {r} |" for d, r in sorted(result.failures.items()))
    return dg.Output(
        result,
        data_version=dg.DataVersion(file_set_version(refs)),
        metadata={
            "documents": len(refs),
            "chunks": result.chunk_count,
            "parsed_this_run": len(result.parsed),
            "parse_failures": len(result.failures),
            "failures": dg.MetadataValue.md(
                "| document | reason |\n|---|---|\n" + failures_md if failures_md else "none"
            ),
        },
    )


@dg.asset(
    group_name=GROUP,
    kinds={"weaviate"},
    tags=RUNS_WHEN,
    automation_condition=ON_PARENT_CHANGE_OR_DAILY,
    description="Chunks embedded locally and synced into Weaviate: only new chunk ids are embedded and "
    "written, stale ones deleted afterwards; documents that failed to parse keep their chunks.",
)
def knowledge_index(context: dg.AssetExecutionContext, weaviate: WeaviateResource, document_chunks) -> dg.MaterializeResult:
    settings = weaviate.settings()
    with weaviate.client() as client:
        report = index_documents(client, settings, document_chunks)
        name = knowledge_collection_name(settings.embedding_model)
        total = count_objects(client, name)
        record_document_ingest(client, settings, document_chunks, report)  # what the console shows
    context.log.info(
        f"{len(report.inserted)} chunks written, {len(report.deleted)} deleted, "
        f"{report.unchanged_docs} documents unchanged"
    )
    return dg.MaterializeResult(
        metadata={
            "collection": name,
            "objects_in_weaviate": total,
            "chunks_written": len(report.inserted),
            "chunks_deleted": len(report.deleted),
            "documents_changed": dg.MetadataValue.json(report.changed_docs),
            "documents_removed": dg.MetadataValue.json(report.removed_docs),
            "documents_unchanged": report.unchanged_docs,
            "embed_seconds": round(report.embed_seconds, 3),
            "write_seconds": round(report.write_seconds, 3),
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"weaviate"},
    deps=[customer_account_files],
    tags=RUNS_WHEN,
    automation_condition=ON_PARENT_CHANGE_OR_DAILY,
    description="Customer accounts in a multi-tenant collection, one tenant per customer.",
)
def customer_accounts_index(weaviate: WeaviateResource) -> dg.MaterializeResult:
    settings = weaviate.settings()
    accounts = load_accounts(settings.accounts_dir)
    with weaviate.client() as client:
        reports = index_accounts(client, settings, accounts)
    record_account_ingest(settings, reports)
    return dg.MaterializeResult(
        metadata={
            "collection": accounts_collection_name(settings.embedding_model),
            "tenants": len(reports),
            "chunks_written": sum(len(r.inserted) for r in reports.values()),
            "chunks_deleted": sum(len(r.deleted) for r in reports.values()),
            "customers": dg.MetadataValue.json(sorted(reports)),
        }
    )
