"""The AWS/RDS metrics the pipeline knows, and the statistics it stores: one entry each.

GetMetricData returns no units, so the catalogue is the source of the `unit` column and of
what counts as a metric, and of which instances publish it: an instance is asked only for the
metrics of its kind (Aurora or not, its engine, its role, Serverless v2, Performance Insights
on), so that what it cannot publish is neither paid for nor counted missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Namespace:
    """Where a catalogue's metrics live in CloudWatch, and the dimension that names their subject
    (an Aurora cluster source would be `AWS/RDS` by `DBClusterIdentifier`, with its own
    catalogue)."""

    name: str
    dimension: str


RDS_INSTANCE_NAMESPACE = Namespace("AWS/RDS", "DBInstanceIdentifier")


# Which instances publish a metric: every instance, those outside Aurora, or Aurora's. From
# AWS's "Amazon CloudWatch metrics for Amazon RDS" and "... for Amazon Aurora" (its instance-
# and cluster-level tables: engine, writer or reader, Serverless v2), and "CloudWatch metrics
# for Performance Insights" (the DB load metrics).
EVERY, OUTSIDE_AURORA, AURORA = "every instance", "outside Aurora", "Aurora"
AURORA_MYSQL, AURORA_POSTGRESQL = "aurora-mysql", "aurora-postgresql"
WRITER, READER = "writer", "reader"  # an Aurora instance's role in its cluster
SERVERLESS_CLASS = "db.serverless"


@dataclass(frozen=True)
class InstanceKind:
    """What decides which metrics an instance publishes."""

    engine: str | None = None
    instance_class: str | None = None
    cluster_role: str | None = None  # writer or reader in an Aurora cluster
    performance_insights: bool = False

    @property
    def aurora(self) -> bool:
        return (self.engine or "").startswith("aurora")


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    wide_column: str | None = None  # collected by default, with a column in rds_metrics_wide
    health: bool = False  # one of the main metrics of the health summary
    published_by: str = EVERY
    engine: str | None = None  # only this Aurora engine's instances publish it
    role: str | None = None  # only the Aurora cluster's writer, or its readers
    serverless: bool = False  # only Aurora Serverless v2 instances (db.serverless)
    # Published by Performance Insights, and only in periods with load: an absent period is
    # an idle database, not a gap.
    while_loaded: bool = False
    default: bool = False  # collected by default without a wide column (Aurora's, DB load)

    def published(self, kind: InstanceKind) -> bool:
        """Whether an instance of this kind publishes the metric."""
        if self.published_by == OUTSIDE_AURORA and kind.aurora:
            return False
        if self.published_by == AURORA and not kind.aurora:
            return False
        return (
            (self.engine is None or kind.engine == self.engine)
            and (self.role is None or kind.cluster_role == self.role)
            and (not self.serverless or kind.instance_class == SERVERLESS_CLASS)
            and (not self.while_loaded or kind.performance_insights)
        )


def _aurora(
    name: str,
    unit: str,
    *,
    engine: str | None = None,
    role: str | None = None,
    serverless: bool = False,
    default: bool = False,
) -> Metric:
    return Metric(
        name,
        unit,
        published_by=AURORA,
        engine=engine,
        role=role,
        serverless=serverless,
        default=default,
    )


# The metrics of RDS_INSTANCE_NAMESPACE.
CATALOG: tuple[Metric, ...] = (
    Metric("CPUUtilization", "Percent", wide_column="cpu_utilization", health=True),
    Metric("DatabaseConnections", "Count", wide_column="database_connections", health=True),
    Metric("FreeableMemory", "Bytes", wide_column="freeable_memory", health=True),
    # Aurora's storage is the cluster's volume (VolumeBytesUsed): its instances have none.
    Metric(
        "FreeStorageSpace",
        "Bytes",
        wide_column="free_storage_space",
        health=True,
        published_by=OUTSIDE_AURORA,
    ),
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
    Metric("BinLogDiskUsage", "Bytes", published_by=OUTSIDE_AURORA),
    Metric("BurstBalance", "Percent", published_by=OUTSIDE_AURORA),
    Metric("CPUCreditBalance", "Count"),
    Metric("CPUCreditUsage", "Count"),
    Metric("CPUSurplusCreditBalance", "Count"),
    Metric("CPUSurplusCreditsCharged", "Count"),
    Metric("CheckpointLag", "Seconds", published_by=OUTSIDE_AURORA),
    Metric("ConnectionAttempts", "Count"),
    Metric("DBLoad", "Count", while_loaded=True, default=True),
    Metric("DBLoadCPU", "Count", while_loaded=True),
    Metric("DBLoadNonCPU", "Count", while_loaded=True),
    Metric("DBLoadRelativeToNumVCPUs", "None", while_loaded=True, default=True),
    Metric("EBSByteBalance%", "Percent", published_by=OUTSIDE_AURORA),
    Metric("EBSIOBalance%", "Percent", published_by=OUTSIDE_AURORA),
    Metric("FreeLocalStorage", "Bytes"),
    Metric("MaximumUsedTransactionIDs", "Count"),
    Metric("NetworkThroughput", "Bytes/Second"),
    Metric("OldestReplicationSlotLag", "Bytes"),
    Metric("ReplicaLag", "Seconds", published_by=OUTSIDE_AURORA),
    Metric("ReplicationSlotDiskUsage", "Bytes"),
    Metric("TransactionLogsDiskUsage", "Bytes"),
    Metric("TransactionLogsGeneration", "Bytes/Second", published_by=OUTSIDE_AURORA),
    # Aurora's own instance metrics (AWS's "Amazon CloudWatch metrics for Amazon Aurora").
    _aurora("AuroraReplicaLag", "Milliseconds", role=READER, default=True),
    _aurora("AuroraReplicaLagMaximum", "Milliseconds", role=WRITER),
    _aurora("AuroraReplicaLagMinimum", "Milliseconds", role=WRITER),
    _aurora("BufferCacheHitRatio", "Percent", default=True),
    _aurora("CommitLatency", "Milliseconds", default=True),
    _aurora("CommitThroughput", "Count/Second"),
    _aurora("Deadlocks", "Count/Second", default=True),
    _aurora("DMLLatency", "Milliseconds", engine=AURORA_MYSQL, default=True),
    _aurora("DMLThroughput", "Count/Second", engine=AURORA_MYSQL),
    _aurora("SelectLatency", "Milliseconds", engine=AURORA_MYSQL),
    _aurora("Queries", "Count/Second", engine=AURORA_MYSQL),
    _aurora("EngineUptime", "Seconds"),
    _aurora("StorageNetworkThroughput", "Bytes/Second"),
    _aurora("ServerlessDatabaseCapacity", "Count", serverless=True, default=True),
    _aurora("ACUUtilization", "Percent", serverless=True, default=True),
)

RDS_METRIC_UNITS: dict[str, str] = {m.name: m.unit for m in CATALOG}
METRICS_BY_NAME: dict[str, Metric] = {m.name: m for m in CATALOG}
# What a plain RDS instance (outside Aurora, without Performance Insights) publishes by default.
RDS_INSTANCE_DEFAULTS: tuple[str, ...] = tuple(m.name for m in CATALOG if m.wide_column)
DEFAULT_METRICS: tuple[str, ...] = tuple(m.name for m in CATALOG if m.wide_column or m.default)
WIDE_VIEW_COLUMNS: dict[str, str] = {m.name: m.wide_column for m in CATALOG if m.wide_column}
HEALTH_METRICS: tuple[str, ...] = tuple(m.name for m in CATALOG if m.health)


def published_metrics(metrics: Sequence[str], kind: InstanceKind) -> tuple[str, ...]:
    """Those of `metrics` an instance of `kind` publishes: what is worth asking CloudWatch."""
    return tuple(name for name in metrics if METRICS_BY_NAME[name].published(kind))


def expected_metrics(metrics: Sequence[str], kind: InstanceKind) -> tuple[str, ...]:
    """Those it publishes every period: the ones whose absence is a gap."""
    return tuple(
        name for name in published_metrics(metrics, kind) if not METRICS_BY_NAME[name].while_loaded
    )


# Aurora's cluster-level metrics: AWS/RDS by DBClusterIdentifier, collected into
# rds_cluster_metrics.
RDS_CLUSTER_NAMESPACE = Namespace("AWS/RDS", "DBClusterIdentifier")


@dataclass(frozen=True)
class ClusterKind:
    """What decides which metrics an Aurora cluster publishes."""

    engine: str | None = None
    serverless: bool = False  # Serverless v2 capacity configured
    global_database: bool = False  # a member of an Aurora Global Database


@dataclass(frozen=True)
class ClusterMetric:
    name: str
    unit: str
    engine: str | None = None  # only this Aurora engine's clusters publish it
    serverless: bool = False  # only clusters with Serverless v2 capacity
    # Only a Global Database's clusters, and of those only the secondary regions' publish it:
    # an absent period is not a gap.
    global_database: bool = False
    default: bool = True

    def published(self, kind: ClusterKind) -> bool:
        return (
            (self.engine is None or kind.engine == self.engine)
            and (not self.serverless or kind.serverless)
            and (not self.global_database or kind.global_database)
        )


# AWS's "Cluster-level metrics for Amazon Aurora".
CLUSTER_CATALOG: tuple[ClusterMetric, ...] = (
    ClusterMetric("VolumeBytesUsed", "Bytes"),
    ClusterMetric("VolumeReadIOPs", "Count"),
    ClusterMetric("VolumeWriteIOPs", "Count"),
    ClusterMetric("ServerlessDatabaseCapacity", "Count", serverless=True),
    ClusterMetric("AuroraVolumeBytesLeftTotal", "Bytes", engine=AURORA_MYSQL, default=False),
    ClusterMetric("AuroraGlobalDBReplicationLag", "Milliseconds", global_database=True),
    ClusterMetric("AuroraGlobalDBRPOLag", "Milliseconds", global_database=True),
    ClusterMetric("AuroraGlobalDBReplicatedWriteIO", "Count", global_database=True, default=False),
    ClusterMetric("AuroraGlobalDBDataTransferBytes", "Bytes", global_database=True, default=False),
    ClusterMetric("BackupRetentionPeriodStorageUsed", "Bytes", default=False),
    ClusterMetric("SnapshotStorageUsed", "Bytes", default=False),
    ClusterMetric("TotalBackupStorageBilled", "Bytes", default=False),
)
CLUSTER_METRIC_UNITS: dict[str, str] = {m.name: m.unit for m in CLUSTER_CATALOG}
CLUSTER_METRICS_BY_NAME: dict[str, ClusterMetric] = {m.name: m for m in CLUSTER_CATALOG}
DEFAULT_CLUSTER_METRICS: tuple[str, ...] = tuple(m.name for m in CLUSTER_CATALOG if m.default)


def published_cluster_metrics(metrics: Sequence[str], kind: ClusterKind) -> tuple[str, ...]:
    return tuple(name for name in metrics if CLUSTER_METRICS_BY_NAME[name].published(kind))


def expected_cluster_metrics(metrics: Sequence[str], kind: ClusterKind) -> tuple[str, ...]:
    """Those a cluster of `kind` publishes every period: a Global Database's lag is published
    in its secondary regions only."""
    return tuple(
        name
        for name in published_cluster_metrics(metrics, kind)
        if not CLUSTER_METRICS_BY_NAME[name].global_database
    )


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


# Performance Insights (the `pi` API): its load metric, the periods GetResourceMetrics offers
# that fit in an hour's partition (it also offers 86400), and the dimension groups collected,
# each with the dimension that names a key and the one that says its type (if any). From
# AWS's Performance Insights API reference and "Dimensions for Amazon RDS".
PI_LOAD_METRIC = "db.load.avg"
PI_PERIODS = (1, 60, 300, 3600)
PI_TOTAL = "total"  # the dimension_group of an instance's whole load
PI_OTHER = "other"  # the dimension_key of a group's load beyond the keys PI returned


@dataclass(frozen=True)
class PiGroup:
    name: str
    key: str  # the dimension whose value is the key's identity
    key_type: str | None = None  # the dimension giving its type, if the group has one
    extra: tuple[str, ...] = ()  # further dimensions asked for
    personal: bool = False  # names people: kept and exported apart

    @property
    def dimensions(self) -> list[str]:
        return [self.key, *([self.key_type] if self.key_type else []), *self.extra]


PI_STATEMENT_GROUP = "db.sql_tokenized"
PI_DIGEST_DIMENSIONS = ("db.sql_tokenized.db_id", "db.sql_tokenized.statement")
PI_GROUPS = (
    PiGroup("db.wait_event", "db.wait_event.name", "db.wait_event.type"),
    PiGroup(PI_STATEMENT_GROUP, "db.sql_tokenized.id", extra=PI_DIGEST_DIMENSIONS),
    PiGroup("db", "db.name"),
    PiGroup("db.user", "db.user.name", personal=True),
    PiGroup("db.host", "db.host.name", personal=True),
)
# The statements with their literals (opt-in: METRICS_PI_FULL_SQL_TEXT), whose whole text
# GetDimensionKeyDetails gives (PI's other calls cut a statement at 500 bytes).
PI_SQL_GROUP = PiGroup(
    "db.sql", "db.sql.id", extra=("db.sql.tokenized_id", "db.sql.statement"), personal=True
)
PI_STATEMENT_BYTES = 500  # what GetResourceMetrics returns of a statement at most


def pi_groups(full_sql_text: bool) -> tuple[PiGroup, ...]:
    """The groups collected: the statements with literals only when asked."""
    return (*PI_GROUPS, PI_SQL_GROUP) if full_sql_text else PI_GROUPS
