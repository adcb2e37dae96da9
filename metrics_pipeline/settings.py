"""Every setting of the pipeline, declared once, read from the environment and validated here.

Each setting is one field below: its Python name, its environment variable, its type, its
default, how its text is parsed (with its bounds) and its line of documentation. From that
declaration come the reading of the environment, the one-line ConfigError naming the variable
and what is allowed (raised before any AWS or DuckDB call), the configuration reference in
docs/operations.md (scripts/update_settings_reference.py), and the defaults, descriptions and
values of the Dagster resources' fields that carry a setting (`resource_field`,
`settings_for`). Nothing here is read at import: the definitions read the environment when
Dagster loads them, the command-line tool when it starts.
"""

from __future__ import annotations

import grp
import math
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import botocore.session
import pydantic

from metrics_pipeline.catalog import (
    CLUSTER_METRIC_UNITS,
    DEFAULT_CLUSTER_METRICS,
    DEFAULT_METRICS,
    DEFAULT_STATISTICS,
    PI_PERIODS,
    RDS_METRIC_UNITS,
    STATISTIC_COLUMNS,
)
from metrics_pipeline.lake_catalog import (
    LAKE_PREFIX,
    OTHER_CATALOG_PREFIX,
    POSTGRES_CATALOG_PREFIX,
    Lake,
    LakeError,
    redacted,
    split_password,
)

# Relative to the working directory of the process (the project folder for `dagster dev` and
# scripts/start.sh), never to where the package is installed.
DEFAULT_DUCKDB_PATH = Path("data") / "metrics.duckdb"
# The default warehouse: a lake on this machine (docs/architecture.md, "Storage").
DEFAULT_LAKE_CATALOG = Path("data") / "metrics.ducklake"
# DuckLake's own default for a catalog file's data: a folder named after it.
LAKE_DATA_SUFFIX = ".files"

# Bounds on whole answers, which botocore does not have (a chunk's GetMetricData requests,
# some 20 pages of 100,800 datapoints, a minute at CloudWatch's quota; a run's fetching), and
# on a writer's wait for the warehouse.
MAX_TIMEOUT_SECONDS = 86_400.0
# botocore's own bounds on each connection attempt and each read from the socket.
MAX_AWS_TIMEOUT_SECONDS = 3600.0
# Datapoints fetched and written at once: DuckDB's write of one chunk (the pivot, the primary
# key) is where a run's memory peaks, so the chunk, not the window, sets it.
DEFAULT_CHUNK_DATAPOINTS = 2_000_000
# Ten full GetMetricData pages: a chunk's last request, the only one not full, then adds
# less than a tenth to the run's requests.
MIN_CHUNK_DATAPOINTS = 1_008_000
MAX_CHUNK_DATAPOINTS = 50_000_000
DEFAULT_FETCH_THREADS = 4
MAX_FETCH_THREADS = 64
DEFAULT_ROLE_SESSION_NAME = "metrics-pipeline"
# Bytes of DuckDB memory a chunk's write is given per datapoint, and never less than the floor.
DUCKDB_BYTES_PER_CHUNK_DATAPOINT = 192
MIN_DUCKDB_MEMORY_LIMIT_MIB = 256
ROLE_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/[\w+=,.@/-]{1,512}$")
ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")
# What CloudWatch serves one account and region in two of the gap sensor's one-minute ticks
# (396,000 datapoints per second for data older than three hours): the sensor's default
# amount of work per tick, so that a history comes in at the quota's pace.
BACKFILL_QUOTA_DATAPOINTS_PER_TICK = 396_000 * 120
DEFAULT_RETENTION_DAYS = 7
# Performance Insights' own free retention; longer costs rows (docs/architecture.md).
DEFAULT_PI_RETENTION_DAYS = 7
DEFAULT_PI_PERSONAL_RETENTION_DAYS = 7
# How long CloudWatch keeps hourly datapoints: what the hourly tier backfills.
CLOUDWATCH_HOURLY_DAYS = 455
MAX_QUERY_TIMEOUT_SECONDS = 86_400.0
# Dagster's guidance is at most 100,000 partitions per asset: that many hours.
MAX_PARTITIONS = 100_000
MAX_RETENTION_DAYS = MAX_PARTITIONS // 24 - 1
MAX_BACKUP_KEEP_DAYS = 3650
# A century: the hourly tier's partitions are days, far below Dagster's guidance.
MAX_HOURLY_RETENTION_DAYS = 36_500
# Below this DuckDB cannot stage even one GetMetricData page for the write.
MIN_DUCKDB_MEMORY_BYTES = 128 * 2**20
# Below this DuckDB cannot open the warehouse's tables for a query.
MIN_QUERY_MEMORY_BYTES = 64 * 2**20
# DuckDB refuses larger amounts with a parser error, and wraps some around to nothing
# (2**64 bytes is 0); a PiB is beyond any machine the pipeline runs on.
MAX_MEMORY_BYTES = 2**50


def duckdb_memory_limit_for(chunk_datapoints: int) -> str:
    """The writer's DuckDB memory_limit when METRICS_DUCKDB_MEMORY_LIMIT is not set: what one
    chunk's write needs, so that a run's memory is bounded by the chunk (DuckDB spills past
    it)."""
    mib = max(
        MIN_DUCKDB_MEMORY_LIMIT_MIB,
        math.ceil(chunk_datapoints * DUCKDB_BYTES_PER_CHUNK_DATAPOINT / 2**20),
    )
    return f"{mib}MiB"


class ConfigError(ValueError):
    """A setting has a value the pipeline cannot use; the message names the setting."""


# How a set variable's text becomes the setting's value: (variable, text) -> value, or a
# ConfigError naming the variable. The text is never blank: an unset or blank variable takes
# the field's default, or what its `when_unset` derives from the environment and the settings
# declared before it.
Parse = Callable[[str, str], Any]
WhenUnset = Callable[[Mapping[str, str], Mapping[str, Any]], Any]
# Where a resource's field names the setting it carries (see resource_field).
SETTING_KEY = "metrics_setting"


def setting(
    env: str,
    description: str,
    parse: Parse,
    default: Any = MISSING,
    *,
    default_text: str | None = None,
    default_factory: Callable[[], Any] | None = None,
    when_unset: WhenUnset | None = None,
) -> Any:
    """A settings field: its environment variable, its line of the reference (`{bounds}` in
    the description is replaced by the parser's), its parser and its default."""
    bounds = getattr(parse, "bounds", None)
    if bounds is not None:
        description = description.replace("{bounds}", bounds)
    if default_text is None:
        default_text = f"`{default:g}`" if isinstance(default, float) else f"`{default}`"
    metadata = {
        "env": env,
        "description": description,
        "default_text": default_text,
        "parse": parse,
        "when_unset": when_unset,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Whole:
    """A whole number within bounds."""

    minimum: int = 0
    maximum: int = 10**9

    def __call__(self, name: str, text: str) -> int:
        return parse_int(name, text, self.minimum, self.maximum)

    @property
    def bounds(self) -> str:
        return f"{self.minimum:,} to {self.maximum:,}"


@dataclass(frozen=True)
class Number:
    """A finite number above `minimum` (exclusive when 0) and at most `maximum`."""

    maximum: float
    minimum: float = 0.0

    def __call__(self, name: str, text: str) -> float:
        return parse_positive_float(name, text, self.minimum, self.maximum)

    @property
    def bounds(self) -> str:
        if self.minimum == 0:
            return f"> 0 and at most {self.maximum:,g}"
        return f"from {self.minimum:g} to {self.maximum:,g}"


@dataclass(frozen=True)
class AwsName:
    """An AWS identifier of a given pattern."""

    pattern: re.Pattern[str]
    allowed: str

    def __call__(self, name: str, text: str) -> str:
        value = text.strip()
        if not self.pattern.match(value):
            raise ConfigError(f"{name}: '{text}' is not allowed; expected {self.allowed}.")
        return value


@dataclass(frozen=True)
class MemoryLimit:
    """An amount in DuckDB's own memory_limit syntax, within what DuckDB can hold."""

    minimum_bytes: int
    purpose: str

    def __call__(self, name: str, text: str) -> str:
        return parse_memory_limit(name, text, self.minimum_bytes, self.purpose)


def _text(name: str, text: str) -> str:
    return text.strip()


def _optional_whole(name: str, text: str) -> int:
    return parse_int(name, text, minimum=1)


@dataclass(frozen=True, kw_only=True)
class StorageSettings:
    """Where the warehouse and its backups live and how long they are kept: all that a reader
    (the command-line tool, a notebook) needs, with no AWS setting."""

    duckdb_path: Path = setting(
        "METRICS_DUCKDB_PATH",
        "a writable file path",
        lambda name, text: parse_path(name, text),
        default_text="`data/metrics.duckdb` under the working directory (created)",
        default_factory=lambda: DEFAULT_DUCKDB_PATH.resolve(),
    )
    warehouse: str | None = setting(
        "METRICS_WAREHOUSE",
        "a DuckLake catalog: one that processes on many machines share, "
        "`ducklake:postgres:<libpq connection string>` such as "
        "`ducklake:postgres:host=db.internal dbname=lake user=metrics` (docs/scale-out.md), "
        "its password best in `~/.pgpass` or PGPASSFILE (one given here is never shown); or "
        "a DuckDB file on this machine, `ducklake:<path>` such as `ducklake:data/metrics.ducklake`",
        lambda name, text: parse_warehouse(name, text),
        None,
        default_text="`ducklake:data/metrics.ducklake` under the working directory (created), "
        "a lake on this machine; when METRICS_DUCKDB_PATH is set, none: the DuckDB file",
        when_unset=lambda env, read: _lake_unless_a_file_is_named(env),
    )
    lake_data_path: str | None = setting(
        "METRICS_LAKE_DATA_PATH",
        "where the lake's Parquet files go: `s3://bucket/prefix/` (endpoint and credentials "
        "from the usual AWS environment) or a folder",
        lambda name, text: parse_lake_data_path(name, text),
        None,
        default_text="for a catalog file, the folder next to it named after it with "
        "`.files` (`data/metrics.ducklake.files/` by default); required with a PostgreSQL "
        "catalog",
        when_unset=lambda env, read: _data_next_to_a_catalog_file(read.get("warehouse")),
    )
    retention_days: int = setting(
        "METRICS_RETENTION_DAYS",
        f"days of metrics kept, {{bounds}} (Dagster's guidance of at most {MAX_PARTITIONS:,} "
        "partitions)",
        Whole(1, MAX_RETENTION_DAYS),
        DEFAULT_RETENTION_DAYS,
    )
    hourly_retention_days: int | None = setting(
        "METRICS_HOURLY_RETENTION_DAYS",
        "days of the hourly tier (`rds_metrics_hourly`) kept, {bounds}; the daily tier is kept "
        "forever",
        Whole(1, MAX_HOURLY_RETENTION_DAYS),
        None,
        default_text="forever",
    )
    pi_retention_days: int = setting(
        "METRICS_PI_RETENTION_DAYS",
        "days of Performance Insights load (`rds_pi_load`) kept, {bounds}",
        Whole(1, MAX_RETENTION_DAYS),
        DEFAULT_PI_RETENTION_DAYS,
    )
    pi_personal_retention_days: int = setting(
        "METRICS_PI_PERSONAL_RETENTION_DAYS",
        "days kept of what Performance Insights says of people: SQL text "
        "(`rds_pi_statements`) and the load by user and host (`rds_pi_load_personal`), {bounds}",
        Whole(1, MAX_RETENTION_DAYS),
        DEFAULT_PI_PERSONAL_RETENTION_DAYS,
    )
    backup_dir: Path | None = setting(
        "METRICS_BACKUP_DIR",
        "a folder for backups",
        lambda name, text: parse_folder(name, text),
        None,
        default_text="`backups` next to the DuckDB file",
    )
    backup_keep_days: int = setting(
        "METRICS_BACKUP_KEEP_DAYS",
        "days of backups kept (the newest is always kept), {bounds}",
        Whole(1, MAX_BACKUP_KEEP_DAYS),
        7,
    )
    shared_group: str | None = setting(
        "METRICS_SHARED_GROUP",
        "a group of this machine whose members may read the snapshot, or a local lake's "
        "catalog copy and data files (analysts); the warehouse or catalog itself and the "
        "backups stay the owner's",
        lambda name, text: parse_group(name, text),
        None,
        default_text="none: the files are the owner's alone",
    )
    lock_timeout_seconds: float = setting(
        "METRICS_LOCK_TIMEOUT_SECONDS",
        "how long a writer waits for the DuckDB file, seconds {bounds}",
        Number(maximum=MAX_TIMEOUT_SECONDS),
        120.0,
    )
    # Analysts' queries on a laptop: DuckDB's memory for one, and how long one may run.
    query_memory_limit: str = setting(
        "METRICS_QUERY_MEMORY_LIMIT",
        "DuckDB's `memory_limit` for analysts' queries (`metrics-pipeline query`, "
        "`query.connect()`, `query.run_sql()`), `64MiB` to `1PiB`; the reading commands' "
        "whole process is held to twice it plus 256 MiB and 16 MiB per CPU (docs/analysts.md)",
        MemoryLimit(MIN_QUERY_MEMORY_BYTES, "a query"),
        "1GB",
    )
    query_timeout_seconds: float = setting(
        "METRICS_QUERY_TIMEOUT_SECONDS",
        "how long an analyst's query (`metrics-pipeline query`, `query.run_sql()`) may run, "
        "writing its result included, before it is stopped; seconds {bounds}",
        Number(maximum=MAX_QUERY_TIMEOUT_SECONDS),
        300.0,
    )

    def __post_init__(self) -> None:
        lake_data_path = variable("lake_data_path")
        if self.warehouse and not self.lake_data_path:
            raise ConfigError(
                f"{lake_data_path}: required with {variable('warehouse')}; expected where the "
                "lake's Parquet files go, 's3://bucket/prefix/' or a folder."
            )
        if self.lake_data_path and not self.warehouse:
            raise ConfigError(
                f"{lake_data_path}: set without {variable('warehouse')}; set both for a DuckLake "
                "warehouse, or neither for the DuckDB file."
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StorageSettings:
        return cls(**read_settings(cls, os.environ if environ is None else environ))

    @property
    def snapshot_path(self) -> Path:
        return snapshot_path_for(self.duckdb_path)

    @property
    def lake(self) -> Lake | None:
        """The DuckLake warehouse, or None for the DuckDB file."""
        if self.warehouse and self.lake_data_path:
            return Lake(self.warehouse, self.lake_data_path)
        return None

    @property
    def read_source(self) -> Lake | Path:
        """What readers open: the lake, or the DuckDB file's snapshot."""
        return self.lake or self.snapshot_path

    @property
    def backups_path(self) -> Path:
        """METRICS_BACKUP_DIR, or a `backups` folder next to the warehouse."""
        return self.backup_dir or default_backup_dir(self.duckdb_path)


def _lake_unless_a_file_is_named(env: Mapping[str, str]) -> str | None:
    """The default warehouse, a lake on this machine; the DuckDB file when METRICS_DUCKDB_PATH
    names one (as every warehouse was before the lake became the default)."""
    if (env.get(variable("duckdb_path")) or "").strip():
        return None
    return LAKE_PREFIX + str(DEFAULT_LAKE_CATALOG.resolve())


def _data_next_to_a_catalog_file(warehouse: str | None) -> str | None:
    if not warehouse or warehouse.startswith(POSTGRES_CATALOG_PREFIX):
        return None
    return f"{warehouse.removeprefix(LAKE_PREFIX)}{LAKE_DATA_SUFFIX}/"


def snapshot_path_for(database: Path) -> Path:
    """The readers' copy of the warehouse, next to it (see snapshot.py)."""
    return database.with_name(f"{database.stem}.snapshot{database.suffix or '.duckdb'}")


def default_backup_dir(database: Path) -> Path:
    return database.parent / "backups"


def _region_of_the_environment(env: Mapping[str, str], read: Mapping[str, Any]) -> tuple[str, ...]:
    region = default_region(env)
    if region is None:
        raise ConfigError(
            f"{variable('regions')} is not set and boto3 has no default region: set "
            f"{variable('regions')} (e.g. 'us-east-1,eu-west-1') or AWS_REGION/AWS_DEFAULT_REGION."
        )
    return (region,)


def _start_of_the_retention(env: Mapping[str, str], read: Mapping[str, Any]) -> datetime:
    return rolling_start(read["retention_days"])


@dataclass(frozen=True, kw_only=True)
class Settings(StorageSettings):
    regions: tuple[str, ...] = setting(
        "METRICS_AWS_REGIONS",
        "comma-separated AWS region names",
        lambda name, text: parse_regions(name, text),
        default_text="boto3's default region",
        when_unset=_region_of_the_environment,
    )
    period_seconds: int = setting(
        "METRICS_PERIOD_SECONDS",
        "a multiple of 60 that divides an hour (60 for 1-minute detail)",
        lambda name, text: parse_period(name, text),
        300,
    )
    metrics: tuple[str, ...] = setting(
        "METRICS_CLOUDWATCH_METRICS",
        "comma-separated AWS/RDS metric names (e.g. `ReplicaLag`, `BurstBalance`)",
        lambda name, text: parse_metrics(name, text),
        DEFAULT_METRICS,
        default_text=f"the {len(DEFAULT_METRICS)} below",
    )
    cluster_metrics: tuple[str, ...] = setting(
        "METRICS_CLUSTER_METRICS",
        "comma-separated Aurora cluster-level metric names (AWS/RDS by DBClusterIdentifier), "
        "each asked only of the clusters that publish it",
        lambda name, text: parse_metrics(
            name, text, CLUSTER_METRIC_UNITS, "Aurora cluster-level metrics"
        ),
        DEFAULT_CLUSTER_METRICS,
        default_text=", ".join(f"`{m}`" for m in DEFAULT_CLUSTER_METRICS),
    )
    pi_period_seconds: int = setting(
        "METRICS_PI_PERIOD_SECONDS",
        "the Performance Insights period, one of PI's within an hour: "
        + ", ".join(map(str, PI_PERIODS)),
        lambda name, text: parse_choice(name, text, PI_PERIODS),
        60,
    )
    pi_full_sql_text: bool = setting(
        "METRICS_PI_FULL_SQL_TEXT",
        "`true` to also keep the top statements with their literals and their whole text "
        "(`rds_pi_sql`, by GetDimensionKeyDetails); their literals may be personal data",
        lambda name, text: parse_switch(name, text),
        False,
        default_text="`false`",
    )
    pi_requests_per_second: float = setting(
        "METRICS_PI_REQUESTS_PER_SECOND",
        "client-side cap on Performance Insights calls per account and region, {bounds} (PI "
        "publishes no rate; it throttles above its own)",
        Number(minimum=0.5, maximum=1000),
        5.0,
    )
    statistics: tuple[str, ...] = setting(
        "METRICS_STATISTICS",
        "any of those",
        lambda name, text: parse_statistics(name, text),
        DEFAULT_STATISTICS,
        default_text=f"`{','.join(DEFAULT_STATISTICS)}`",
    )
    settle_minutes: int = setting(
        "METRICS_SETTLE_MINUTES",
        "whole minutes from {bounds} after an hour ends before its data counts as final",
        Whole(0, 1440),
        15,
    )
    time_zone: str = setting(
        "METRICS_TIME_ZONE",
        "the IANA time zone of the comparisons people read by the clock and the calendar (the "
        "rightsizing report's peak hour and busiest and quietest weekday), such as "
        "`Europe/Berlin`; the warehouse's times stay UTC",
        lambda name, text: parse_time_zone(name, text),
        "UTC",
    )
    dashboard_url: str = setting(
        "METRICS_DASHBOARD_URL",
        "the address of the dashboard (the module `metrics_pipeline.dashboard`, which "
        "`scripts/start.sh` serves), linked from `pipeline_health` and `rightsizing_report` in "
        "the Dagster UI",
        lambda name, text: parse_http_url(name, text),
        "http://127.0.0.1:8050",
    )
    partitions_start: datetime = setting(
        "METRICS_PARTITIONS_START",
        "first partition, `YYYY-MM-DD` or `YYYY-MM-DDTHH:00` (UTC), in the past and at most "
        f"{MAX_PARTITIONS:,} hours ago",
        lambda name, text: parse_start(name, text),
        default_text="midnight UTC `METRICS_RETENTION_DAYS` days ago (as of load)",
        default_factory=lambda: rolling_start(DEFAULT_RETENTION_DAYS),
        when_unset=_start_of_the_retention,
    )
    role_arns: tuple[str, ...] = setting(
        "METRICS_AWS_ROLE_ARNS",
        "comma-separated IAM role ARNs (`arn:aws:iam::<account>:role/<name>`), one per other "
        "account to collect; the pipeline's own account is always collected",
        lambda name, text: parse_role_arns(name, text),
        (),
        default_text="none: the pipeline's own account only",
    )
    organization_role: str | None = setting(
        "METRICS_AWS_ORGANIZATION_ROLE",
        "a role name assumed in every active account of the AWS Organization (listed with "
        "`organizations:ListAccounts`), e.g. `OrganizationAccountAccessRole`",
        AwsName(ROLE_NAME, "a role name of 1 to 64 letters, digits and +=,.@-_"),
        None,
        default_text="none",
    )
    external_id: str | None = setting(
        "METRICS_AWS_EXTERNAL_ID",
        "the ExternalId the roles' trust policies ask for, 2 to 1,224 characters of "
        "letters, digits and `+=,.@:/-_`",
        AwsName(EXTERNAL_ID, "2 to 1,224 letters, digits and +=,.@:/-_"),
        None,
        default_text="none",
    )
    role_session_name: str = setting(
        "METRICS_AWS_ROLE_SESSION_NAME",
        "the RoleSessionName of the assumed roles (CloudTrail shows it), 2 to 64 characters of "
        "letters, digits and `+=,.@-_`",
        AwsName(SESSION_NAME, "2 to 64 letters, digits and +=,.@-_"),
        DEFAULT_ROLE_SESSION_NAME,
    )
    max_requests_per_second: float = setting(
        "METRICS_MAX_REQUESTS_PER_SECOND",
        "client-side cap per account and region, {bounds} (0.5 is botocore's slowest)",
        # botocore's token bucket cannot go slower; CloudWatch allows 50 per second.
        Number(minimum=0.5, maximum=1000),
        10.0,
    )
    aws_max_attempts: int = setting(
        "METRICS_AWS_MAX_ATTEMPTS",
        "attempts per AWS call (botocore adaptive retries), {bounds}",
        Whole(1, 50),
        8,
    )
    aws_connect_timeout_seconds: float = setting(
        "METRICS_AWS_CONNECT_TIMEOUT_SECONDS",
        "seconds to open a connection to AWS (botocore `connect_timeout`, each attempt), {bounds}",
        Number(maximum=MAX_AWS_TIMEOUT_SECONDS),
        10.0,
    )
    aws_read_timeout_seconds: float = setting(
        "METRICS_AWS_READ_TIMEOUT_SECONDS",
        "seconds AWS may stay silent during an answer (botocore `read_timeout`, each read "
        "from the socket, not a whole answer), {bounds}",
        Number(maximum=MAX_AWS_TIMEOUT_SECONDS),
        60.0,
    )
    chunk_datapoints: int = setting(
        "METRICS_CHUNK_DATAPOINTS",
        "datapoints fetched and written at once, {bounds}: a run's memory follows it, not the "
        "window or the fleet",
        Whole(MIN_CHUNK_DATAPOINTS, MAX_CHUNK_DATAPOINTS),
        DEFAULT_CHUNK_DATAPOINTS,
    )
    fetch_threads: int = setting(
        "METRICS_FETCH_THREADS",
        "chunks fetched at once across accounts and regions, {bounds}",
        Whole(1, MAX_FETCH_THREADS),
        DEFAULT_FETCH_THREADS,
    )
    chunk_timeout_seconds: float = setting(
        "METRICS_CHUNK_TIMEOUT_SECONDS",
        "seconds a chunk's GetMetricData answers may take in all (a trickled answer, endless "
        "pages); past it the chunk fails, its hours stay gaps for the gap sensor; {bounds}",
        Number(maximum=MAX_TIMEOUT_SECONDS),
        600.0,
    )
    run_timeout_seconds: float = setting(
        "METRICS_RUN_TIMEOUT_SECONDS",
        "seconds a collection run's fetching may take in all; past it the run fails, the "
        "chunks written by then stay written; {bounds}",
        Number(maximum=MAX_TIMEOUT_SECONDS),
        3600.0,
    )
    fresh_interval_minutes: int = setting(
        "METRICS_FRESH_INTERVAL_MINUTES",
        "minutes between fresh ticks, a divisor of 60",
        lambda name, text: parse_fresh_interval(name, text),
        15,
    )
    backfill_days: int = setting(
        "METRICS_BACKFILL_DAYS",
        "days the gap sensor looks back, ≥ 1, < `METRICS_RETENTION_DAYS` and within "
        "CloudWatch's retention at the period (15 days at 60 s, 63 at 300 s)",
        Whole(1, MAX_RETENTION_DAYS),
        3,
    )
    backfill_interval_minutes: int = setting(
        "METRICS_BACKFILL_INTERVAL_MINUTES",
        "minutes between the gap sensor's looks for gaps when nothing is left to heal, {bounds}",
        Whole(1, 1440),
        60,
    )
    backfill_max_datapoints_per_tick: int | None = setting(
        "METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK",
        "CloudWatch datapoints the gap sensor asks for per tick at most (instances × hours × "
        "metrics × statistics × periods per hour), ≥ 1",
        Whole(1),
        None,
        default_text="CloudWatch's quota for older data over two sensor ticks, per account and "
        f"region in the inventory ({BACKFILL_QUOTA_DATAPOINTS_PER_TICK:,} each)",
    )
    freshness_minutes: int = setting(
        "METRICS_FRESHNESS_MINUTES",
        "the freshness check's bound in minutes, {bounds}",
        Whole(1, 10_080),
        30,
    )
    completeness_warn: float = setting(
        "METRICS_COMPLETENESS_WARN",
        "the completeness check warns below this fraction (0 to 1)",
        lambda name, text: parse_fraction(name, text),
        0.9,
    )
    duckdb_memory_limit: str | None = setting(
        "METRICS_DUCKDB_MEMORY_LIMIT",
        "the writer's DuckDB `memory_limit`, e.g. `2GB` or `512MiB`, at least "
        f"`{MIN_DUCKDB_MEMORY_BYTES // 2**20}MiB`",
        MemoryLimit(MIN_DUCKDB_MEMORY_BYTES, "the warehouse's writes"),
        None,
        default_text=f"what one chunk's write needs: {DUCKDB_BYTES_PER_CHUNK_DATAPOINT} bytes per "
        f"datapoint of `METRICS_CHUNK_DATAPOINTS`, at least {MIN_DUCKDB_MEMORY_LIMIT_MIB} MiB "
        f"({duckdb_memory_limit_for(DEFAULT_CHUNK_DATAPOINTS)} by default); DuckDB spills "
        "to disk past it",
    )
    step_retries: int = setting(
        "METRICS_STEP_RETRIES",
        "step retries of `rds_instances`/`rds_metrics` after a transient AWS failure, {bounds}",
        Whole(0, 10),
        3,
    )
    step_retry_delay_seconds: float = setting(
        "METRICS_STEP_RETRY_DELAY_SECONDS",
        "base delay of those retries (exponential, ± one delay of jitter), seconds {bounds}",
        Number(maximum=3600),
        30.0,
    )
    slack_webhook_url: str | None = setting(
        "METRICS_SLACK_WEBHOOK_URL",
        "a Slack incoming webhook (`https://hooks.slack.com/…`) that also gets every alert "
        "line; needs the `slack` extra (`pip install 'metrics_pipeline[slack]'`, dagster-slack)",
        lambda name, text: parse_webhook_url(name, text),
        None,
        default_text="none",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        backfill, retention = variable("backfill_days"), variable("retention_days")
        cloudwatch_days = cloudwatch_retention_days(self.period_seconds)
        if self.backfill_days > cloudwatch_days:
            raise ConfigError(
                f"{backfill} ({self.backfill_days}) is more than CloudWatch keeps "
                f"{self.period_seconds} s data ({cloudwatch_days} days): those hours could "
                "never be healed."
            )
        if self.backfill_days >= self.retention_days:
            raise ConfigError(
                f"{backfill} ({self.backfill_days}) must be less than "
                f"{retention} ({self.retention_days}), or retention would delete "
                "hours the gap sensor keeps healing."
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return cls(**read_settings(cls, os.environ if environ is None else environ))

    @property
    def settle_delay(self) -> timedelta:
        return timedelta(minutes=self.settle_minutes)

    @property
    def fresh_cron(self) -> str:
        minutes = self.fresh_interval_minutes
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"


def declared(name: str) -> Field[Any]:
    """The declaration of the setting `name` (a field of Settings)."""
    for declaration in fields(Settings):
        if declaration.name == name:
            return declaration
    raise KeyError(f"no setting named {name!r}")


def variable(name: str) -> str:
    """The environment variable of the setting `name`."""
    return str(declared(name).metadata["env"])


def default_of(declaration: Field[Any]) -> Any:
    if declaration.default is not MISSING:
        return declaration.default
    if callable(declaration.default_factory):
        return declaration.default_factory()
    return MISSING


def read_setting(declaration: Field[Any], env: Mapping[str, str], read: Mapping[str, Any]) -> Any:
    """One setting's value from the environment; `read` holds those declared before it."""
    name = declaration.metadata["env"]
    raw = env.get(name)
    if raw is not None and raw.strip():
        return declaration.metadata["parse"](name, raw)
    when_unset = declaration.metadata["when_unset"]
    return when_unset(env, read) if when_unset else default_of(declaration)


def read_settings(
    model: type[StorageSettings], env: Mapping[str, str], names: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The values of `model`'s settings (or of those `names`), in their declared order."""
    read: dict[str, Any] = {}
    for declaration in fields(model):
        if names is None or declaration.name in names:
            read[declaration.name] = read_setting(declaration, env, read)
    return read


def read_value(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One setting read alone from the environment (or `environ`), for a command that needs
    it without the others."""
    return read_settings(Settings, os.environ if environ is None else environ, (name,))[name]


def resource_value(value: Any) -> Any:
    """A setting's value as a Dagster resource's field holds it (config has no path, tuple or
    None: "" means unset)."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


def resource_field(name: str) -> Any:
    """A Dagster resource's field that carries the setting `name`: its default and description
    are the setting's, and settings_for fills it from the settings."""
    declaration = declared(name)
    description = f"{declaration.metadata['description']} ({declaration.metadata['env']})"
    extra: dict[str, pydantic.JsonValue] = {SETTING_KEY: name}
    default = default_of(declaration)
    if default is MISSING:
        return pydantic.Field(description=description, json_schema_extra=extra)
    return pydantic.Field(
        default=resource_value(default), description=description, json_schema_extra=extra
    )


def settings_for(resource: type[pydantic.BaseModel], settings: StorageSettings) -> dict[str, Any]:
    """The values of `resource`'s fields that carry a setting (resource_field), from
    `settings`."""
    values = {}
    for name, info in resource.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and SETTING_KEY in extra:
            values[name] = resource_value(getattr(settings, str(extra[SETTING_KEY])))
    return values


def cloudwatch_retention_days(period_seconds: int) -> int:
    """How far back CloudWatch answers at this period: it keeps 1-minute datapoints for
    15 days, 5-minute aggregates for 63 days and hourly ones for 455 days."""
    if period_seconds % 3600 == 0:
        return CLOUDWATCH_HOURLY_DAYS
    if period_seconds % 300 == 0:
        return 63
    return 15


def _split_list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


@cache
def known_regions() -> frozenset[str]:
    session = botocore.session.get_session()
    return frozenset(
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("cloudwatch", partition_name=partition)
    )


def default_region(env: Mapping[str, str]) -> str | None:
    """The region boto3 would use: the environment first, then the active profile's config."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        value = env.get(name)
        if value is not None and value.strip():
            return value.strip()
    profile = env.get("AWS_PROFILE") or None
    try:
        region = botocore.session.Session(profile=profile).get_config_variable("region")
    except Exception:  # a missing or broken profile means there is no default region
        return None
    return str(region) if region else None


def parse_time_zone(name: str, raw: str) -> str:
    text = raw.strip()
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{name}: '{text}' is not a time zone; expected an IANA name such as "
            "'Europe/Berlin', 'America/New_York' or 'UTC'."
        ) from None
    return text


def parse_regions(name: str, raw: str) -> tuple[str, ...]:
    regions = _split_list(raw)
    if not regions:
        raise ConfigError(
            f"{name}: '{raw}' names no region; expected AWS region names "
            "such as 'us-east-1,eu-west-1'."
        )
    unknown = [region for region in regions if region not in known_regions()]
    if unknown:
        raise ConfigError(
            f"{name}: unknown region(s) {', '.join(repr(r) for r in unknown)}; "
            "expected AWS region names such as 'us-east-1' or 'eu-west-1', comma-separated."
        )
    return tuple(dict.fromkeys(regions))


def parse_path(name: str, raw: str) -> Path:
    path = Path(raw.strip()).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"{name}: '{path}' is a directory; expected the path of a DuckDB file, "
            "e.g. 'data/metrics.duckdb'."
        )
    _refuse_a_file_on_the_way(name, path.parent.resolve())
    return path.resolve()


def parse_folder(name: str, raw: str) -> Path:
    """A folder the pipeline creates if needed: refused when it, or a folder on its way, is a
    file, as the first write into it would fail far from here."""
    folder = Path(raw.strip()).expanduser().resolve()
    _refuse_a_file_on_the_way(name, folder)
    return folder


def _refuse_a_file_on_the_way(name: str, folder: Path) -> None:
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(
                    f"{name}: '{path}' is a file, not a folder; expected a folder "
                    "(missing ones are created) or a path in one."
                )
            return


def parse_warehouse(name: str, raw: str) -> str:
    """A DuckLake catalog: in PostgreSQL (many machines), or a DuckDB file (one machine),
    whose path comes back absolute."""
    text = raw.strip()
    expected = (
        "expected 'ducklake:postgres:<libpq connection string>' such as "
        "'ducklake:postgres:host=127.0.0.1 dbname=lake user=metrics', "
        "'ducklake:<path of a DuckDB catalog file>' such as 'ducklake:data/metrics.ducklake', "
        f"or unset for the DuckDB file of {variable('duckdb_path')}."
    )
    if not text.startswith(LAKE_PREFIX) or len(text) == len(LAKE_PREFIX):
        shown = redacted(text if len(text) <= 40 else text[:40] + "...")
        raise ConfigError(f"{name}: '{shown}' is not a DuckLake catalog; {expected}")
    other = OTHER_CATALOG_PREFIX.match(text)
    if other:
        raise ConfigError(
            f"{name}: a DuckLake catalog in {other.group(1)} is not supported (SQLite's lets "
            f"two writers fail each other's commits, and its extension lets a reader's SQL "
            f"read any file); {expected}"
        )
    if text.startswith(POSTGRES_CATALOG_PREFIX):
        try:
            split_password(text)
        except LakeError as error:
            raise ConfigError(str(error)) from None
        return text
    return LAKE_PREFIX + str(parse_path(name, text.removeprefix(LAKE_PREFIX)))


S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")


def parse_lake_data_path(name: str, raw: str) -> str:
    """The lake's data path, ending in '/' (DuckLake joins file names to it)."""
    text = raw.strip()
    if text.startswith("s3://"):
        if not S3_URL.match(text):
            raise ConfigError(
                f"{name}: '{text}' is not an S3 location; expected "
                "'s3://bucket/prefix/' with a valid bucket name."
            )
        return text.rstrip("/") + "/"
    if "://" in text:
        raise ConfigError(f"{name}: '{text}' is neither 's3://bucket/prefix/' nor a folder.")
    return f"{parse_folder(name, text)}/"


def parse_int(name: str, raw: str, minimum: int = 0, maximum: int = 10**9) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: '{raw}' is not a whole number.") from None
    if not minimum <= value <= maximum:
        raise ConfigError(
            f"{name}: {value} is not allowed; expected a whole number from {minimum:,} "
            f"to {maximum:,}."
        )
    return value


def parse_positive_float(name: str, raw: str, minimum: float = 0.0, maximum: float = 1e9) -> float:
    """A finite number above `minimum` (exclusive when 0) and at most `maximum`."""
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}: '{raw}' is not a number.") from None
    low_ok = value > 0 if minimum == 0 else value >= minimum
    if not (math.isfinite(value) and low_ok and value <= maximum):
        low = "> 0" if minimum == 0 else f">= {minimum:g}"
        raise ConfigError(
            f"{name}: {text} is not allowed; expected a number {low} and at most {maximum:g}."
        )
    return value


_MEMORY_LIMIT = re.compile(r"^(\d+(?:\.\d+)?)\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)
_MEMORY_UNITS = {
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def parse_role_arns(name: str, raw: str) -> tuple[str, ...]:
    arns = _split_list(raw)
    for arn in arns:
        if not ROLE_ARN.match(arn):
            raise ConfigError(
                f"{name}: '{arn}' is not allowed; expected IAM role ARNs such as "
                "'arn:aws:iam::123456789012:role/metrics-reader', comma-separated."
            )
    return tuple(dict.fromkeys(arns))


def parse_memory_limit(name: str, raw: str, minimum_bytes: int, purpose: str) -> str:
    """DuckDB's own memory_limit syntax, within what DuckDB can hold."""
    value = raw.strip()
    if not _MEMORY_LIMIT.match(value):
        raise ConfigError(
            f"{name}: '{raw}' is not allowed; expected an amount such as "
            "'2GB' or '512MiB' (KB, MB, GB, TB or KiB, MiB, GiB, TiB)."
        )
    if memory_bytes(value) < minimum_bytes:
        raise ConfigError(
            f"{name}: '{value}' is too little for {purpose}; expected at least "
            f"{minimum_bytes // 2**20}MiB."
        )
    if memory_bytes(value) > MAX_MEMORY_BYTES:
        raise ConfigError(
            f"{name}: '{value}' is more than DuckDB can take as a memory limit; expected at "
            "most 1PiB."
        )
    return value


def memory_bytes(amount: str) -> int:
    """The bytes of a memory amount that parse_memory_limit accepted."""
    matched = _MEMORY_LIMIT.match(amount.strip())
    if matched is None:
        raise ValueError(f"{amount!r} is not a memory amount")
    number, unit = matched.groups()
    return int(float(number) * _MEMORY_UNITS[unit.lower()])


def parse_group(name: str, raw: str) -> str:
    group = raw.strip()
    try:
        grp.getgrnam(group)
    except KeyError:
        raise ConfigError(
            f"{name}: '{group}' is not a group of this machine; expected the name "
            "of an existing group (see getent group)."
        ) from None
    return group


def parse_webhook_url(name: str, raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("https://", "http://")):
        raise ConfigError(
            f"{name}: '{value}' is not allowed; expected the https:// URL of "
            "a Slack incoming webhook."
        )
    return value


def parse_http_url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(
            f"{name}: '{value}' is not allowed; expected an http:// or https:// address such as "
            "http://127.0.0.1:8050."
        )
    return value


def parse_fraction(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}: '{raw}' is not allowed; expected a fraction from 0 to 1.")
    return value


def parse_choice(name: str, raw: str, allowed: Sequence[int]) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value not in allowed:
        raise ConfigError(
            f"{name}: '{raw}' is not allowed; expected one of {', '.join(map(str, allowed))}."
        )
    return value


SWITCH_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def parse_switch(name: str, raw: str) -> bool:
    value = SWITCH_WORDS.get(raw.strip().lower())
    if value is None:
        raise ConfigError(f"{name}: '{raw}' is not allowed; expected true or false.")
    return value


def parse_period(name: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value <= 0 or value % 60 or 3600 % value:
        raise ConfigError(
            f"{name}: '{raw}' is not allowed; expected a positive multiple of 60 "
            "that divides an hour (60, 120, 180, 240, 300, 360, 600, 720, 900, 1200, 1800, 3600)."
        )
    return value


def parse_fresh_interval(name: str, raw: str) -> int:
    minutes = parse_int(name, raw, minimum=1)
    if 60 % minutes:
        raise ConfigError(
            f"{name}: {minutes} is not allowed; expected a number of "
            "minutes that divides an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)."
        )
    return minutes


def parse_metrics(
    name: str, raw: str, known: Collection[str] = RDS_METRIC_UNITS, what: str = "AWS/RDS metrics"
) -> tuple[str, ...]:
    metrics = _split_list(raw)
    unknown = [metric for metric in metrics if metric not in known]
    if unknown or not metrics:
        raise ConfigError(
            f"{name}: unknown metric(s) {', '.join(repr(m) for m in unknown)}; "
            f"known {what} are: {', '.join(known)}."
        )
    return tuple(dict.fromkeys(metrics))


def parse_statistics(name: str, raw: str) -> tuple[str, ...]:
    statistics = _split_list(raw)
    unknown = [stat for stat in statistics if stat not in STATISTIC_COLUMNS]
    if unknown or not statistics:
        raise ConfigError(
            f"{name}: unknown statistic(s) {', '.join(repr(s) for s in unknown)}; "
            f"allowed: {', '.join(STATISTIC_COLUMNS)}."
        )
    return tuple(dict.fromkeys(statistics))


def rolling_start(retention_days: int) -> datetime:
    """Midnight UTC `retention_days` ago: the UI lists the hours the warehouse can hold,
    not months of hours that retention would delete anyway."""
    today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=retention_days)


def parse_start(name: str, raw: str) -> datetime:
    try:
        start = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ConfigError(
            f"{name}: '{raw}' is not a date; expected YYYY-MM-DD or YYYY-MM-DDTHH:00 (UTC)."
        ) from None
    if start.tzinfo is not None:
        raise ConfigError(f"{name}: '{raw}' has a time zone; give the UTC hour without one.")
    if start.minute or start.second or start.microsecond:
        raise ConfigError(f"{name}: '{raw}' must fall on a whole hour.")
    now = datetime.now(UTC).replace(tzinfo=None)
    if start > now:
        raise ConfigError(f"{name}: '{raw}' is in the future; expected a past hour (UTC).")
    if (now - start) // timedelta(hours=1) >= MAX_PARTITIONS:
        raise ConfigError(
            f"{name}: '{raw}' would make more than {MAX_PARTITIONS:,} hourly "
            "partitions (Dagster's limit per asset); choose a later start."
        )
    return start


def configuration_reference() -> str:
    """The table of docs/operations.md: one row per setting, in the order declared above."""
    rows = ["| variable | default | allowed |", "|---|---|---|"]
    rows += [
        f"| `{f.metadata['env']}` | {f.metadata['default_text']} | {f.metadata['description']} |"
        for f in fields(Settings)
    ]
    return "\n".join(rows) + "\n"


def look_back_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, timedelta]:
    """The gap sensor's look-back (METRICS_BACKFILL_DAYS) and the settle delay, for readers
    that need its window without the AWS settings (the command-line tool)."""
    backfill_days = read_value("backfill_days", environ)
    return backfill_days, timedelta(minutes=read_value("settle_minutes", environ))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of a deployment, from the environment (or `environ`)."""
    return Settings.from_env(environ)
