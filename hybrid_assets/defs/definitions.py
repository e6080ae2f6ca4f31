"""The Dagster code location. Loading it imports no torch: heavy imports live inside asset bodies.

The two update paths are wired separately (defs/knowledge, defs/behaviour); RAFT (defs/raft) turns the pinned
snapshot into behaviour data; serving and evaluation are where the paths meet (on demand only).
"""

import dagster as dg

from hybrid_assets.defs import evaluation, raft, serving
from hybrid_assets.defs.behaviour import assets as behaviour_assets
from hybrid_assets.defs.behaviour import checks as behaviour_checks
from hybrid_assets.defs.behaviour.automation import behaviour_automation, behaviour_job, behaviour_sources_job
from hybrid_assets.defs.knowledge import assets as knowledge_assets
from hybrid_assets.defs.knowledge import checks as knowledge_checks
from hybrid_assets.defs.knowledge.automation import knowledge_automation, knowledge_job, knowledge_sources_job
from hybrid_assets.defs.resources import WeaviateResource
from hybrid_assets.settings import apply_offline_env

apply_offline_env()

serving_job = dg.define_asset_job(
    "serving_job",
    selection=dg.AssetSelection.groups("serving"),
    description="Answer the sample tickets with the current knowledge and promoted adapter.",
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([knowledge_assets, behaviour_assets, raft, serving, evaluation]),
    asset_checks=dg.load_asset_checks_from_modules([knowledge_checks, behaviour_checks]),
    jobs=[knowledge_job, knowledge_sources_job, behaviour_job, behaviour_sources_job, raft.raft_job, serving_job,
          evaluation.evaluation_job],
    sensors=[knowledge_automation, behaviour_automation],
    resources={"weaviate": WeaviateResource()},
)
