"""When the behaviour path runs: only when the behaviour data's content hash changes (no schedule).

The sensor requests only the behaviour job; it never looks at the documents.
"""

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG  # not re-exported publicly in 1.13

from hybrid_assets.behaviour.dataset import dataset_version, find_behaviour_files
from hybrid_assets.defs.behaviour.assets import GROUP, behaviour_data_files
from hybrid_assets.settings import load_settings

behaviour_job = dg.define_asset_job(
    "behaviour_job",
    selection=dg.AssetSelection.groups(GROUP) - dg.AssetSelection.assets(behaviour_data_files.key),
    description="Validate behaviour data, train + evaluate a QLoRA adapter, promote it if it beats the base.",
)


def current_version() -> str:
    return dataset_version(find_behaviour_files(load_settings().behaviour_dir))[:16]


@dg.sensor(
    job=behaviour_job,
    minimum_interval_seconds=60,
    # Off until a person turns it on: its first tick would start a ~17-minute CPU training run that
    # nobody asked for on a first `make dev`. The documents sensor (cheap) runs by default.
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests the behaviour job when the content hash of data/behaviour changes.",
)
def behaviour_data_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    version = current_version()
    if version == context.cursor:
        return dg.SensorResult(skip_reason="behaviour data unchanged")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"behaviour-{version}")],
        asset_events=[dg.AssetObservation(asset_key=behaviour_data_files.key, tags={DATA_VERSION_TAG: version})],
        cursor=version,
    )
