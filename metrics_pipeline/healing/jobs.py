"""The job the gap sensor launches to re-collect settled hours that lack data."""

from dagster import (
    AssetSelection,
    define_asset_job,
)

from metrics_pipeline.collection.keys import RDS_METRICS

HEALING_PRIORITY = "-10"


healing_job = define_asset_job(
    "healing_job",
    selection=AssetSelection.assets(RDS_METRICS),
    description="Re-collects settled hours that lack data (launched by the gap sensor).",
    tags={"dagster/priority": HEALING_PRIORITY},
)
