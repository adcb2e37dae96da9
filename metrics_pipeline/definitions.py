"""The code location Dagster loads: `dagster dev -m metrics_pipeline.definitions`."""

from dagster import Definitions

from metrics_pipeline.assets import rds_instances, rds_metrics
from metrics_pipeline.resources import build_resources
from metrics_pipeline.settings import get_settings

defs = Definitions(
    assets=[rds_instances, rds_metrics],
    resources=build_resources(get_settings()),
)
