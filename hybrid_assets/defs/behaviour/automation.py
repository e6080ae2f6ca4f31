"""When the behaviour path runs: Dagster's declarative automation (conditions in ``defs/rules.py``).

``behaviour_automation`` evaluates only the behaviour group: ``data/behaviour`` is observed every
minute (content hash); a changed hash retrains (dataset -> adapter), and the adapter is promoted only
after the blocking gate passed. No schedule: unchanged data never retrains. It never looks at the
documents. ``behaviour_job`` runs the same assets by hand (CLI, demo).

Off by default: the first observation of the data on a new Dagster instance is a change, and it would
start a ~17-minute CPU training run nobody asked for. Turn it on in the UI when you want retraining
on data changes.
"""

import dagster as dg

from hybrid_assets.defs.behaviour.assets import GROUP, behaviour_data_files

SOURCES = dg.AssetSelection.assets(behaviour_data_files.key)

behaviour_job = dg.define_asset_job(
    "behaviour_job",
    selection=dg.AssetSelection.groups(GROUP) - SOURCES,
    description="Validate behaviour data, train + evaluate a QLoRA adapter, promote it if it beats the base.",
)

behaviour_sources_job = dg.define_asset_job(
    "behaviour_sources_job",
    selection=SOURCES,
    description="Observe data/behaviour (its content hash).",
)

behaviour_automation = dg.AutomationConditionSensorDefinition(
    "behaviour_automation",
    target=dg.AssetSelection.groups(GROUP, include_sources=True),  # the observations too
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=60,
    description="Observes data/behaviour every minute; retrains when its content hash changes (off by default).",
)
