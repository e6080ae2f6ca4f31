"""When the knowledge path runs: a sensor on the documents/accounts folders and a daily schedule.

The sensor requests only the knowledge job; it never looks at behaviour data.
"""


import json

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG  # not re-exported publicly in 1.13

from hybrid_assets.defs.knowledge.assets import (
    GROUP,
    customer_account_files,
    knowledge_documents,
)
from hybrid_assets.knowledge.documents import file_set_version, scan_documents
from hybrid_assets.settings import load_settings

knowledge_job = dg.define_asset_job(
    "knowledge_job",
    selection=dg.AssetSelection.groups(GROUP) - dg.AssetSelection.assets(knowledge_documents.key, customer_account_files.key),
    description="Parse, chunk, embed and sync documents and accounts into Weaviate.",
)

daily_reingest_schedule = dg.ScheduleDefinition(
    name="daily_reingest_schedule",
    job=knowledge_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-ingest every night; a no-change run writes nothing.",
)


def current_versions() -> dict[str, str]:
    settings = load_settings()
    return {
        "docs": file_set_version(scan_documents(settings.docs_dir)),
        "accounts": file_set_version(scan_documents(settings.accounts_dir)),
    }


def source_observations(versions: dict[str, str], previous: dict[str, str] | None = None) -> list[dg.AssetObservation]:
    """Observations carrying the sources' new data versions, so Dagster marks downstream assets stale."""
    previous = previous or {}
    return [
        dg.AssetObservation(asset_key=key, tags={DATA_VERSION_TAG: versions[part]})
        for key, part in ((knowledge_documents.key, "docs"), (customer_account_files.key, "accounts"))
        if previous.get(part) != versions[part]
    ]


@dg.sensor(
    job=knowledge_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests the knowledge job when the content hash of the documents or accounts changes.",
)
def documents_changed_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    versions = current_versions()
    previous = json.loads(context.cursor) if context.cursor else {}
    if versions == previous:
        return dg.SensorResult(skip_reason="documents and accounts unchanged")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"docs-{versions['docs']}-acc-{versions['accounts']}")],
        asset_events=source_observations(versions, previous),
        cursor=json.dumps(versions),
    )
