"""The code location Dagster loads: `dagster dev -m metrics_pipeline.definitions`."""

from dagster import Definitions

from metrics_pipeline.automation import derived_assets_automation
from metrics_pipeline.collection.assets import rds_instances, rds_metrics
from metrics_pipeline.collection.jobs import fresh_collection_job
from metrics_pipeline.collection.schedules import fresh_collection_schedule
from metrics_pipeline.healing.jobs import healing_job
from metrics_pipeline.healing.sensors import gap_healing_sensor
from metrics_pipeline.maintenance.jobs import backup_job, retention_job
from metrics_pipeline.maintenance.schedules import backup_schedule, retention_schedule
from metrics_pipeline.quality.checks import (
    rds_metrics_completeness,
    rds_metrics_freshness,
    rds_metrics_sanity,
)
from metrics_pipeline.quality.health import pipeline_health
from metrics_pipeline.quality.sensors import run_failure_alert
from metrics_pipeline.resources import build_resources
from metrics_pipeline.rightsizing.assets import rightsizing_report
from metrics_pipeline.rollups.assets import rds_metrics_daily, rds_metrics_hourly
from metrics_pipeline.settings import get_settings

defs = Definitions(
    assets=[
        rds_instances,
        rds_metrics,
        rds_metrics_hourly,
        rds_metrics_daily,
        pipeline_health,
        rightsizing_report,
    ],
    asset_checks=[rds_metrics_completeness, rds_metrics_freshness, rds_metrics_sanity],
    jobs=[fresh_collection_job, healing_job, retention_job, backup_job],
    schedules=[fresh_collection_schedule, retention_schedule, backup_schedule],
    sensors=[gap_healing_sensor, run_failure_alert, derived_assets_automation],
    resources=build_resources(get_settings()),
)
