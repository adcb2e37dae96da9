"""The job the gap sensor launches to re-collect settled hours that lack data."""

from dagster import (
    AssetSelection,
    define_asset_job,
)

from metrics_pipeline.collection.keys import RDS_METRICS

HEALING_PRIORITY = "-10"
# Marks the runs that bring history (the first look-back, hours an outage missed): the reports
# computed before them are computed again once they land (see automation.py).
HEALING_RUN_TAGS = {"metrics_pipeline/collection": "healing"}


healing_job = define_asset_job(
    "healing_job",
    selection=AssetSelection.assets(RDS_METRICS),
    description="Re-collects settled hours that lack data (launched by the gap sensor).",
    tags={"dagster/priority": HEALING_PRIORITY, **HEALING_RUN_TAGS},
)
