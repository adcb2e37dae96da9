"""The code location Dagster loads: `dagster dev -m metrics_pipeline.definitions`.

The definitions are built when Dagster loads them, from the settings in the environment of
that moment; importing this module (or any other) reads no environment.
"""

import sys
from collections.abc import Sequence

from dagster import DagsterError, Definitions, definitions, multiprocess_executor

from metrics_pipeline.automation import derived_assets_automation
from metrics_pipeline.healing.sensors import build_gap_healing_sensor
from metrics_pipeline.maintenance.jobs import backup_job, build_retention_job
from metrics_pipeline.maintenance.liveness import build_run_liveness_check
from metrics_pipeline.maintenance.schedules import backup_schedule, retention_schedule
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.quality.checks import build_checks
from metrics_pipeline.quality.health import pipeline_health
from metrics_pipeline.quality.sensors import build_run_failure_alert
from metrics_pipeline.resources import build_resources
from metrics_pipeline.rightsizing.assets import rightsizing_report
from metrics_pipeline.rollups.assets import build_rollup_assets
from metrics_pipeline.settings import ConfigError, Settings, load_settings
from metrics_pipeline.source_registry import SOURCES
from metrics_pipeline.sources.source import Source
from metrics_pipeline.warehouse.tables import INSIGHTS_TIER, PERSONAL_TIER

# Each step in a process of its own, as with Dagster's default executor, but forked from a
# server that imported the pipeline once for the run, not a new interpreter importing it for
# every step (about 1.5 s of each step's start on 2 cores; a run is 9 steps and more).
STEP_EXECUTOR = multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": [__name__]}}}
)


class InvalidSettingsError(DagsterError):
    """A setting the pipeline cannot use. Raised as a Dagster error, Dagster shows its one line
    as the code location's error (in the UI and the CLI) instead of a generic load failure
    with the line buried in the cause's traceback."""


def build_definitions(settings: Settings, sources: Sequence[Source] = SOURCES) -> Definitions:
    partitions = Partitions.starting(settings.partitions_start)
    pipeline = Definitions(
        assets=[*build_rollup_assets(partitions), pipeline_health, rightsizing_report],
        asset_checks=build_checks(settings, sources),
        jobs=[
            build_retention_job(
                partitions.hourly,
                settings.hourly_retention_days,
                {
                    INSIGHTS_TIER: settings.pi_retention_days,
                    PERSONAL_TIER: settings.pi_personal_retention_days,
                },
            ),
            backup_job,
        ],
        schedules=[retention_schedule, backup_schedule],
        sensors=[
            build_gap_healing_sensor(settings, sources, partitions),
            build_run_failure_alert(settings),
            derived_assets_automation,
            build_run_liveness_check(),
        ],
        resources=build_resources(settings),
        executor=STEP_EXECUTOR,
    )
    return Definitions.merge(
        *(source.definitions(settings, partitions) for source in sources), pipeline
    )


@definitions
def defs() -> Definitions:
    try:
        settings = load_settings()
    except ConfigError as error:
        # First on the terminal of any dagster command, before whatever Dagster prints after.
        print(f"metrics_pipeline cannot load: {error}", file=sys.stderr, flush=True)
        raise InvalidSettingsError(str(error)) from None
    return build_definitions(settings)
