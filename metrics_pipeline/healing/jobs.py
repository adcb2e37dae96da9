"""The job the gap sensor launches to re-collect settled hours that lack data."""

from dagster import (
    AssetSelection,
    define_asset_job,
)

from metrics_pipeline.collection.keys import RDS_METRICS
from metrics_pipeline.dagster_runs import HEALING_JOB_NAME, HEALING_RUN_TAGS

HEALING_PRIORITY = "-10"


healing_job = define_asset_job(
    HEALING_JOB_NAME,
    selection=AssetSelection.assets(RDS_METRICS),
    description="Re-collects settled hours that lack data (launched by the gap sensor).",
    tags={"dagster/priority": HEALING_PRIORITY, **HEALING_RUN_TAGS},
)
