"""The collection's asset keys and group, for the domains that depend on its assets without
building them."""

from dagster import AssetKey

from metrics_pipeline.warehouse.schema import INSTANCES_TABLE, METRICS_TABLE

GROUP = "rds"
RDS_INSTANCES = AssetKey(INSTANCES_TABLE)
RDS_METRICS = AssetKey(METRICS_TABLE)
