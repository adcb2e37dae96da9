"""The collection's asset keys, for the domains that depend on its assets without building
them."""

from dagster import AssetKey

from metrics_pipeline.warehouse.schema import INSTANCES_TABLE, METRICS_TABLE

RDS_INSTANCES = AssetKey(INSTANCES_TABLE)
RDS_METRICS = AssetKey(METRICS_TABLE)
