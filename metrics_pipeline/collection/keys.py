"""The collection's asset keys, for the domains that depend on its assets without building
them."""

from dagster import AssetKey

from metrics_pipeline.warehouse.schema import (
    CLUSTER_METRICS_TABLE,
    INSTANCES_TABLE,
    METRICS_TABLE,
    PI_LOAD_TABLE,
)

RDS_INSTANCES = AssetKey(INSTANCES_TABLE)
RDS_METRICS = AssetKey(METRICS_TABLE)
RDS_CLUSTER_METRICS = AssetKey(CLUSTER_METRICS_TABLE)
RDS_PI_LOAD = AssetKey(PI_LOAD_TABLE)
