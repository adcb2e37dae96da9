"""The AWS/RDS metrics the pipeline knows, and the statistics it stores: one entry each.

GetMetricData returns no units, so the catalogue is the source of the `unit` column and of
what counts as a metric. The metrics collected by default are those with a column in the
wide view.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Namespace:
    """Where a catalogue's metrics live in CloudWatch, and the dimension that names their subject
    (an Aurora cluster source would be `AWS/RDS` by `DBClusterIdentifier`, with its own
    catalogue)."""

    name: str
    dimension: str


RDS_INSTANCE_NAMESPACE = Namespace("AWS/RDS", "DBInstanceIdentifier")


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    wide_column: str | None = None  # collected by default, with a column in rds_metrics_wide
    health: bool = False  # one of the main metrics of the health summary


# The metrics of RDS_INSTANCE_NAMESPACE.
CATALOG: tuple[Metric, ...] = (
    Metric("CPUUtilization", "Percent", wide_column="cpu_utilization", health=True),
    Metric("DatabaseConnections", "Count", wide_column="database_connections", health=True),
    Metric("FreeableMemory", "Bytes", wide_column="freeable_memory", health=True),
    Metric("FreeStorageSpace", "Bytes", wide_column="free_storage_space", health=True),
    Metric("ReadIOPS", "Count/Second", wide_column="read_iops"),
    Metric("WriteIOPS", "Count/Second", wide_column="write_iops"),
    Metric("ReadLatency", "Seconds", wide_column="read_latency", health=True),
    Metric("WriteLatency", "Seconds", wide_column="write_latency", health=True),
    Metric("ReadThroughput", "Bytes/Second", wide_column="read_throughput"),
    Metric("WriteThroughput", "Bytes/Second", wide_column="write_throughput"),
    Metric("NetworkReceiveThroughput", "Bytes/Second", wide_column="network_receive_throughput"),
    Metric("NetworkTransmitThroughput", "Bytes/Second", wide_column="network_transmit_throughput"),
    Metric("DiskQueueDepth", "Count", wide_column="disk_queue_depth", health=True),
    Metric("SwapUsage", "Bytes", wide_column="swap_usage"),
    Metric("BinLogDiskUsage", "Bytes"),
    Metric("BurstBalance", "Percent"),
    Metric("CPUCreditBalance", "Count"),
    Metric("CPUCreditUsage", "Count"),
    Metric("CPUSurplusCreditBalance", "Count"),
    Metric("CPUSurplusCreditsCharged", "Count"),
    Metric("CheckpointLag", "Seconds"),
    Metric("ConnectionAttempts", "Count"),
    Metric("DBLoad", "Count"),
    Metric("DBLoadCPU", "Count"),
    Metric("DBLoadNonCPU", "Count"),
    Metric("EBSByteBalance%", "Percent"),
    Metric("EBSIOBalance%", "Percent"),
    Metric("FreeLocalStorage", "Bytes"),
    Metric("MaximumUsedTransactionIDs", "Count"),
    Metric("NetworkThroughput", "Bytes/Second"),
    Metric("OldestReplicationSlotLag", "Bytes"),
    Metric("ReplicaLag", "Seconds"),
    Metric("ReplicationSlotDiskUsage", "Bytes"),
    Metric("TransactionLogsDiskUsage", "Bytes"),
    Metric("TransactionLogsGeneration", "Bytes/Second"),
)

RDS_METRIC_UNITS: dict[str, str] = {m.name: m.unit for m in CATALOG}
DEFAULT_METRICS: tuple[str, ...] = tuple(m.name for m in CATALOG if m.wide_column)
WIDE_VIEW_COLUMNS: dict[str, str] = {m.name: m.wide_column for m in CATALOG if m.wide_column}
HEALTH_METRICS: tuple[str, ...] = tuple(m.name for m in CATALOG if m.health)

# CloudWatch statistic name -> rds_metrics column.
STATISTIC_COLUMNS: dict[str, str] = {
    "Average": "average",
    "Minimum": "minimum",
    "Maximum": "maximum",
    "Sum": "sum",
    "SampleCount": "sample_count",
}
DEFAULT_STATISTICS: tuple[str, ...] = tuple(STATISTIC_COLUMNS)

# The hourly tier (rds_metrics_hourly) keeps every statistic and these percentiles, as
# CloudWatch computes them from its samples (extended statistics), not from period averages.
HOURLY_PERCENTILES: tuple[str, ...] = ("p50", "p90", "p95", "p99")
HOURLY_STATISTIC_COLUMNS: dict[str, str] = {
    **STATISTIC_COLUMNS,
    **{percentile: percentile for percentile in HOURLY_PERCENTILES},
}
