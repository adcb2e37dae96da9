"""Every setting of the pipeline, read from the environment and validated in one place.

Each setting has one name (the environment variable), one default, one check and one line of
documentation (the configuration reference in docs/operations.md is generated from the fields
below); a bad value raises :class:`ConfigError` naming the variable and what is allowed, before
any AWS or DuckDB call is made. Nothing here is read at import: the definitions read the
environment when Dagster loads them, the command-line tool when it starts.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session

from metrics_pipeline.catalog import (
    DEFAULT_METRICS,
    DEFAULT_STATISTICS,
    RDS_METRIC_UNITS,
    STATISTIC_COLUMNS,
)
from metrics_pipeline.warehouse.lake import LAKE_PREFIX, Lake, LakeError, redacted, split_password
from metrics_pipeline.warehouse.permissions import group_id, make_folder

# Relative to the working directory of the process (the project folder for `dagster dev` and
# scripts/start.sh), never to where the package is installed.
DEFAULT_DUCKDB_PATH = Path("data") / "metrics.duckdb"

DEFAULT_PERIOD_SECONDS = 300
DEFAULT_SETTLE_MINUTES = 15
DEFAULT_MAX_REQUESTS_PER_SECOND = 10.0
DEFAULT_AWS_MAX_ATTEMPTS = 8
# botocore's own bounds on each connection attempt and each read from the socket.
DEFAULT_AWS_CONNECT_TIMEOUT_SECONDS = 10.0
DEFAULT_AWS_READ_TIMEOUT_SECONDS = 60.0
# Bounds on whole answers, which botocore does not have: a chunk's GetMetricData requests
# (some 20 pages of 100,800 datapoints, a minute at CloudWatch's quota) and a run's fetching.
DEFAULT_CHUNK_TIMEOUT_SECONDS = 600.0
DEFAULT_RUN_TIMEOUT_SECONDS = 3600.0
MAX_TIMEOUT_SECONDS = 86_400.0
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
DEFAULT_FRESH_INTERVAL_MINUTES = 15
DEFAULT_BACKFILL_DAYS = 3
DEFAULT_BACKFILL_INTERVAL_MINUTES = 60
# About 50 full GetMetricData pages: some 13 s of CloudWatch's 396,000 datapoints/s quota for
# data older than 3 hours, and a run whose write stays within about 1.5 GiB.
# What CloudWatch serves one account and region in two of the gap sensor's one-minute ticks
# (396,000 datapoints per second for data older than three hours): the sensor's default
# amount of work per tick, so that a history comes in at the quota's pace.
BACKFILL_QUOTA_DATAPOINTS_PER_TICK = 396_000 * 120
DEFAULT_RETENTION_DAYS = 7
DEFAULT_FRESHNESS_MINUTES = 30
DEFAULT_LOCK_TIMEOUT_SECONDS = 120.0
DEFAULT_COMPLETENESS_WARN = 0.9
DEFAULT_BACKUP_KEEP_DAYS = 7
# Analysts' queries on a laptop: DuckDB's memory for one, and how long one may run.
DEFAULT_QUERY_MEMORY_LIMIT = "1GB"
DEFAULT_QUERY_TIMEOUT_SECONDS = 300.0
MAX_QUERY_TIMEOUT_SECONDS = 86_400
DEFAULT_STEP_RETRIES = 3
DEFAULT_STEP_RETRY_DELAY_SECONDS = 30.0
# Dagster's guidance is at most 100,000 partitions per asset: that many hours.
MAX_PARTITIONS = 100_000
MAX_RETENTION_DAYS = MAX_PARTITIONS // 24 - 1
MAX_BACKUP_KEEP_DAYS = 3650


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


def setting(
    env: str, default_text: str, allowed: str, default: Any = MISSING, **kwargs: Any
) -> Any:
    """A settings field with its environment variable and its line of the reference."""
    metadata = {"env": env, "default_text": default_text, "allowed": allowed}
    return field(default=default, metadata=metadata, **kwargs)


@dataclass(frozen=True, kw_only=True)
class StorageSettings:
    """Where the warehouse and its backups live and how long they are kept: all that a reader
    (the command-line tool, a notebook) needs, with no AWS setting."""

    duckdb_path: Path = setting(
        "METRICS_DUCKDB_PATH",
        "`data/metrics.duckdb` under the working directory (created)",
        "a writable file path",
        default_factory=lambda: DEFAULT_DUCKDB_PATH.resolve(),
    )
    warehouse: str | None = setting(
        "METRICS_WAREHOUSE",
        "none: the DuckDB file of METRICS_DUCKDB_PATH",
        "a DuckLake catalog that processes on many machines share, "
        "`ducklake:postgres:<libpq connection string>` such as "
        "`ducklake:postgres:host=db.internal dbname=lake user=metrics` (docs/scale-out.md); "
        "its password best in `~/.pgpass` or PGPASSFILE (one given here is never shown)",
        None,
    )
    lake_data_path: str | None = setting(
        "METRICS_LAKE_DATA_PATH",
        "none; required with METRICS_WAREHOUSE",
        "where the lake's Parquet files go: `s3://bucket/prefix/` (endpoint and credentials "
        "from the usual AWS environment) or a folder",
        None,
    )
    retention_days: int = setting(
        "METRICS_RETENTION_DAYS",
        f"`{DEFAULT_RETENTION_DAYS}`",
        f"days of metrics kept, 1 to {MAX_RETENTION_DAYS:,} (Dagster's guidance of at most "
        f"{MAX_PARTITIONS:,} partitions)",
        DEFAULT_RETENTION_DAYS,
    )
    backup_dir: Path | None = setting(
        "METRICS_BACKUP_DIR", "`backups` next to the DuckDB file", "a folder for backups", None
    )
    backup_keep_days: int = setting(
        "METRICS_BACKUP_KEEP_DAYS",
        f"`{DEFAULT_BACKUP_KEEP_DAYS}`",
        f"days of backups kept (the newest is always kept), 1 to {MAX_BACKUP_KEEP_DAYS:,}",
        DEFAULT_BACKUP_KEEP_DAYS,
    )
    shared_group: str | None = setting(
        "METRICS_SHARED_GROUP",
        "none: the files are the owner's alone",
        "a group of this machine whose members may read the snapshot (analysts); the "
        "warehouse itself and the backups stay the owner's",
        None,
    )
    lock_timeout_seconds: float = setting(
        "METRICS_LOCK_TIMEOUT_SECONDS",
        f"`{DEFAULT_LOCK_TIMEOUT_SECONDS:g}`",
        "how long a writer waits for the DuckDB file, seconds > 0 and at most 86,400",
        DEFAULT_LOCK_TIMEOUT_SECONDS,
    )
    query_memory_limit: str = setting(
        "METRICS_QUERY_MEMORY_LIMIT",
        f"`{DEFAULT_QUERY_MEMORY_LIMIT}`",
        "DuckDB's `memory_limit` for analysts' queries (`metrics-pipeline query`, "
        "`query.connect()`, `query.run_sql()`), `64MiB` to `1PiB`; the reading commands' "
        "whole process is held to twice it plus 256 MiB and 16 MiB per CPU (docs/analysts.md)",
        DEFAULT_QUERY_MEMORY_LIMIT,
    )
    query_timeout_seconds: float = setting(
        "METRICS_QUERY_TIMEOUT_SECONDS",
        f"`{DEFAULT_QUERY_TIMEOUT_SECONDS:g}`",
        "how long an analyst's query (`metrics-pipeline query`, `query.run_sql()`) may run, "
        f"writing its result included, before it is stopped; seconds > 0 and at most "
        f"{MAX_QUERY_TIMEOUT_SECONDS:,}",
        DEFAULT_QUERY_TIMEOUT_SECONDS,
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StorageSettings:
        return cls(**_storage_fields(os.environ if environ is None else environ))

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


def snapshot_path_for(database: Path) -> Path:
    """The readers' copy of the warehouse, next to it (see snapshot.py)."""
    return database.with_name(f"{database.stem}.snapshot{database.suffix or '.duckdb'}")


def default_backup_dir(database: Path) -> Path:
    return database.parent / "backups"


def _storage_fields(env: Mapping[str, str]) -> dict[str, Any]:
    warehouse = parse_warehouse(env.get("METRICS_WAREHOUSE"))
    return {
        "duckdb_path": parse_path(env.get("METRICS_DUCKDB_PATH")),
        "warehouse": warehouse,
        "lake_data_path": parse_lake_data_path(env.get("METRICS_LAKE_DATA_PATH"), warehouse),
        "retention_days": parse_int(
            "METRICS_RETENTION_DAYS",
            env.get("METRICS_RETENTION_DAYS"),
            DEFAULT_RETENTION_DAYS,
            minimum=1,
            maximum=MAX_RETENTION_DAYS,
        ),
        "backup_dir": parse_folder("METRICS_BACKUP_DIR", env.get("METRICS_BACKUP_DIR")),
        "backup_keep_days": parse_int(
            "METRICS_BACKUP_KEEP_DAYS",
            env.get("METRICS_BACKUP_KEEP_DAYS"),
            DEFAULT_BACKUP_KEEP_DAYS,
            minimum=1,
            maximum=MAX_BACKUP_KEEP_DAYS,
        ),
        "shared_group": parse_group(env.get("METRICS_SHARED_GROUP")),
        "lock_timeout_seconds": parse_positive_float(
            "METRICS_LOCK_TIMEOUT_SECONDS",
            env.get("METRICS_LOCK_TIMEOUT_SECONDS"),
            DEFAULT_LOCK_TIMEOUT_SECONDS,
            maximum=86_400,
        ),
        "query_memory_limit": parse_memory_limit(
            env.get("METRICS_QUERY_MEMORY_LIMIT"),
            "METRICS_QUERY_MEMORY_LIMIT",
            minimum_bytes=MIN_QUERY_MEMORY_BYTES,
            purpose="a query",
        )
        or DEFAULT_QUERY_MEMORY_LIMIT,
        "query_timeout_seconds": parse_positive_float(
            "METRICS_QUERY_TIMEOUT_SECONDS",
            env.get("METRICS_QUERY_TIMEOUT_SECONDS"),
            DEFAULT_QUERY_TIMEOUT_SECONDS,
            maximum=MAX_QUERY_TIMEOUT_SECONDS,
        ),
    }


@dataclass(frozen=True, kw_only=True)
class Settings(StorageSettings):
    regions: tuple[str, ...] = setting(
        "METRICS_AWS_REGIONS",
        "boto3's default region",
        "comma-separated AWS region names",
    )
    period_seconds: int = setting(
        "METRICS_PERIOD_SECONDS",
        f"`{DEFAULT_PERIOD_SECONDS}`",
        "a multiple of 60 that divides an hour (60 for 1-minute detail)",
        DEFAULT_PERIOD_SECONDS,
    )
    metrics: tuple[str, ...] = setting(
        "METRICS_CLOUDWATCH_METRICS",
        f"the {len(DEFAULT_METRICS)} below",
        "comma-separated AWS/RDS metric names (e.g. `ReplicaLag`, `BurstBalance`)",
        DEFAULT_METRICS,
    )
    statistics: tuple[str, ...] = setting(
        "METRICS_STATISTICS",
        f"`{','.join(DEFAULT_STATISTICS)}`",
        "any of those",
        DEFAULT_STATISTICS,
    )
    settle_minutes: int = setting(
        "METRICS_SETTLE_MINUTES",
        f"`{DEFAULT_SETTLE_MINUTES}`",
        "whole minutes from 0 to 1,440 after an hour ends before its data counts as final",
        DEFAULT_SETTLE_MINUTES,
    )
    partitions_start: datetime = setting(
        "METRICS_PARTITIONS_START",
        "midnight UTC `METRICS_RETENTION_DAYS` days ago (as of load)",
        "first partition, `YYYY-MM-DD` or `YYYY-MM-DDTHH:00` (UTC), in the past and at most "
        f"{MAX_PARTITIONS:,} hours ago",
        default_factory=lambda: rolling_start(DEFAULT_RETENTION_DAYS),
    )
    role_arns: tuple[str, ...] = setting(
        "METRICS_AWS_ROLE_ARNS",
        "none: the pipeline's own account only",
        "comma-separated IAM role ARNs (`arn:aws:iam::<account>:role/<name>`), one per other "
        "account to collect; the pipeline's own account is always collected",
        (),
    )
    organization_role: str | None = setting(
        "METRICS_AWS_ORGANIZATION_ROLE",
        "none",
        "a role name assumed in every active account of the AWS Organization (listed with "
        "`organizations:ListAccounts`), e.g. `OrganizationAccountAccessRole`",
        None,
    )
    external_id: str | None = setting(
        "METRICS_AWS_EXTERNAL_ID",
        "none",
        "the ExternalId the roles' trust policies ask for, 2 to 1,224 characters of "
        "letters, digits and `+=,.@:/-_`",
        None,
    )
    role_session_name: str = setting(
        "METRICS_AWS_ROLE_SESSION_NAME",
        f"`{DEFAULT_ROLE_SESSION_NAME}`",
        "the RoleSessionName of the assumed roles (CloudTrail shows it), 2 to 64 characters of "
        "letters, digits and `+=,.@-_`",
        DEFAULT_ROLE_SESSION_NAME,
    )
    max_requests_per_second: float = setting(
        "METRICS_MAX_REQUESTS_PER_SECOND",
        f"`{DEFAULT_MAX_REQUESTS_PER_SECOND:g}`",
        "client-side cap per account and region, from 0.5 (botocore's slowest) to 1,000",
        DEFAULT_MAX_REQUESTS_PER_SECOND,
    )
    aws_max_attempts: int = setting(
        "METRICS_AWS_MAX_ATTEMPTS",
        f"`{DEFAULT_AWS_MAX_ATTEMPTS}`",
        "attempts per AWS call (botocore adaptive retries), 1 to 50",
        DEFAULT_AWS_MAX_ATTEMPTS,
    )
    aws_connect_timeout_seconds: float = setting(
        "METRICS_AWS_CONNECT_TIMEOUT_SECONDS",
        f"`{DEFAULT_AWS_CONNECT_TIMEOUT_SECONDS:g}`",
        "seconds to open a connection to AWS (botocore `connect_timeout`, each attempt), "
        "> 0 and at most 3,600",
        DEFAULT_AWS_CONNECT_TIMEOUT_SECONDS,
    )
    aws_read_timeout_seconds: float = setting(
        "METRICS_AWS_READ_TIMEOUT_SECONDS",
        f"`{DEFAULT_AWS_READ_TIMEOUT_SECONDS:g}`",
        "seconds AWS may stay silent during an answer (botocore `read_timeout`, each read "
        "from the socket, not a whole answer), > 0 and at most 3,600",
        DEFAULT_AWS_READ_TIMEOUT_SECONDS,
    )
    chunk_timeout_seconds: float = setting(
        "METRICS_CHUNK_TIMEOUT_SECONDS",
        f"`{DEFAULT_CHUNK_TIMEOUT_SECONDS:g}`",
        "seconds a chunk's GetMetricData answers may take in all (a trickled answer, endless "
        "pages); past it the chunk fails, its hours stay gaps for the gap sensor; > 0 and at "
        f"most {MAX_TIMEOUT_SECONDS:,.0f}",
        DEFAULT_CHUNK_TIMEOUT_SECONDS,
    )
    run_timeout_seconds: float = setting(
        "METRICS_RUN_TIMEOUT_SECONDS",
        f"`{DEFAULT_RUN_TIMEOUT_SECONDS:g}`",
        "seconds a collection run's fetching may take in all; past it the run fails, the "
        "chunks written by then stay written; > 0 and at most "
        f"{MAX_TIMEOUT_SECONDS:,.0f}",
        DEFAULT_RUN_TIMEOUT_SECONDS,
    )
    chunk_datapoints: int = setting(
        "METRICS_CHUNK_DATAPOINTS",
        f"`{DEFAULT_CHUNK_DATAPOINTS}`",
        f"datapoints fetched and written at once, {MIN_CHUNK_DATAPOINTS:,} to "
        f"{MAX_CHUNK_DATAPOINTS:,}: a run's memory follows it, not the window or the fleet",
        DEFAULT_CHUNK_DATAPOINTS,
    )
    fetch_threads: int = setting(
        "METRICS_FETCH_THREADS",
        f"`{DEFAULT_FETCH_THREADS}`",
        f"chunks fetched at once across accounts and regions, 1 to {MAX_FETCH_THREADS}",
        DEFAULT_FETCH_THREADS,
    )
    fresh_interval_minutes: int = setting(
        "METRICS_FRESH_INTERVAL_MINUTES",
        f"`{DEFAULT_FRESH_INTERVAL_MINUTES}`",
        "minutes between fresh ticks, a divisor of 60",
        DEFAULT_FRESH_INTERVAL_MINUTES,
    )
    backfill_days: int = setting(
        "METRICS_BACKFILL_DAYS",
        f"`{DEFAULT_BACKFILL_DAYS}`",
        "days the gap sensor looks back, ≥ 1, < `METRICS_RETENTION_DAYS` and within "
        "CloudWatch's retention at the period (15 days at 60 s, 63 at 300 s)",
        DEFAULT_BACKFILL_DAYS,
    )
    backfill_interval_minutes: int = setting(
        "METRICS_BACKFILL_INTERVAL_MINUTES",
        f"`{DEFAULT_BACKFILL_INTERVAL_MINUTES}`",
        "minutes between the gap sensor's looks for gaps when nothing is left to heal, 1 to 1,440",
        DEFAULT_BACKFILL_INTERVAL_MINUTES,
    )
    backfill_max_datapoints_per_tick: int | None = setting(
        "METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK",
        "CloudWatch's quota for older data over two sensor ticks, per account and region in "
        f"the inventory ({BACKFILL_QUOTA_DATAPOINTS_PER_TICK:,} each)",
        "CloudWatch datapoints the gap sensor asks for per tick at most (instances × hours × "
        "metrics × statistics × periods per hour), ≥ 1",
        None,
    )
    freshness_minutes: int = setting(
        "METRICS_FRESHNESS_MINUTES",
        f"`{DEFAULT_FRESHNESS_MINUTES}`",
        "the freshness check's bound in minutes, 1 to 10,080",
        DEFAULT_FRESHNESS_MINUTES,
    )
    completeness_warn: float = setting(
        "METRICS_COMPLETENESS_WARN",
        f"`{DEFAULT_COMPLETENESS_WARN}`",
        "the completeness check warns below this fraction (0 to 1)",
        DEFAULT_COMPLETENESS_WARN,
    )
    duckdb_memory_limit: str | None = setting(
        "METRICS_DUCKDB_MEMORY_LIMIT",
        f"what one chunk's write needs: {DUCKDB_BYTES_PER_CHUNK_DATAPOINT} bytes per "
        f"datapoint of `METRICS_CHUNK_DATAPOINTS`, at least {MIN_DUCKDB_MEMORY_LIMIT_MIB} MiB "
        f"({duckdb_memory_limit_for(DEFAULT_CHUNK_DATAPOINTS)} by default); DuckDB spills "
        "to disk past it",
        "the writer's DuckDB `memory_limit`, e.g. `2GB` or `512MiB`, at least `128MiB`",
        None,
    )
    step_retries: int = setting(
        "METRICS_STEP_RETRIES",
        f"`{DEFAULT_STEP_RETRIES}`",
        "step retries of `rds_instances`/`rds_metrics` after a transient AWS failure, 0 to 10",
        DEFAULT_STEP_RETRIES,
    )
    step_retry_delay_seconds: float = setting(
        "METRICS_STEP_RETRY_DELAY_SECONDS",
        f"`{DEFAULT_STEP_RETRY_DELAY_SECONDS:g}`",
        "base delay of those retries (exponential, ± one delay of jitter), seconds > 0 and at "
        "most 3,600",
        DEFAULT_STEP_RETRY_DELAY_SECONDS,
    )
    slack_webhook_url: str | None = setting(
        "METRICS_SLACK_WEBHOOK_URL",
        "none",
        "a Slack incoming webhook (`https://hooks.slack.com/…`) that also gets every alert "
        "line; needs the `slack` extra (`pip install 'metrics_pipeline[slack]'`, dagster-slack)",
        None,
    )

    def __post_init__(self) -> None:
        cloudwatch_days = cloudwatch_retention_days(self.period_seconds)
        if self.backfill_days > cloudwatch_days:
            raise ConfigError(
                f"METRICS_BACKFILL_DAYS ({self.backfill_days}) is more than CloudWatch keeps "
                f"{self.period_seconds} s data ({cloudwatch_days} days): those hours could "
                "never be healed."
            )
        if self.backfill_days >= self.retention_days:
            raise ConfigError(
                f"METRICS_BACKFILL_DAYS ({self.backfill_days}) must be less than "
                f"METRICS_RETENTION_DAYS ({self.retention_days}), or retention would delete "
                "hours the gap sensor keeps healing."
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        storage = _storage_fields(env)
        return cls(
            **storage,
            regions=parse_regions(env.get("METRICS_AWS_REGIONS"), default_region(env)),
            period_seconds=parse_period(env.get("METRICS_PERIOD_SECONDS")),
            metrics=parse_metrics(env.get("METRICS_CLOUDWATCH_METRICS")),
            statistics=parse_statistics(env.get("METRICS_STATISTICS")),
            **_look_back_fields(env),
            partitions_start=parse_start(
                env.get("METRICS_PARTITIONS_START"), storage["retention_days"]
            ),
            role_arns=parse_role_arns(env.get("METRICS_AWS_ROLE_ARNS")),
            organization_role=parse_aws_name(
                "METRICS_AWS_ORGANIZATION_ROLE",
                env.get("METRICS_AWS_ORGANIZATION_ROLE"),
                ROLE_NAME,
                "a role name of 1 to 64 letters, digits and +=,.@-_",
            ),
            external_id=parse_aws_name(
                "METRICS_AWS_EXTERNAL_ID",
                env.get("METRICS_AWS_EXTERNAL_ID"),
                EXTERNAL_ID,
                "2 to 1,224 letters, digits and +=,.@:/-_",
            ),
            role_session_name=parse_aws_name(
                "METRICS_AWS_ROLE_SESSION_NAME",
                env.get("METRICS_AWS_ROLE_SESSION_NAME"),
                SESSION_NAME,
                "2 to 64 letters, digits and +=,.@-_",
            )
            or DEFAULT_ROLE_SESSION_NAME,
            chunk_datapoints=parse_int(
                "METRICS_CHUNK_DATAPOINTS",
                env.get("METRICS_CHUNK_DATAPOINTS"),
                DEFAULT_CHUNK_DATAPOINTS,
                minimum=MIN_CHUNK_DATAPOINTS,
                maximum=MAX_CHUNK_DATAPOINTS,
            ),
            fetch_threads=parse_int(
                "METRICS_FETCH_THREADS",
                env.get("METRICS_FETCH_THREADS"),
                DEFAULT_FETCH_THREADS,
                minimum=1,
                maximum=MAX_FETCH_THREADS,
            ),
            max_requests_per_second=parse_positive_float(
                "METRICS_MAX_REQUESTS_PER_SECOND",
                env.get("METRICS_MAX_REQUESTS_PER_SECOND"),
                DEFAULT_MAX_REQUESTS_PER_SECOND,
                # botocore's token bucket cannot go slower; CloudWatch allows 50 per second.
                minimum=0.5,
                maximum=1000,
            ),
            aws_max_attempts=parse_int(
                "METRICS_AWS_MAX_ATTEMPTS",
                env.get("METRICS_AWS_MAX_ATTEMPTS"),
                DEFAULT_AWS_MAX_ATTEMPTS,
                minimum=1,
                maximum=50,
            ),
            aws_connect_timeout_seconds=parse_positive_float(
                "METRICS_AWS_CONNECT_TIMEOUT_SECONDS",
                env.get("METRICS_AWS_CONNECT_TIMEOUT_SECONDS"),
                DEFAULT_AWS_CONNECT_TIMEOUT_SECONDS,
                maximum=3600,
            ),
            aws_read_timeout_seconds=parse_positive_float(
                "METRICS_AWS_READ_TIMEOUT_SECONDS",
                env.get("METRICS_AWS_READ_TIMEOUT_SECONDS"),
                DEFAULT_AWS_READ_TIMEOUT_SECONDS,
                maximum=3600,
            ),
            chunk_timeout_seconds=parse_positive_float(
                "METRICS_CHUNK_TIMEOUT_SECONDS",
                env.get("METRICS_CHUNK_TIMEOUT_SECONDS"),
                DEFAULT_CHUNK_TIMEOUT_SECONDS,
                maximum=MAX_TIMEOUT_SECONDS,
            ),
            run_timeout_seconds=parse_positive_float(
                "METRICS_RUN_TIMEOUT_SECONDS",
                env.get("METRICS_RUN_TIMEOUT_SECONDS"),
                DEFAULT_RUN_TIMEOUT_SECONDS,
                maximum=MAX_TIMEOUT_SECONDS,
            ),
            fresh_interval_minutes=parse_fresh_interval(env.get("METRICS_FRESH_INTERVAL_MINUTES")),
            backfill_interval_minutes=parse_int(
                "METRICS_BACKFILL_INTERVAL_MINUTES",
                env.get("METRICS_BACKFILL_INTERVAL_MINUTES"),
                DEFAULT_BACKFILL_INTERVAL_MINUTES,
                minimum=1,
                maximum=1440,
            ),
            backfill_max_datapoints_per_tick=parse_optional_int(
                "METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK",
                env.get("METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK"),
                minimum=1,
            ),
            freshness_minutes=parse_int(
                "METRICS_FRESHNESS_MINUTES",
                env.get("METRICS_FRESHNESS_MINUTES"),
                DEFAULT_FRESHNESS_MINUTES,
                minimum=1,
                maximum=10_080,
            ),
            completeness_warn=parse_fraction(
                "METRICS_COMPLETENESS_WARN",
                env.get("METRICS_COMPLETENESS_WARN"),
                DEFAULT_COMPLETENESS_WARN,
            ),
            duckdb_memory_limit=parse_memory_limit(env.get("METRICS_DUCKDB_MEMORY_LIMIT")),
            step_retries=parse_int(
                "METRICS_STEP_RETRIES",
                env.get("METRICS_STEP_RETRIES"),
                DEFAULT_STEP_RETRIES,
                maximum=10,
            ),
            step_retry_delay_seconds=parse_positive_float(
                "METRICS_STEP_RETRY_DELAY_SECONDS",
                env.get("METRICS_STEP_RETRY_DELAY_SECONDS"),
                DEFAULT_STEP_RETRY_DELAY_SECONDS,
                maximum=3600,
            ),
            slack_webhook_url=parse_webhook_url(env.get("METRICS_SLACK_WEBHOOK_URL")),
        )

    @property
    def settle_delay(self) -> timedelta:
        return timedelta(minutes=self.settle_minutes)

    @property
    def fresh_cron(self) -> str:
        minutes = self.fresh_interval_minutes
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"


def cloudwatch_retention_days(period_seconds: int) -> int:
    """How far back CloudWatch answers at this period: it keeps 1-minute datapoints for
    15 days, 5-minute aggregates for 63 days and hourly ones for 455 days."""
    if period_seconds % 3600 == 0:
        return 455
    if period_seconds % 300 == 0:
        return 63
    return 15


def _is_set(raw: str | None) -> bool:
    return raw is not None and raw.strip() != ""


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
        if _is_set(env.get(name)):
            return env[name].strip()
    profile = env.get("AWS_PROFILE") or None
    try:
        return botocore.session.Session(profile=profile).get_config_variable("region")
    except Exception:  # a missing or broken profile means there is no default region
        return None


def parse_regions(raw: str | None, fallback: str | None) -> tuple[str, ...]:
    if _is_set(raw):
        regions = _split_list(raw)  # type: ignore[arg-type]
        if not regions:
            raise ConfigError(
                f"METRICS_AWS_REGIONS: '{raw}' names no region; expected AWS region names "
                "such as 'us-east-1,eu-west-1'."
            )
    elif fallback:
        regions = [fallback]
    else:
        raise ConfigError(
            "METRICS_AWS_REGIONS is not set and boto3 has no default region: set "
            "METRICS_AWS_REGIONS (e.g. 'us-east-1,eu-west-1') or AWS_REGION/AWS_DEFAULT_REGION."
        )
    unknown = [region for region in regions if region not in known_regions()]
    if unknown:
        raise ConfigError(
            f"METRICS_AWS_REGIONS: unknown region(s) {', '.join(repr(r) for r in unknown)}; "
            "expected AWS region names such as 'us-east-1' or 'eu-west-1', comma-separated."
        )
    return tuple(dict.fromkeys(regions))


def parse_path(raw: str | None) -> Path:
    if not _is_set(raw):
        return DEFAULT_DUCKDB_PATH.resolve()
    path = Path(raw.strip()).expanduser()  # type: ignore[union-attr]
    if path.is_dir():
        raise ConfigError(
            f"METRICS_DUCKDB_PATH: '{path}' is a directory; expected the path of a DuckDB file, "
            "e.g. 'data/metrics.duckdb'."
        )
    _refuse_a_file_on_the_way("METRICS_DUCKDB_PATH", path.parent.resolve())
    return path.resolve()


def parse_folder(name: str, raw: str | None) -> Path | None:
    """A folder the pipeline creates if needed: refused when it, or a folder on its way, is a
    file, as the first write into it would fail far from here."""
    if not _is_set(raw):
        return None
    folder = Path(raw.strip()).expanduser().resolve()  # type: ignore[union-attr]
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


def parse_warehouse(raw: str | None) -> str | None:
    if not _is_set(raw):
        return None
    text = raw.strip()  # type: ignore[union-attr]
    if not text.startswith(LAKE_PREFIX) or len(text) == len(LAKE_PREFIX):
        shown = redacted(text if len(text) <= 40 else text[:40] + "...")
        raise ConfigError(
            f"METRICS_WAREHOUSE: '{shown}' is not a DuckLake catalog; expected "
            "'ducklake:postgres:<libpq connection string>' such as "
            "'ducklake:postgres:host=127.0.0.1 dbname=lake user=metrics', or unset for the "
            "DuckDB file of METRICS_DUCKDB_PATH."
        )
    try:
        split_password(text)
    except LakeError as error:
        raise ConfigError(str(error)) from None
    return text


S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")


def parse_lake_data_path(raw: str | None, warehouse: str | None) -> str | None:
    """The lake's data path, ending in '/' (DuckLake joins file names to it)."""
    if not _is_set(raw):
        if warehouse:
            raise ConfigError(
                "METRICS_LAKE_DATA_PATH: required with METRICS_WAREHOUSE; expected where the "
                "lake's Parquet files go, 's3://bucket/prefix/' or a folder."
            )
        return None
    if not warehouse:
        raise ConfigError(
            "METRICS_LAKE_DATA_PATH: set without METRICS_WAREHOUSE; set both for a DuckLake "
            "warehouse, or neither for the DuckDB file."
        )
    text = raw.strip()  # type: ignore[union-attr]
    if text.startswith("s3://"):
        if not S3_URL.match(text):
            raise ConfigError(
                f"METRICS_LAKE_DATA_PATH: '{text}' is not an S3 location; expected "
                "'s3://bucket/prefix/' with a valid bucket name."
            )
        return text.rstrip("/") + "/"
    if "://" in text:
        raise ConfigError(
            f"METRICS_LAKE_DATA_PATH: '{text}' is neither 's3://bucket/prefix/' nor a folder."
        )
    folder = parse_folder("METRICS_LAKE_DATA_PATH", text)
    return f"{folder}/"


def check_writable(path: Path, shared_with: str | None = None) -> None:
    """Creates the warehouse folder (owner-only, or also the group's to traverse) and proves it
    can be written, or names the setting."""
    try:
        make_folder(path.parent, shared_with)
    except OSError as error:
        raise ConfigError(
            f"METRICS_DUCKDB_PATH: cannot create the folder '{path.parent}' ({error.strerror})."
        ) from None
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise ConfigError(
            f"METRICS_DUCKDB_PATH: '{target}' is not writable; choose a path this user can write."
        )


def parse_optional_int(name: str, raw: str | None, minimum: int = 0) -> int | None:
    """A whole number, or None when the variable is not set (the default is derived)."""
    return parse_int(name, raw, minimum, minimum=minimum) if _is_set(raw) else None


def parse_int(
    name: str, raw: str | None, default: int, minimum: int = 0, maximum: int = 10**9
) -> int:
    if not _is_set(raw):
        return default
    try:
        value = int(raw.strip())  # type: ignore[union-attr]
    except ValueError:
        raise ConfigError(f"{name}: '{raw}' is not a whole number.") from None
    if not minimum <= value <= maximum:
        raise ConfigError(
            f"{name}: {value} is not allowed; expected a whole number from {minimum:,} "
            f"to {maximum:,}."
        )
    return value


def parse_positive_float(
    name: str, raw: str | None, default: float, minimum: float = 0.0, maximum: float = 1e9
) -> float:
    """A finite number above `minimum` (exclusive when 0) and at most `maximum`."""
    if not _is_set(raw):
        return default
    try:
        value = float(raw.strip())  # type: ignore[union-attr]
    except ValueError:
        raise ConfigError(f"{name}: '{raw}' is not a number.") from None
    low_ok = value > 0 if minimum == 0 else value >= minimum
    if not (math.isfinite(value) and low_ok and value <= maximum):
        low = "> 0" if minimum == 0 else f">= {minimum:g}"
        raise ConfigError(
            f"{name}: {raw.strip()} is not allowed; expected a number {low} "  # type: ignore[union-attr]
            f"and at most {maximum:g}."
        )
    return value


_MEMORY_LIMIT = re.compile(r"^(\d+(?:\.\d+)?)\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)
_MEMORY_UNITS = {
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
# Below this DuckDB cannot stage even one GetMetricData page for the write.
MIN_DUCKDB_MEMORY_BYTES = 128 * 2**20
# Below this DuckDB cannot open the warehouse's tables for a query.
MIN_QUERY_MEMORY_BYTES = 64 * 2**20
# DuckDB refuses larger amounts with a parser error, and wraps some around to nothing
# (2**64 bytes is 0); a PiB is beyond any machine the pipeline runs on.
MAX_MEMORY_BYTES = 2**50


def parse_role_arns(raw: str | None) -> tuple[str, ...]:
    if not _is_set(raw):
        return ()
    arns = _split_list(raw)  # type: ignore[arg-type]
    for arn in arns:
        if not ROLE_ARN.match(arn):
            raise ConfigError(
                f"METRICS_AWS_ROLE_ARNS: '{arn}' is not allowed; expected IAM role ARNs such as "
                "'arn:aws:iam::123456789012:role/metrics-reader', comma-separated."
            )
    return tuple(dict.fromkeys(arns))


def parse_aws_name(
    name: str, raw: str | None, pattern: re.Pattern[str], allowed: str
) -> str | None:
    if not _is_set(raw):
        return None
    value = raw.strip()  # type: ignore[union-attr]
    if not pattern.match(value):
        raise ConfigError(f"{name}: '{raw}' is not allowed; expected {allowed}.")
    return value


def parse_memory_limit(
    raw: str | None,
    name: str = "METRICS_DUCKDB_MEMORY_LIMIT",
    minimum_bytes: int = MIN_DUCKDB_MEMORY_BYTES,
    purpose: str = "the warehouse's writes",
) -> str | None:
    """DuckDB's own memory_limit syntax, within what DuckDB can hold; None leaves the
    default."""
    if not _is_set(raw):
        return None
    value = raw.strip()  # type: ignore[union-attr]
    amount = _MEMORY_LIMIT.match(value)
    if not amount:
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
    number, unit = _MEMORY_LIMIT.match(amount.strip()).groups()  # type: ignore[union-attr]
    return int(float(number) * _MEMORY_UNITS[unit.lower()])


def parse_group(raw: str | None) -> str | None:
    if not _is_set(raw):
        return None
    name = raw.strip()  # type: ignore[union-attr]
    try:
        group_id(name)
    except KeyError:
        raise ConfigError(
            f"METRICS_SHARED_GROUP: '{name}' is not a group of this machine; expected the name "
            "of an existing group (see getent group)."
        ) from None
    return name


def parse_webhook_url(raw: str | None) -> str | None:
    if not _is_set(raw):
        return None
    value = raw.strip()  # type: ignore[union-attr]
    if not value.startswith(("https://", "http://")):
        raise ConfigError(
            f"METRICS_SLACK_WEBHOOK_URL: '{value}' is not allowed; expected the https:// URL of "
            "a Slack incoming webhook."
        )
    return value


def parse_fraction(name: str, raw: str | None, default: float) -> float:
    if not _is_set(raw):
        return default
    try:
        value = float(raw.strip())  # type: ignore[union-attr]
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}: '{raw}' is not allowed; expected a fraction from 0 to 1.")
    return value


def parse_period(raw: str | None) -> int:
    if not _is_set(raw):
        return DEFAULT_PERIOD_SECONDS
    try:
        value = int(raw.strip())  # type: ignore[union-attr]
    except ValueError:
        value = -1
    if value <= 0 or value % 60 or 3600 % value:
        raise ConfigError(
            f"METRICS_PERIOD_SECONDS: '{raw}' is not allowed; expected a positive multiple of 60 "
            "that divides an hour (60, 120, 180, 240, 300, 360, 600, 720, 900, 1200, 1800, 3600)."
        )
    return value


def parse_fresh_interval(raw: str | None) -> int:
    minutes = parse_int(
        "METRICS_FRESH_INTERVAL_MINUTES", raw, DEFAULT_FRESH_INTERVAL_MINUTES, minimum=1
    )
    if 60 % minutes:
        raise ConfigError(
            f"METRICS_FRESH_INTERVAL_MINUTES: {minutes} is not allowed; expected a number of "
            "minutes that divides an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)."
        )
    return minutes


def parse_metrics(raw: str | None) -> tuple[str, ...]:
    if not _is_set(raw):
        return DEFAULT_METRICS
    metrics = _split_list(raw)  # type: ignore[arg-type]
    unknown = [metric for metric in metrics if metric not in RDS_METRIC_UNITS]
    if unknown or not metrics:
        raise ConfigError(
            f"METRICS_CLOUDWATCH_METRICS: unknown metric(s) {', '.join(repr(m) for m in unknown)}; "
            f"known AWS/RDS metrics are: {', '.join(RDS_METRIC_UNITS)}."
        )
    return tuple(dict.fromkeys(metrics))


def parse_statistics(raw: str | None) -> tuple[str, ...]:
    if not _is_set(raw):
        return DEFAULT_STATISTICS
    statistics = _split_list(raw)  # type: ignore[arg-type]
    unknown = [stat for stat in statistics if stat not in STATISTIC_COLUMNS]
    if unknown or not statistics:
        raise ConfigError(
            f"METRICS_STATISTICS: unknown statistic(s) {', '.join(repr(s) for s in unknown)}; "
            f"allowed: {', '.join(STATISTIC_COLUMNS)}."
        )
    return tuple(dict.fromkeys(statistics))


def rolling_start(retention_days: int) -> datetime:
    """Midnight UTC `retention_days` ago: the UI lists the hours the warehouse can hold,
    not months of hours that retention would delete anyway."""
    today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=retention_days)


def parse_start(raw: str | None, retention_days: int) -> datetime:
    if not _is_set(raw):
        return rolling_start(retention_days)
    try:
        start = datetime.fromisoformat(raw.strip())  # type: ignore[union-attr]
    except ValueError:
        raise ConfigError(
            f"METRICS_PARTITIONS_START: '{raw}' is not a date; expected YYYY-MM-DD "
            "or YYYY-MM-DDTHH:00 (UTC)."
        ) from None
    if start.tzinfo is not None:
        raise ConfigError(
            f"METRICS_PARTITIONS_START: '{raw}' has a time zone; give the UTC hour without one."
        )
    if start.minute or start.second or start.microsecond:
        raise ConfigError(f"METRICS_PARTITIONS_START: '{raw}' must fall on a whole hour.")
    now = datetime.now(UTC).replace(tzinfo=None)
    if start > now:
        raise ConfigError(
            f"METRICS_PARTITIONS_START: '{raw}' is in the future; expected a past hour (UTC)."
        )
    if (now - start) // timedelta(hours=1) >= MAX_PARTITIONS:
        raise ConfigError(
            f"METRICS_PARTITIONS_START: '{raw}' would make more than {MAX_PARTITIONS:,} hourly "
            "partitions (Dagster's limit per asset); choose a later start."
        )
    return start


def configuration_reference() -> str:
    """The table of docs/operations.md: one row per setting, from the fields above."""
    rows = ["| variable | default | allowed |", "|---|---|---|"]
    rows += [
        f"| `{f.metadata['env']}` | {f.metadata['default_text']} | {f.metadata['allowed']} |"
        for f in sorted(fields(Settings), key=_reference_order)
    ]
    return "\n".join(rows) + "\n"


def _reference_order(settings_field: Any) -> int:
    """Where to collect from first, then how, then how long to keep it, then the rest."""
    order = [
        "regions", "duckdb_path", "warehouse", "lake_data_path", "period_seconds", "metrics",
        "statistics", "settle_minutes", "partitions_start", "role_arns", "organization_role",
        "external_id",
        "role_session_name", "max_requests_per_second", "aws_max_attempts",
        "aws_connect_timeout_seconds", "aws_read_timeout_seconds", "chunk_datapoints",
        "fetch_threads", "chunk_timeout_seconds", "run_timeout_seconds",
        "fresh_interval_minutes", "backfill_days", "backfill_interval_minutes",
        "backfill_max_datapoints_per_tick", "retention_days", "freshness_minutes",
        "completeness_warn", "lock_timeout_seconds", "duckdb_memory_limit",
        "query_memory_limit", "query_timeout_seconds", "step_retries",
        "step_retry_delay_seconds", "backup_dir", "backup_keep_days", "shared_group",
        "slack_webhook_url",
    ]  # fmt: skip
    return order.index(settings_field.name)


def _look_back_fields(env: Mapping[str, str]) -> dict[str, int]:
    return {
        "settle_minutes": parse_int(
            "METRICS_SETTLE_MINUTES",
            env.get("METRICS_SETTLE_MINUTES"),
            DEFAULT_SETTLE_MINUTES,
            maximum=1440,
        ),
        "backfill_days": parse_int(
            "METRICS_BACKFILL_DAYS",
            env.get("METRICS_BACKFILL_DAYS"),
            DEFAULT_BACKFILL_DAYS,
            minimum=1,
            maximum=MAX_RETENTION_DAYS,
        ),
    }


def look_back_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, timedelta]:
    """METRICS_BACKFILL_DAYS and the settle delay, for readers that need the gap sensor's
    window without the AWS settings (the command-line tool)."""
    fields = _look_back_fields(os.environ if environ is None else environ)
    return fields["backfill_days"], timedelta(minutes=fields["settle_minutes"])


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of a deployment, from the environment (or `environ`)."""
    return Settings.from_env(environ)
