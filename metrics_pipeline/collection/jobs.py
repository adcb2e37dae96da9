"""The fresh collection job that the schedule (and the first collection) launch."""

from dagster import (
    AssetSelection,
    define_asset_job,
)

from metrics_pipeline.collection.keys import RDS_CLUSTER_METRICS, RDS_INSTANCES, RDS_METRICS

# Run-queue priorities: a fresh tick goes ahead of healing backfills waiting in the queue.
FRESH_PRIORITY = "10"


fresh_collection_job = define_asset_job(
    "fresh_collection_job",
    selection=AssetSelection.assets(RDS_INSTANCES, RDS_METRICS, RDS_CLUSTER_METRICS),
    description=(
        "Refreshes the inventory, then collects the newest hours of the instances and the "
        "Aurora clusters (one run per tick)."
    ),
    tags={"dagster/priority": FRESH_PRIORITY},
)
