"""The metric sources this pipeline collects: registering one here is all the gap sensor, the
progress line, the checks and the definitions need to know of it."""

from metrics_pipeline.collection.clusters import CLOUDWATCH_RDS_CLUSTERS
from metrics_pipeline.collection.source import CLOUDWATCH_RDS
from metrics_pipeline.history.source import CLOUDWATCH_RDS_HOURLY
from metrics_pipeline.insights.source import PERFORMANCE_INSIGHTS_LOAD
from metrics_pipeline.sources.source import Source

SOURCES: tuple[Source, ...] = (
    CLOUDWATCH_RDS,
    CLOUDWATCH_RDS_CLUSTERS,
    PERFORMANCE_INSIGHTS_LOAD,
    CLOUDWATCH_RDS_HOURLY,
)
