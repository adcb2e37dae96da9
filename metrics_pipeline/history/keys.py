"""The hourly tier's asset key, for the domains that depend on it without building it."""

from dagster import AssetKey

from metrics_pipeline.warehouse.schema import HOURLY_TABLE

RDS_METRICS_HOURLY = AssetKey(HOURLY_TABLE)
