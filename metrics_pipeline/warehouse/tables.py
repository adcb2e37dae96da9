"""Every warehouse table, declared once: its columns (name, DuckDB type, nullability, what it
holds and in which unit), its primary key, its time column and whether it is derived.

The DDL of each storage kind, the Arrow schemas of the writers, the column schemas of the
Dagster catalog (metadata.py), the structure check and the retention's time columns are all
made from these declarations, so a column added here is added everywhere. No Dagster here:
the analysts' commands import the schema without loading it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from metrics_pipeline.catalog import HOURLY_PERCENTILES, STATISTIC_COLUMNS

# The DuckDB types the tables use, as information_schema spells them, and their Arrow types.
ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "BOOLEAN": pa.bool_(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "TIMESTAMP": pa.timestamp("us"),
    "MAP(VARCHAR, VARCHAR)": pa.map_(pa.string(), pa.string()),
}


# The tiers of history: CloudWatch's periods as collected, CloudWatch's own hourly statistics,
# and days computed from those hours. Each has its own retention setting.
RAW_TIER, HOURLY_TIER, DAILY_TIER = "raw", "hourly", "daily"
TIERS = (RAW_TIER, HOURLY_TIER, DAILY_TIER)
# Performance Insights' load, and what of it names people (SQL text, users, hosts): each kept
# as long as its own retention setting says.
INSIGHTS_TIER, PERSONAL_TIER = "insights", "insights_personal"
RETENTION_TIERS = (*TIERS, INSIGHTS_TIER, PERSONAL_TIER)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # a key of ARROW_TYPES
    description: str  # what it holds, with its unit
    nullable: bool = True

    def __post_init__(self) -> None:
        if self.type not in ARROW_TYPES:
            raise ValueError(f"column {self.name}: type {self.type} is not one of ARROW_TYPES")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    # What retention trims the table by (rows older than METRICS_RETENTION_DAYS leave).
    time_column: str | None = None
    # Whether a DuckLake stores the table in files per day of its time column, so that
    # rewriting an hour touches one day's files.
    lake_files_per_day: bool = False
    # Holds only what can be computed again from the other tables.
    derived: bool = False
    # The schema version that added it (warehouse/migrations.py): an older warehouse lacks it
    # until migrated.
    added_in: int = 0
    # The tier whose retention setting trims it (maintenance/retention.py); a table without a
    # time column is never trimmed.
    tier: str = "raw"

    def __post_init__(self) -> None:
        names = self.column_names
        unknown = [
            name
            for name in (*self.primary_key, *([self.time_column] if self.time_column else []))
            if name not in names
        ]
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"table {self.name}: unknown or repeated columns {unknown or names}")
        if self.lake_files_per_day and not self.time_column:
            raise ValueError(f"table {self.name}: files per day need a time column")
        if self.tier not in RETENTION_TIERS:
            raise ValueError(f"table {self.name}: tier {self.tier} is not one of {RETENTION_TIERS}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def required(self, column: Column) -> bool:
        """NOT NULL in a DuckDB file, where every primary key column is."""
        return not column.nullable or column.name in self.primary_key

    def create_sql(self, *, keys: bool) -> str:
        """CREATE TABLE IF NOT EXISTS, with the primary key when `keys` (DuckLake has none:
        its writers' delete-then-insert keeps the rows unique)."""
        lines = [f"    {c.name} {c.type}{'' if c.nullable else ' NOT NULL'}" for c in self.columns]
        if keys and self.primary_key:
            lines.append(f"    PRIMARY KEY ({', '.join(self.primary_key)})")
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n" + ",\n".join(lines) + "\n);"

    def arrow_schema(self, names: Iterable[str] | None = None) -> pa.Schema:
        """The Arrow schema of the table's columns (those of `names`, in their order)."""
        by_name = {column.name: column for column in self.columns}
        chosen = self.columns if names is None else [by_name[name] for name in names]
        return pa.schema(
            [pa.field(c.name, ARROW_TYPES[c.type], nullable=not self.required(c)) for c in chosen]
        )

    def check_row(self, row: Iterable[str]) -> None:
        """Raises ValueError naming the keys of a row to write that are not the table's columns."""
        unknown = sorted(set(row) - set(self.column_names))
        if unknown:
            raise ValueError(f"{self.name} has no column {', '.join(unknown)}")


ACCOUNT = Column(
    "account_id",
    "VARCHAR",
    "AWS account id (12 digits): the account collected (its own, an assumed role's)",
    nullable=False,
)
REGION = Column("region", "VARCHAR", "AWS region, e.g. us-east-1", nullable=False)
INSTANCE = (
    ACCOUNT,
    REGION,
    Column(
        "instance_id",
        "VARCHAR",
        "RDS DB instance identifier (the same one in two accounts is two instances)",
        nullable=False,
    ),
)
INSTANCE_KEY = tuple(column.name for column in INSTANCE)
METRIC = Column("metric", "VARCHAR", "CloudWatch AWS/RDS metric name", nullable=False)
UNIT = Column("unit", "VARCHAR", "the metric's CloudWatch unit (Percent, Bytes, Count/Second…)")

_STATISTICS = {
    "Average": "mean of the period's samples, in the metric's unit",
    "Minimum": "lowest sample of the period, in the metric's unit",
    "Maximum": "highest sample of the period, in the metric's unit",
    "Sum": "sum of the period's samples, in the metric's unit",
    "SampleCount": "number of samples CloudWatch aggregated in the period (a count)",
}

# What RDS says an instance is: the inventory holds its present, its history every version.
DBI_RESOURCE_ID = Column(
    "dbi_resource_id",
    "VARCHAR",
    "RDS's own identifier of the instance (DbiResourceId): a database deleted and created "
    "again under the same name has a new one",
)
DESCRIPTION = (
    Column("engine", "VARCHAR", "database engine, e.g. postgres, mysql"),
    Column("engine_version", "VARCHAR", "engine version as RDS reports it"),
    Column("instance_class", "VARCHAR", "DB instance class, e.g. db.r6g.large"),
    Column("allocated_storage_gb", "INTEGER", "allocated storage, in GiB"),
    Column("multi_az", "BOOLEAN", "whether the instance is Multi-AZ"),
)
CREATE_TIME = Column("create_time", "TIMESTAMP", "when the instance was created, UTC")
LAST_SEEN = Column(
    "last_seen",
    "TIMESTAMP",
    "last discovery that listed it, UTC (a deleted instance keeps its last)",
    nullable=False,
)
# An Aurora instance's place in its cluster (DescribeDBClusters' members): a failover or a
# reader added is a new version of the instance.
CLUSTER_ID = Column(
    "cluster_id",
    "VARCHAR",
    "the Aurora DB cluster (DBClusterIdentifier) the instance belongs to; NULL outside one",
)
CLUSTER_ROLE = Column(
    "cluster_role",
    "VARCHAR",
    "writer or reader in its Aurora cluster (DBClusterMembers.IsClusterWriter); NULL outside one",
)
CLUSTER_PLACE = (CLUSTER_ID, CLUSTER_ROLE)
PERFORMANCE_INSIGHTS = (
    Column(
        "performance_insights_enabled",
        "BOOLEAN",
        "whether Performance Insights is on for the instance",
    ),
    Column(
        "performance_insights_retention_days",
        "INTEGER",
        "how long Performance Insights keeps the instance's data, in days (7 free, up to 731 "
        "paid); NULL when it is off",
    ),
)
TAGS = Column("tags", "MAP(VARCHAR, VARCHAR)", "its tags, key to value: `tags['team']`")
FIRST_SEEN = Column(
    "first_seen", "TIMESTAMP", "first discovery that listed it, UTC", nullable=False
)

# The RDS inventory: every instance seen in the collected accounts and regions, as last seen.
INSTANCES = Table(
    "rds_instances",
    (
        *INSTANCE,
        *DESCRIPTION,
        Column("status", "VARCHAR", "RDS status at the last discovery, e.g. available"),
        CREATE_TIME,
        TAGS,
        FIRST_SEEN,
        LAST_SEEN,
        # Last: a warehouse from before them gains them at the end (schema versions 3 and 5).
        DBI_RESOURCE_ID,
        *CLUSTER_PLACE,
        *PERFORMANCE_INSIGHTS,
    ),
    primary_key=INSTANCE_KEY,
)

# Every version of every instance ever seen: a row per identifier and what RDS said it was,
# from the discovery that first saw that version to the last that saw it. Never trimmed, so an
# instance deleted long ago is still known, and a name used again is told apart.
INSTANCE_HISTORY = Table(
    "rds_instance_history",
    (
        *INSTANCE,
        DBI_RESOURCE_ID,
        CREATE_TIME,
        *DESCRIPTION,
        Column(
            "valid_from",
            "TIMESTAMP",
            "first discovery that saw this version, UTC",
            nullable=False,
        ),
        Column(
            "last_seen",
            "TIMESTAMP",
            "last discovery that saw this version, UTC (until the next version's valid_from, "
            "or the instance's deletion)",
            nullable=False,
        ),
        # Last: a warehouse from before them gains them at the end (schema version 5).
        *CLUSTER_PLACE,
    ),
    primary_key=(*INSTANCE_KEY, "valid_from"),
    added_in=3,
)
# What a new version of an instance is a change of (status and tags change too often to say).
HISTORY_TRACKED = tuple(
    column.name for column in (DBI_RESOURCE_ID, CREATE_TIME, *DESCRIPTION, *CLUSTER_PLACE)
)

# The Aurora clusters of the collected accounts and regions, as last seen by DescribeDBClusters.
CLUSTER_KEY_COLUMNS = (
    ACCOUNT,
    REGION,
    Column("cluster_id", "VARCHAR", "Aurora DB cluster identifier (DBClusterIdentifier)", False),
)
CLUSTER_KEY = tuple(column.name for column in CLUSTER_KEY_COLUMNS)
CLUSTERS = Table(
    "rds_clusters",
    (
        *CLUSTER_KEY_COLUMNS,
        Column("engine", "VARCHAR", "aurora-postgresql or aurora-mysql"),
        Column("engine_version", "VARCHAR", "engine version as RDS reports it"),
        Column("engine_mode", "VARCHAR", "provisioned (Serverless v2 included) or serverless (v1)"),
        Column("status", "VARCHAR", "RDS status at the last discovery, e.g. available"),
        Column(
            "serverless_min_acu",
            "DOUBLE",
            "Serverless v2 minimum capacity, in Aurora capacity units (ACU); NULL without it",
        ),
        Column(
            "serverless_max_acu",
            "DOUBLE",
            "Serverless v2 maximum capacity, in ACU; NULL without Serverless v2",
        ),
        Column(
            "writer_instance_id",
            "VARCHAR",
            "the member instance that is the writer (rds_instances.instance_id); NULL if none",
        ),
        Column("reader_count", "INTEGER", "member instances that are readers (a count)"),
        Column(
            "global_cluster_id",
            "VARCHAR",
            "the Aurora Global Database it belongs to (GlobalClusterIdentifier); NULL if none",
        ),
        Column(
            "db_cluster_resource_id",
            "VARCHAR",
            "RDS's own identifier of the cluster (DbClusterResourceId)",
        ),
        Column("create_time", "TIMESTAMP", "when the cluster was created, UTC"),
        TAGS,
        FIRST_SEEN,
        LAST_SEEN,
    ),
    primary_key=CLUSTER_KEY,
    added_in=5,
)

# One row per instance, metric and CloudWatch period, a column per statistic.
METRICS = Table(
    "rds_metrics",
    (
        Column("ts", "TIMESTAMP", "start of the CloudWatch period, UTC", nullable=False),
        *INSTANCE,
        METRIC,
        UNIT,
        *(
            Column(
                column, "DOUBLE", f"{_STATISTICS[statistic]}; NULL when not requested or returned"
            )
            for statistic, column in STATISTIC_COLUMNS.items()
        ),
        Column(
            "collected_at",
            "TIMESTAMP",
            "when the run that wrote it fetched it, UTC",
            nullable=False,
        ),
    ),
    primary_key=(*INSTANCE_KEY, "metric", "ts"),
    time_column="ts",
    lake_files_per_day=True,
)


def _fetch_log(
    name: str,
    tier: str,
    what: str,
    added_in: int = 0,
    subject: tuple[Column, ...] = INSTANCE,
) -> Table:
    """A fetch log: which hour of which subject (an instance) was fetched, when, and whether
    settled."""
    return Table(
        name,
        (
            Column("hour", "TIMESTAMP", "the hour fetched (its start), UTC", nullable=False),
            *subject,
            Column("fetched_at", "TIMESTAMP", "when it was fetched, UTC", nullable=False),
            Column(
                "datapoints",
                "BIGINT",
                f"statistic values stored for the hour in {what} (a count)",
                nullable=False,
            ),
            Column(
                "settled",
                "BOOLEAN",
                "fetched after the hour settled (no refetch needed)",
                nullable=False,
            ),
            Column("run_id", "VARCHAR", "Dagster run that fetched it"),
        ),
        primary_key=(*(column.name for column in subject), "hour"),
        time_column="hour",
        lake_files_per_day=True,
        added_in=added_in,
        tier=tier,
    )


FETCHES = _fetch_log("rds_metric_fetches", RAW_TIER, "rds_metrics")

# One row per Aurora cluster, metric and CloudWatch period (AWS/RDS by DBClusterIdentifier: its
# volume, its I/O, its Serverless v2 capacity), a column per statistic, as rds_metrics.
CLUSTER_METRICS = Table(
    "rds_cluster_metrics",
    (
        METRICS.columns[0],
        *CLUSTER_KEY_COLUMNS,
        *METRICS.columns[1 + len(INSTANCE) :],
    ),
    primary_key=(*CLUSTER_KEY, "metric", "ts"),
    time_column="ts",
    lake_files_per_day=True,
    added_in=5,
)
CLUSTER_FETCHES = _fetch_log(
    "rds_cluster_metric_fetches",
    RAW_TIER,
    CLUSTER_METRICS.name,
    added_in=5,
    subject=CLUSTER_KEY_COLUMNS,
)

# Performance Insights: the average active sessions (db.load.avg) of each instance with PI on,
# per period, in total and per key of its dimension groups.
PI_GROUP = Column(
    "dimension_group",
    "VARCHAR",
    "the dimension group of the key: total (the instance's whole load), db.wait_event, "
    "db.sql_tokenized, db (databases), db.user or db.host",
    nullable=False,
)
PI_KEY = Column(
    "dimension_key",
    "VARCHAR",
    "the key in its group: the wait event, the SQL digest's id (rds_pi_statements), the "
    "database, the user or the host; '' for the total, 'other' for the load of the keys "
    "beyond PI's limit per group",
    nullable=False,
)
PI_LOAD_COLUMNS = (
    Column("ts", "TIMESTAMP", "start of the PI period, UTC", nullable=False),
    *INSTANCE,
    PI_GROUP,
    PI_KEY,
    Column("key_type", "VARCHAR", "the wait event's type (CPU, IO, Lock…); NULL in other groups"),
    Column(
        "active_sessions",
        "DOUBLE",
        "average active sessions over the period (db.load.avg), in sessions",
        nullable=False,
    ),
    Column("collected_at", "TIMESTAMP", "when the run that wrote it fetched it, UTC", False),
)
PI_LOAD = Table(
    "rds_pi_load",
    PI_LOAD_COLUMNS,
    primary_key=(*INSTANCE_KEY, PI_GROUP.name, PI_KEY.name, "ts"),
    time_column="ts",
    lake_files_per_day=True,
    added_in=6,
    tier=INSIGHTS_TIER,
)
# The load by user and by host names people: kept by its own retention setting, and left out
# of exports unless asked.
PI_PERSONAL_LOAD = Table(
    "rds_pi_load_personal",
    PI_LOAD_COLUMNS,
    primary_key=PI_LOAD.primary_key,
    time_column="ts",
    lake_files_per_day=True,
    added_in=6,
    tier=PERSONAL_TIER,
)


def _pi_texts(name: str, key: Column, related: Column, text: Column) -> Table:
    """SQL texts once per instance and key, with the first and last period that had load
    (kept by the personal tier's retention, by the last): its text's id, a related id, the
    text, in that order (insights/store.py merges them by position)."""
    return Table(
        name,
        (
            *INSTANCE,
            key,
            related,
            text,
            Column("first_seen", "TIMESTAMP", "the first period it had load in, UTC", False),
            Column("last_seen", "TIMESTAMP", "the last period it had load in, UTC", False),
        ),
        primary_key=(*INSTANCE_KEY, key.name),
        time_column="last_seen",
        added_in=6,
        tier=PERSONAL_TIER,
    )


# Each SQL digest once per instance, not per row of its load.
PI_STATEMENTS = _pi_texts(
    "rds_pi_statements",
    Column("digest_id", "VARCHAR", "PI's id of the digest (db.sql_tokenized.id)", False),
    Column("db_id", "VARCHAR", "the engine's own id of the digest, or PI's stand-in"),
    Column(
        "statement",
        "VARCHAR",
        "the digest's text with placeholders for its literals, at most 500 bytes as PI returns it",
    ),
)
# Each statement with its literals once per instance (METRICS_PI_FULL_SQL_TEXT only): its
# whole text, which can hold personal data.
PI_SQL = _pi_texts(
    "rds_pi_sql",
    Column("sql_id", "VARCHAR", "PI's id of the statement (db.sql.id)", False),
    Column("digest_id", "VARCHAR", "its digest's id (db.sql.tokenized_id)"),
    Column(
        "statement",
        "VARCHAR",
        "the statement's whole text with its literals (GetDimensionKeyDetails when PI's "
        "500 bytes cut it)",
    ),
)
PI_FETCHES = _fetch_log("rds_pi_fetches", INSIGHTS_TIER, PI_LOAD.name, added_in=6)

# Each collection run's own figures: its window, work, requests, cost and time.
PI_REQUESTS = Column(
    "pi_requests", "INTEGER", "Performance Insights calls made, pages included (a count)"
)
RUNS = Table(
    "pipeline_runs",
    (
        # Not declared NOT NULL: the primary key makes it so in a DuckDB file, and the lakes
        # made so far have it nullable.
        Column("run_id", "VARCHAR", "Dagster run id"),
        Column("asset", "VARCHAR", "the asset the run materialized", nullable=False),
        Column("window_start", "TIMESTAMP", "start of the collected window, UTC", nullable=False),
        Column(
            "window_end", "TIMESTAMP", "end of the collected window (excluded), UTC", nullable=False
        ),
        Column(
            "finished_at", "TIMESTAMP", "when the run recorded its figures, UTC", nullable=False
        ),
        Column("instances", "INTEGER", "instances targeted (a count)"),
        Column("rows_written", "BIGINT", "rds_metrics rows written (a count)"),
        Column("rows_replaced", "BIGINT", "rds_metrics rows the write replaced (a count)"),
        Column("datapoints", "BIGINT", "statistic values stored (a count)"),
        Column("settled_hours", "INTEGER", "hours of the window fetched settled (a count)"),
        Column("cloudwatch_requests", "INTEGER", "GetMetricData calls made (a count)"),
        Column("minimum_requests", "INTEGER", "fewest calls any plan could have made (a count)"),
        Column("metrics_requested", "BIGINT", "metrics requested, what CloudWatch bills (a count)"),
        Column("estimated_cost_usd", "DOUBLE", "GetMetricData cost of the run, in USD"),
        Column("throttled_calls", "INTEGER", "calls CloudWatch throttled (a count)"),
        Column("retried_calls", "INTEGER", "calls retried (a count)"),
        Column("fetch_seconds", "DOUBLE", "time neither waiting for the lock nor writing, in s"),
        Column("lock_wait_seconds", "DOUBLE", "time waiting for the writers' lock, in s"),
        Column("write_seconds", "DOUBLE", "time writing to the warehouse, in s"),
        Column("cpu_seconds", "DOUBLE", "CPU time of the run's process, in s"),
        Column("peak_memory_mib", "DOUBLE", "peak resident memory of the run's process, in MiB"),
        Column("skipped_datapoints", "BIGINT", "datapoints received but not stored (a count)"),
        # Last: a warehouse from before it gains it at the end (schema version 6).
        PI_REQUESTS,
    ),
    # A run can collect several assets (the fresh run: the instances and the clusters).
    primary_key=("run_id", "asset"),
    time_column="finished_at",
    derived=True,
)

# Each collection run's figures per account and region.
RUN_PARTS = Table(
    "pipeline_run_parts",
    (
        Column("run_id", "VARCHAR", "Dagster run id (pipeline_runs.run_id)", nullable=False),
        ACCOUNT,
        REGION,
        Column("status", "VARCHAR", "collected, partial or failed", nullable=False),
        Column("instances", "INTEGER", "instances targeted (a count)", nullable=False),
        Column(
            "instances_written",
            "INTEGER",
            "instances whose every hour was written (a count)",
            nullable=False,
        ),
        Column("rows_written", "BIGINT", "rds_metrics rows written (a count)", nullable=False),
        Column("datapoints", "BIGINT", "statistic values stored (a count)", nullable=False),
        Column(
            "cloudwatch_requests", "INTEGER", "GetMetricData calls made (a count)", nullable=False
        ),
        Column(
            "throttled_calls", "INTEGER", "calls CloudWatch throttled (a count)", nullable=False
        ),
        Column("error", "VARCHAR", "why the account and region failed, if it did"),
        # Last: a warehouse from before it gains it at the end (schema version 5).
        Column(
            "asset",
            "VARCHAR",
            "the asset the run materialized (pipeline_runs.asset)",
            nullable=False,
        ),
    ),
    primary_key=("run_id", "asset", ACCOUNT.name, REGION.name),
    derived=True,
)


_PERCENTILE_TEXT = "percentile of the hour's samples as CloudWatch computes it"

# The hourly tier: CloudWatch's own hourly statistics of every instance and metric, for every
# hour CloudWatch still keeps (455 days) and then as long as METRICS_HOURLY_RETENTION_DAYS says.
HOURLY = Table(
    "rds_metrics_hourly",
    (
        Column("hour", "TIMESTAMP", "start of the hour, UTC", nullable=False),
        *INSTANCE,
        METRIC,
        UNIT,
        Column("average", "DOUBLE", "mean of the hour's samples, in the metric's unit"),
        Column("minimum", "DOUBLE", "lowest sample of the hour, in the metric's unit"),
        Column("maximum", "DOUBLE", "highest sample of the hour, in the metric's unit"),
        Column("sum", "DOUBLE", "sum of the hour's samples, in the metric's unit"),
        Column("sample_count", "DOUBLE", "samples CloudWatch aggregated in the hour (a count)"),
        *(
            Column(p, "DOUBLE", f"{p[1:]}th {_PERCENTILE_TEXT} (extended statistic {p})")
            for p in HOURLY_PERCENTILES
        ),
        Column("collected_at", "TIMESTAMP", "when the run fetched it, UTC", nullable=False),
    ),
    primary_key=(*INSTANCE_KEY, "metric", "hour"),
    time_column="hour",
    lake_files_per_day=True,
    added_in=4,
    tier=HOURLY_TIER,
)
HOURLY_FETCHES = _fetch_log("rds_metric_hourly_fetches", HOURLY_TIER, HOURLY.name, added_in=4)

# The daily tier: each UTC day of the hourly tier, kept forever.
DAILY = Table(
    "rds_metrics_daily",
    (
        Column("day", "TIMESTAMP", "start of the UTC day", nullable=False),
        *INSTANCE,
        METRIC,
        UNIT,
        Column("average", "DOUBLE", "mean of the day's samples (hourly sums over sample counts)"),
        Column("minimum", "DOUBLE", "lowest sample of the day, in the metric's unit"),
        Column("maximum", "DOUBLE", "highest sample of the day, in the metric's unit"),
        Column("sum", "DOUBLE", "sum of the day's samples, in the metric's unit"),
        Column("sample_count", "DOUBLE", "samples CloudWatch aggregated in the day (a count)"),
        Column("peak_hour_average", "DOUBLE", "highest hourly average of the day"),
        Column("max_hourly_p95", "DOUBLE", "highest hourly p95 of the day"),
        Column("max_hourly_p99", "DOUBLE", "highest hourly p99 of the day"),
        Column("hours", "INTEGER", "hours of the day with data (a count)", nullable=False),
        Column("computed_at", "TIMESTAMP", "when the day was computed, UTC", nullable=False),
    ),
    primary_key=(*INSTANCE_KEY, "metric", "day"),
    time_column="day",
    lake_files_per_day=True,
    derived=True,
    added_in=4,
    tier=DAILY_TIER,
)

# The latest rightsizing report: one row per serving instance, its verdict and evidence.
RIGHTSIZING = Table(
    "rds_rightsizing",
    (
        Column("report_time", "TIMESTAMP", "when the report was made, UTC", nullable=False),
        Column("window_start", "TIMESTAMP", "start of the window judged, UTC", nullable=False),
        Column("window_end", "TIMESTAMP", "end of the window judged, UTC", nullable=False),
        *INSTANCE,
        Column("instance_class", "VARCHAR", "DB instance class, e.g. db.r6g.large"),
        Column("engine", "VARCHAR", "database engine, e.g. postgres"),
        Column(
            "verdict",
            "VARCHAR",
            "over-provisioned, under-provisioned, ok or insufficient data",
            nullable=False,
        ),
        Column(
            "storage_at_risk",
            "BOOLEAN",
            "storage fills within the horizon at its trend",
            nullable=False,
        ),
        Column(
            "reasons", "VARCHAR", "the evidence behind the verdict, '; '-separated", nullable=False
        ),
        Column(
            "periods", "INTEGER", "periods of the window with CPU data (a count)", nullable=False
        ),
        Column(
            "coverage", "DOUBLE", "periods present over periods expected (0 to 1)", nullable=False
        ),
        Column(
            "cpu_p95", "DOUBLE", "95th percentile of CPUUtilization's period averages, in percent"
        ),
        Column("connections_p95", "DOUBLE", "95th percentile of DatabaseConnections (a count)"),
        Column("freeable_memory_min_mib", "DOUBLE", "lowest FreeableMemory, in MiB"),
        Column("swap_max_mib", "DOUBLE", "highest SwapUsage, in MiB"),
        Column("disk_queue_p95", "DOUBLE", "95th percentile of DiskQueueDepth (a count)"),
        Column("free_storage_gib", "DOUBLE", "FreeStorageSpace of the newest period, in GiB"),
        Column(
            "storage_trend_gib_per_day",
            "DOUBLE",
            "least-squares trend of FreeStorageSpace, in GiB per day",
        ),
        Column("storage_days_left", "DOUBLE", "days until storage is full at the trend"),
        # Last: a warehouse from before them gains them at the end (schema version 5).
        CLUSTER_ROLE,
        Column(
            "serverless_min_acu",
            "DOUBLE",
            "its Aurora Serverless v2 cluster's minimum capacity, in ACU; NULL without one",
        ),
        Column(
            "serverless_max_acu",
            "DOUBLE",
            "its Aurora Serverless v2 cluster's maximum capacity, in ACU; NULL without one",
        ),
        Column(
            "acu_p95",
            "DOUBLE",
            "95th percentile of ServerlessDatabaseCapacity's period averages, in ACU",
        ),
        Column(
            "acu_utilization_p95",
            "DOUBLE",
            "95th percentile of ACUUtilization's period averages: capacity used of the "
            "maximum, in percent",
        ),
        # Last: version 6 added it.
        Column(
            "db_load_per_vcpu_p95",
            "DOUBLE",
            "95th percentile of DBLoadRelativeToNumVCPUs (Performance Insights on; a period "
            "without load counts 0), in active sessions per vCPU",
        ),
    ),
    primary_key=INSTANCE_KEY,
    derived=True,
)
# What versions 5 and 6 added to the report.
RIGHTSIZING_AURORA = RIGHTSIZING.columns[-6:-1]
RIGHTSIZING_DB_LOAD = RIGHTSIZING.columns[-1]

# The latest rightsizing report's longer evidence: one row per serving instance and window
# (14, 30, 90 days) in which the hourly tier holds CPU data, with how much of the window it holds.
RIGHTSIZING_WINDOWS = Table(
    "rds_rightsizing_windows",
    (
        Column("report_time", "TIMESTAMP", "when the report was made, UTC", nullable=False),
        *INSTANCE,
        Column(
            "window_days",
            "INTEGER",
            "length of the trailing window, in days (14, 30 or 90)",
            nullable=False,
        ),
        Column(
            "window_start",
            "TIMESTAMP",
            "start of the window, UTC: report_time less window_days; the window holds the "
            "hours of rds_metrics_hourly that start in [window_start, report_time)",
            nullable=False,
        ),
        Column(
            "history_days",
            "DOUBLE",
            "hours of the window with CPUUtilization data in rds_metrics_hourly, over 24, in "
            "days (below window_days when the instance or the history is younger)",
            nullable=False,
        ),
        Column(
            "cpu_p95",
            "DOUBLE",
            "95th percentile (linear interpolation) of CPUUtilization's hourly p95 values over "
            "the window's hours, in percent",
        ),
        Column(
            "cpu_p99_max",
            "DOUBLE",
            "highest hourly p99 of CPUUtilization in the window, in percent",
        ),
        Column(
            "peak_hour",
            "TIMESTAMP",
            "start of the hour with the highest hourly average CPUUtilization (the earliest on "
            "a tie), UTC",
            nullable=False,
        ),
        Column(
            "peak_hour_cpu",
            "DOUBLE",
            "CPUUtilization's average in peak_hour, in percent",
            nullable=False,
        ),
        Column(
            "busiest_weekday",
            "INTEGER",
            "ISO weekday (1 Monday to 7 Sunday) in METRICS_TIME_ZONE (UTC by default) with the "
            "highest mean of CPUUtilization's hourly averages (the lower on a tie)",
            nullable=False,
        ),
        Column(
            "quietest_weekday",
            "INTEGER",
            "ISO weekday (1 Monday to 7 Sunday) in METRICS_TIME_ZONE (UTC by default) with the "
            "lowest mean of CPUUtilization's hourly averages (the lower on a tie)",
            nullable=False,
        ),
        Column(
            "connections_p95",
            "DOUBLE",
            "95th percentile (linear interpolation) of DatabaseConnections' hourly p95 values "
            "over the window's hours (a count)",
        ),
        Column(
            "freeable_memory_min_mib",
            "DOUBLE",
            "lowest FreeableMemory sample of the window (hourly minimum, or average where no "
            "minimum), in MiB",
        ),
    ),
    primary_key=(*INSTANCE_KEY, "window_days"),
    derived=True,
    added_in=4,
)

# The schema version of the warehouse (warehouse/migrations.py): not data, never copied.
VERSIONS = Table(
    "schema_version",
    (
        # Nullable as declared: the primary key makes it NOT NULL in a DuckDB file.
        Column("version", "INTEGER", "schema version reached"),
        Column("migrated_at", "TIMESTAMP", "when it was reached, UTC", nullable=False),
    ),
    primary_key=("version",),
)

# The data tables, in the order they are created and copied.
TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        INSTANCES,
        INSTANCE_HISTORY,
        CLUSTERS,
        METRICS,
        FETCHES,
        CLUSTER_METRICS,
        CLUSTER_FETCHES,
        PI_LOAD,
        PI_PERSONAL_LOAD,
        PI_STATEMENTS,
        PI_SQL,
        PI_FETCHES,
        RUNS,
        RUN_PARTS,
        HOURLY,
        HOURLY_FETCHES,
        DAILY,
        RIGHTSIZING,
        RIGHTSIZING_WINDOWS,
    )
}
DERIVED_TABLES = frozenset(name for name, table in TABLES.items() if table.derived)
# Every table that holds time series, with its time column: what retention trims.
TIME_COLUMNS: dict[str, str] = {
    name: table.time_column for name, table in TABLES.items() if table.time_column
}


def tier_tables(tier: str) -> dict[str, str]:
    """The tables of a tier that hold time series, with their time columns."""
    return {name: column for name, column in TIME_COLUMNS.items() if TABLES[name].tier == tier}
