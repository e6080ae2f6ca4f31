"""The Dagster code location. Loading it imports no torch: heavy imports live inside asset bodies."""


import dagster as dg

from hybrid_assets.defs.knowledge import assets as knowledge_assets
from hybrid_assets.defs.knowledge import checks as knowledge_checks
from hybrid_assets.defs.knowledge.automation import daily_reingest_schedule, documents_changed_sensor, knowledge_job
from hybrid_assets.defs.resources import WeaviateResource
from hybrid_assets.settings import apply_offline_env

apply_offline_env()

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([knowledge_assets]),
    asset_checks=dg.load_asset_checks_from_modules([knowledge_checks]),
    jobs=[knowledge_job],
    schedules=[daily_reingest_schedule],
    sensors=[documents_changed_sensor],
    resources={"weaviate": WeaviateResource()},
)
