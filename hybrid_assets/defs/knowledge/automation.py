"""When the knowledge path runs: Dagster's declarative automation (conditions in ``defs/rules.py``).

``knowledge_automation`` evaluates only the knowledge group: the documents and accounts folders are
observed every minute (content hash), chunks and indexes follow a changed hash, and re-sync daily at
03:00. It never looks at behaviour data. ``knowledge_job`` runs the same assets by hand (CLI, demo).
"""

import dagster as dg

from hybrid_assets.defs.knowledge.assets import GROUP, customer_account_files, knowledge_documents

SOURCES = dg.AssetSelection.assets(knowledge_documents.key, customer_account_files.key)

knowledge_job = dg.define_asset_job(
    "knowledge_job",
    selection=dg.AssetSelection.groups(GROUP) - SOURCES,
    description="Parse, chunk, embed and sync documents and accounts into Weaviate.",
)

knowledge_sources_job = dg.define_asset_job(
    "knowledge_sources_job",
    selection=SOURCES,
    description="Observe the documents and accounts folders (their content hashes).",
)

knowledge_automation = dg.AutomationConditionSensorDefinition(
    "knowledge_automation",
    target=dg.AssetSelection.groups(GROUP, include_sources=True),  # the observations too
    default_status=dg.DefaultSensorStatus.RUNNING,  # cheap: a no-change observation writes nothing
    minimum_interval_seconds=30,
    description="Observes documents/accounts every minute; re-indexes what changed, and daily at 03:00.",
)
