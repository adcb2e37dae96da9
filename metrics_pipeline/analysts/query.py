"""What analysts ask of the warehouse, as functions returning DataFrames.

The `metrics-pipeline` command is a thin layer over these; in a notebook:

    from metrics_pipeline.analysts import query
    cpu = query.extract_metrics("now-6h", "now", instances=["orders-db"])

Every function reads the published snapshot (see snapshot.py), so it never waits for the
pipeline nor makes it wait. Times are UTC. Bad arguments raise QueryError, whose message
names the argument and what is allowed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from metrics_pipeline.analysts.outputs import Output, open_output, open_text_output
from metrics_pipeline.catalog import HEALTH_METRICS
from metrics_pipeline.hours import (
    HOUR,
    consecutive_runs,
    hour_starts,
    naive_utc,
    oldest_kept_hour,
    utc_now,
)
from metrics_pipeline.settings import StorageSettings, memory_bytes
from metrics_pipeline.warehouse.fetch_log import RDS_FETCH_LOG
from metrics_pipeline.warehouse.instances import read_inventory
from metrics_pipeline.warehouse.lake import LakeError
from metrics_pipeline.warehouse.readers import (
    SnapshotMissingError,
    open_reader,
    open_reader_for_extract,
)
from metrics_pipeline.warehouse.schema import (
    INSTANCES_TABLE,
    METRICS_TABLE,
    RUN_PARTS_TABLE,
    RUNS_TABLE,
    STORAGE_COMPATIBILITY_VERSION,
    WIDE_VIEW,
    column_names,
)
from metrics_pipeline.warehouse.tables import (
    CLUSTER_PLACE,
    DAILY,
    DAILY_TIER,
    HOURLY,
    HOURLY_TIER,
    METRICS,
    PERFORMANCE_INSIGHTS,
    RAW_TIER,
    TIERS,
    Table,
)

FORMATS = ("table", "csv", "json", "parquet", "duckdb")
# Formats written to a file only (--output).
BINARY_FORMATS = ("parquet", "duckdb")
# The table of a DuckDB export (`-f duckdb`) when the rows are not one tier's.
EXPORT_TABLE = "result"
# Exports stream in batches of this many rows: memory follows the batch, not the range.
BATCH_ROWS = 50_000
# The extract's own connection: a sort beyond this spills to a temporary folder.
EXTRACT_MEMORY_LIMIT = "128MB"
# DuckDB's memory_limit covers its buffer manager, not every allocation (one 3 GB string
# grew a query past 5 GB under a 1 GB limit): the reading commands' process is held to twice
# the query's limit plus this for Python, the libraries and each of DuckDB's threads. Twice:
# the bound counts address space reserved before it is used (allocator arenas, Arrow
# buffers); a 14M-row export to Parquet needed over 1.3 GB of it for 370 MB resident.
PROCESS_MEMORY_HEADROOM = 256 * 2**20
PROCESS_MEMORY_PER_THREAD = 16 * 2**20
_RELATIVE = re.compile(r"^(?:now)?\s*-\s*(\d+)\s*([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_WORD = re.compile(r"\w+|\S")


class QueryError(ValueError):
    """A reader's argument the warehouse cannot answer; the message names the argument."""


class WarehouseUnavailable(QueryError):
    """The warehouse cannot be read at all (nothing published there yet, a wrong path)."""


class QueryStopped(QueryError):
    """A query stopped at its memory or time limit: the query was right, the limit held."""


@contextmanager
def connect(storage: StorageSettings | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the latest snapshot, for queries of your own. It sees the snapshot
    and nothing else: no files, network or extensions, its configuration locked (see
    readers.open_reader). Share DataFrames with it through `conn.register(name, frame)`.

    What it guarantees inside your own process (a notebook): DuckDB's memory is held to
    METRICS_QUERY_MEMORY_LIMIT (no SET can raise it), a query beyond it fails with DuckDB's
    out-of-memory error. It does not bound your process's other memory, nor how long a
    statement runs: `run_sql` stops at METRICS_QUERY_TIMEOUT_SECONDS, here interrupt the
    kernel (or call `conn.interrupt()` from another thread)."""
    storage = storage or StorageSettings.from_env()
    try:
        with open_reader(storage.read_source, storage.query_memory_limit) as conn:
            yield conn
    except (SnapshotMissingError, LakeError) as error:
        raise WarehouseUnavailable(str(error)) from None


def process_memory_bound(storage: StorageSettings) -> int:
    """Bytes of private memory a reading command's process may hold (see
    PROCESS_MEMORY_HEADROOM)."""
    threads = os.cpu_count() or 1
    return (
        2 * memory_bytes(storage.query_memory_limit)
        + PROCESS_MEMORY_HEADROOM
        + PROCESS_MEMORY_PER_THREAD * threads
    )


@contextmanager
def _within_limits(conn: duckdb.DuckDBPyConnection, storage: StorageSettings) -> Iterator[None]:
    """Stops the connection's query at METRICS_QUERY_TIMEOUT_SECONDS (DuckDB has no statement
    timeout: a timer interrupts it) or at Ctrl-C, which then raises KeyboardInterrupt rather
    than whatever error the interrupted query, or its result's reader, turns it into."""
    stopped: list[str] = []

    def stop(reason: str) -> None:
        stopped.append(reason)
        conn.interrupt()

    timeout = storage.query_timeout_seconds
    timer = threading.Timer(timeout, stop, ("timeout",))
    timer.daemon = True
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = (
        signal.signal(signal.SIGINT, lambda *_: stop("interrupt")) if in_main_thread else None
    )
    timer.start()
    try:
        yield
        if "interrupt" in stopped:
            raise KeyboardInterrupt
    except Exception:
        if "interrupt" in stopped:
            raise KeyboardInterrupt from None
        if "timeout" in stopped:
            raise QueryStopped(
                f"sql: stopped after {timeout:g} s, the time limit of "
                "METRICS_QUERY_TIMEOUT_SECONDS; narrow the query (a time range, a LIMIT) "
                "or raise the limit."
            ) from None
        raise
    finally:
        timer.cancel()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


@contextmanager
def _extract_connection(storage: StorageSettings) -> Iterator[duckdb.DuckDBPyConnection]:
    with tempfile.TemporaryDirectory(prefix="metrics-extract-") as spill:
        try:
            with open_reader_for_extract(
                storage.read_source, Path(spill), EXTRACT_MEMORY_LIMIT
            ) as conn:
                yield conn
        except (SnapshotMissingError, LakeError) as error:
            raise WarehouseUnavailable(str(error)) from None


def parse_time(name: str, value: str | datetime, now: datetime | None = None) -> datetime:
    """ISO 8601 (UTC unless it carries an offset), 'now', or relative: now-30m, now-6h, -3d."""
    now = naive_utc(now) if now else utc_now()
    if isinstance(value, datetime):
        return naive_utc(value)
    text = value.strip()
    if text == "now":
        return now
    relative = _RELATIVE.match(text)
    if relative:
        try:
            return now - timedelta(**{_UNITS[relative[2]]: int(relative[1])})
        except OverflowError:
            raise QueryError(
                f"{name}: '{value}' is too far back; the warehouse keeps days, not millennia."
            ) from None
    try:
        return naive_utc(datetime.fromisoformat(text))
    except ValueError:
        raise QueryError(
            f"{name}: '{value}' is not a time; expected ISO 8601 such as 2026-11-26T08:00 "
            "(UTC unless an offset is given), 'now', or a relative time such as now-6h or now-3d."
        ) from None


def check_range(
    start: datetime,
    end: datetime,
    retention_days: int | None,
    now: datetime,
    setting: str = "METRICS_RETENTION_DAYS",
) -> tuple[datetime, datetime]:
    """The range to read: refused when it is empty, in the future or wholly deleted by
    retention (`retention_days` by `setting`; None keeps everything); its start moved up to
    the oldest hour kept when it began earlier."""
    if end <= start:
        raise QueryError(
            f"end ({end:%Y-%m-%d %H:%M}) must be after start ({start:%Y-%m-%d %H:%M})."
        )
    if retention_days is None:
        oldest = start
    else:
        oldest = oldest_kept_hour(now, retention_days)
        if end <= oldest:
            raise QueryError(
                f"the range {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC is outside "
                f"retention: the warehouse keeps hours from {oldest:%Y-%m-%d %H:%M} UTC "
                f"({setting}={retention_days})."
            )
    if start >= now:
        raise QueryError(f"start ({start:%Y-%m-%d %H:%M} UTC) is in the future.")
    return max(start, oldest), end


# What an extract reads of each tier.
TIER_TABLES: dict[str, Table] = {RAW_TIER: METRICS, HOURLY_TIER: HOURLY, DAILY_TIER: DAILY}


@dataclass(frozen=True)
class TierChoice:
    """The tier an extract reads, the range it reads there, and why that tier."""

    tier: str
    start: datetime
    end: datetime
    why: str

    @property
    def table(self) -> Table:
        return TIER_TABLES[self.tier]

    def line(self) -> str:
        return f"read the {self.tier} tier ({self.table.name}): {self.why}"


def choose_tier(
    start: datetime, end: datetime, asked: str | None, storage: StorageSettings, now: datetime
) -> TierChoice:
    """The raw tier when the range starts within METRICS_RETENTION_DAYS, else the hourly one
    (or the tier `asked`); refused like `check_range` when the tier holds none of it."""
    if asked is not None and asked not in TIERS:
        raise QueryError(f"tier: '{asked}' is not a tier; choose {', '.join(TIERS)}.")
    raw_oldest = oldest_kept_hour(now, storage.retention_days)
    if asked is not None:
        tier, why = asked, "as asked (--tier)"
    elif start >= raw_oldest:
        tier, why = RAW_TIER, f"the range is within its {storage.retention_days} days"
    else:
        tier = HOURLY_TIER
        why = (
            f"the range starts before the raw tier's {storage.retention_days} days "
            "(METRICS_RETENTION_DAYS); --tier raw reads the raw tier's part"
        )
    if tier == RAW_TIER:
        start, end = check_range(start, end, storage.retention_days, now)
    elif tier == HOURLY_TIER:
        start, end = check_range(
            start, end, storage.hourly_retention_days, now, "METRICS_HOURLY_RETENTION_DAYS"
        )
    else:
        start, end = check_range(start, end, None, now)
    return TierChoice(tier, start, end, why)


def _names(conn: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    return [row[0] for row in conn.execute(sql).fetchall()]


def _check_known(argument: str, asked: Sequence[str], known: Sequence[str]) -> None:
    unknown = [name for name in asked if name not in known]
    known = sorted(known)
    if unknown:
        listed = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        raise QueryError(
            f"{argument}: unknown {', '.join(repr(n) for n in unknown)}; "
            f"the warehouse has: {listed or 'nothing yet'}."
        )


def list_instances(storage: StorageSettings | None = None) -> pd.DataFrame:
    """The inventory, with each Aurora instance's cluster and role and whether Performance
    Insights is on (unknown in a warehouse the pipeline has not migrated yet), and the span
    of metrics held for each instance."""
    with connect(storage) as conn:
        held = column_names(conn, INSTANCES_TABLE)
        cluster = ", ".join(
            f"i.{c.name}" if c.name in held else f"NULL::{c.type} AS {c.name}"
            for c in (*CLUSTER_PLACE, *PERFORMANCE_INSIGHTS)
        )
        return conn.execute(
            f"""
            SELECT i.account_id, i.region, i.instance_id, i.engine, i.engine_version,
                   i.instance_class, i.allocated_storage_gb, i.multi_az, {cluster}, i.status,
                   i.create_time, i.last_seen, m.first_ts AS first_data, m.last_ts AS last_data
            FROM {INSTANCES_TABLE} i LEFT JOIN (
                SELECT account_id, region, instance_id, min(ts) AS first_ts, max(ts) AS last_ts
                FROM {METRICS_TABLE} GROUP BY ALL
            ) m USING (account_id, region, instance_id)
            ORDER BY i.account_id, i.region, i.instance_id
            """
        ).df()


def list_metrics(storage: StorageSettings | None = None) -> pd.DataFrame:
    """The metrics held, with their unit, how many instances have them, and their span."""
    with connect(storage) as conn:
        return conn.execute(
            f"""
            SELECT metric, any_value(unit) AS unit, count(DISTINCT instance_id) AS instances,
                   min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS rows
            FROM {METRICS_TABLE} GROUP BY metric ORDER BY metric
            """
        ).df()


def plan_extract(
    conn: duckdb.DuckDBPyConnection,
    choice: TierChoice,
    instances: Sequence[str] | None,
    metrics: Sequence[str] | None,
    wide: bool,
    accounts: Sequence[str] | None = None,
) -> tuple[str, dict[str, object]]:
    """The statement and parameters of an extract of the chosen tier, after checking the
    names asked for."""
    table = choice.table
    _check_known(
        "instance",
        instances or [],
        _names(conn, f"SELECT DISTINCT instance_id FROM {INSTANCES_TABLE} ORDER BY 1"),
    )
    _check_known(
        "account",
        accounts or [],
        _names(conn, f"SELECT DISTINCT account_id FROM {INSTANCES_TABLE} ORDER BY 1"),
    )
    _check_known("metric", metrics or [], _names(conn, f"SELECT DISTINCT metric FROM {table.name}"))
    if wide and metrics:
        raise QueryError("metric: --wide already has one column per metric; drop --metric.")
    if wide and choice.tier != RAW_TIER:
        raise QueryError(
            f"wide: the wide view is of the raw tier, and this extract reads the {choice.tier} "
            "tier; drop --wide, or ask for --tier raw."
        )
    ts = table.time_column
    filters = [f"{ts} >= $start", f"{ts} < $end"]
    params: dict[str, object] = {"start": choice.start, "end": choice.end}
    if instances:
        filters.append("list_contains($instances, instance_id)")
        params["instances"] = list(instances)
    if metrics:
        filters.append("list_contains($metrics, metric)")
        params["metrics"] = list(metrics)
    if accounts:
        filters.append("list_contains($accounts, account_id)")
        params["accounts"] = list(accounts)
    where = " AND ".join(filters)
    if wide:
        return (
            f"SELECT * FROM {WIDE_VIEW} WHERE {where} ORDER BY account_id, region, instance_id, ts",
            params,
        )
    # Every column but the pipeline's own bookkeeping, ordered by the table's key.
    columns = ", ".join(
        name for name in table.column_names if name not in ("collected_at", "computed_at")
    )
    return (
        f"SELECT {columns} FROM {table.name} WHERE {where} ORDER BY {', '.join(table.primary_key)}",
        params,
    )


def _extract_range(
    start: str | datetime,
    end: str | datetime,
    tier: str | None,
    storage: StorageSettings,
    now: datetime | None,
) -> TierChoice:
    now = naive_utc(now) if now else utc_now()
    start_at, end_at = parse_time("start", start, now), parse_time("end", end, now)
    return choose_tier(start_at, end_at, tier, storage, now)


def extract_metrics(
    start: str | datetime,
    end: str | datetime,
    instances: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    wide: bool = False,
    storage: StorageSettings | None = None,
    now: datetime | None = None,
    accounts: Sequence[str] | None = None,
    tier: str | None = None,
) -> pd.DataFrame:
    """Every period of [start, end) for the instances and accounts (all when None): one row
    per instance, metric and period, or with `wide` one row per instance and period, a column
    per metric. From the raw tier when the range starts within METRICS_RETENTION_DAYS, else
    the hourly tier, or the `tier` asked ("raw", "hourly" or "daily"); the frame's
    `attrs["tier"]` says which."""
    storage = storage or StorageSettings.from_env()
    choice = _extract_range(start, end, tier, storage, now)
    with connect(storage) as conn:
        sql, params = plan_extract(conn, choice, instances, metrics, wide, accounts)
        frame = conn.execute(sql, params).df()
    frame.attrs["tier"] = choice.tier
    return frame


def export_metrics(
    start: str | datetime,
    end: str | datetime,
    instances: Sequence[str] | None,
    metrics: Sequence[str] | None,
    wide: bool,
    fmt: str,
    output: Output | Path | None,
    storage: StorageSettings | None = None,
    now: datetime | None = None,
    accounts: Sequence[str] | None = None,
    tier: str | None = None,
) -> tuple[str, TierChoice]:
    """extract_metrics written as it is read: memory stays bounded whatever the range (the
    sort spills to a temporary folder). Returns the text for the terminal, and the tier read."""
    storage = storage or StorageSettings.from_env()
    choice = _extract_range(start, end, tier, storage, now)
    with _extract_connection(storage) as conn:
        sql, params = plan_extract(conn, choice, instances, metrics, wide, accounts)
        result = conn.execute(sql, params)
        reader = result.to_arrow_reader(BATCH_ROWS)
        return write_batches(reader, fmt, output, table=choice.table.name), choice


def hour_ranges(hours: Sequence[datetime]) -> str:
    """Consecutive hours folded into ranges: '2026-11-25 03:00..05:00, 2026-11-26 01:00'."""
    return ", ".join(_span(run[0], run[-1]) for run in consecutive_runs(hours))


def _span(first: datetime, last: datetime) -> str:
    if first == last:
        return f"{first:%Y-%m-%d %H:%M}"
    shown = f"{last:%H:%M}" if first.date() == last.date() else f"{last:%Y-%m-%d %H:%M}"
    return f"{first:%Y-%m-%d %H:%M}..{shown}"


def health_summary(
    start: str | datetime,
    end: str | datetime,
    instances: Sequence[str] | None = None,
    storage: StorageSettings | None = None,
    now: datetime | None = None,
    accounts: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per instance and main metric over [start, end): minimum, average, maximum and p95 of the
    period averages, and the whole hours (ended, while the instance existed) with no data:
    missing, or empty when CloudWatch was asked after the hour settled and had nothing (a
    stopped instance), which is no fault of the pipeline."""
    storage = storage or StorageSettings.from_env()
    now = naive_utc(now) if now else utc_now()
    start_at, end_at = check_range(
        parse_time("start", start, now), parse_time("end", end, now), storage.retention_days, now
    )
    with connect(storage) as conn:
        inventory = read_inventory(conn)
        _check_known("instance", instances or [], [e.instance.instance_id for e in inventory])
        _check_known("account", accounts or [], sorted({e.instance.account_id for e in inventory}))
        held = set(_names(conn, f"SELECT DISTINCT metric FROM {METRICS_TABLE}"))
        metrics = [metric for metric in HEALTH_METRICS if metric in held]
        params = {"start": start_at, "end": end_at, "metrics": metrics}
        stats = conn.execute(
            f"""
            SELECT account_id, region, instance_id, metric, any_value(unit) AS unit,
                   min(average) AS minimum, avg(average) AS average, max(average) AS maximum,
                   quantile_cont(average, 0.95) AS p95, count(average) AS periods
            FROM {METRICS_TABLE}
            WHERE ts >= $start AND ts < $end AND list_contains($metrics, metric)
            GROUP BY ALL
            """,
            params,
        ).fetchall()
        present = conn.execute(
            f"""
            SELECT DISTINCT account_id, region, instance_id, metric, date_trunc('hour', ts)
            FROM {METRICS_TABLE}
            WHERE ts >= $start AND ts < $end AND list_contains($metrics, metric)
            """,
            params,
        ).fetchall()
        empty = RDS_FETCH_LOG.empty_settled(conn, start_at, end_at)
    by_key = {tuple(row[:4]): row[4:] for row in stats}
    hours_with_data = {tuple(row) for row in present}
    ended = [h for h in hour_starts(start_at, end_at) if h + HOUR <= min(end_at, now)]
    records = []
    for entry in inventory:
        instance = entry.instance
        if instances and instance.instance_id not in instances:
            continue
        if accounts and instance.account_id not in accounts:
            continue
        expected = [h for h in ended if entry.existed_during(h, h + HOUR)]
        for metric in metrics:
            key = (instance.account_id, instance.region, instance.instance_id, metric)
            unit, minimum, average, maximum, p95, periods = by_key.get(
                key, (None, None, None, None, None, 0)
            )
            without_data = [h for h in expected if (*key, h) not in hours_with_data]
            missing = [h for h in without_data if (instance, h) not in empty]
            records.append(
                {
                    "account_id": instance.account_id,
                    "region": instance.region,
                    "instance_id": instance.instance_id,
                    "metric": metric,
                    "unit": unit,
                    "minimum": minimum,
                    "average": average,
                    "maximum": maximum,
                    "p95": p95,
                    "periods": periods,
                    "hours_expected": len(expected),
                    "hours_missing": len(missing),
                    "missing_hours": hour_ranges(missing),
                    "hours_empty": len(without_data) - len(missing),
                }
            )
    return pd.DataFrame.from_records(
        records,
        columns=[
            "account_id",
            "region",
            "instance_id",
            "metric",
            "unit",
            "minimum",
            "average",
            "maximum",
            "p95",
            "periods",
            "hours_expected",
            "hours_missing",
            "missing_hours",
            "hours_empty",
        ],
    )


# The one Dagster asset of the pipeline that has no table of its own.
PIPELINE_HEALTH_LIVES = (
    "pipeline_health is a Dagster asset with no table: its figures are its materializations' "
    f"metadata in the Dagster UI, computed from the tables {RUNS_TABLE} and {RUN_PARTS_TABLE}"
)


def _sql_error(error: duckdb.Error, storage: StorageSettings) -> QueryError:
    """DuckDB's message on one line (it can run to several), with what the sandbox means."""
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else type(error).__name__
    if isinstance(error, duckdb.OutOfMemoryException):
        return QueryStopped(
            f"sql: {message} (a query may use METRICS_QUERY_MEMORY_LIMIT="
            f"{storage.query_memory_limit}, the command {process_memory_bound(storage) // 2**20} "
            "MiB in all; narrow the query or raise the limit)"
        )
    if isinstance(error, duckdb.PermissionException):
        message += " (queries see the warehouse snapshot only: no files, network or extensions)"
    elif "read-only mode" in message:
        message += " (the warehouse is changed by the pipeline alone)"
    elif "Table with name pipeline_health does not exist" in message:
        message += f" ({PIPELINE_HEALTH_LIVES})"
    return QueryError(f"sql: {message}")


def _explained(text: str) -> str:
    """What an EXPLAIN [ANALYZE] [(options)] statement plans, or runs."""
    depth = 0
    for start, _ in duckdb.tokenize(text)[1:]:  # the first is EXPLAIN; comments are no tokens
        match = _WORD.match(text, start)
        if match is None:  # a token starts where a word or a sign does: never
            continue
        word = match[0].upper()
        if word == "(":
            depth += 1
        elif word == ")":
            depth -= 1
        elif depth == 0 and word != "ANALYZE":
            return text[start:]
    return ""


def _only_a_select(sql: str, storage: StorageSettings) -> None:
    """Refuses anything but one SELECT, or EXPLAIN of one, with a message saying why; a
    second layer, for friendly messages: the sandbox refuses the rest whatever the text."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise _sql_error(error, storage) from None
    if len(statements) != 1:
        raise QueryError(f"sql: expected exactly one statement, got {len(statements)}.")
    [statement] = statements
    kind = statement.type
    if kind == duckdb.StatementType.EXPLAIN:
        try:
            inner = duckdb.extract_statements(_explained(statement.query))
        except duckdb.Error as error:
            raise _sql_error(error, storage) from None
        if [s.type for s in inner] != [duckdb.StatementType.SELECT]:
            shown = inner[0].type.name if inner else "nothing"
            raise QueryError(
                f"sql: EXPLAIN of a SELECT only, not of {shown}: EXPLAIN ANALYZE runs the "
                "statement, and the warehouse is changed by the pipeline alone."
            )
    elif kind != duckdb.StatementType.SELECT:
        raise QueryError(
            f"sql: only SELECT queries are allowed here, not {kind.name}; "
            "the warehouse is changed by the pipeline alone, and settings, files and "
            "extensions are not for queries."
        )


def run_sql(sql: str, storage: StorageSettings | None = None) -> pd.DataFrame:
    """One SELECT (or EXPLAIN of one) of your own against the snapshot, in the sandbox that
    every reader's connection is (see connect), stopped at METRICS_QUERY_TIMEOUT_SECONDS;
    errors are one line."""
    storage = storage or StorageSettings.from_env()
    _only_a_select(sql, storage)
    with connect(storage) as conn, _within_limits(conn, storage):
        try:
            return conn.execute(sql).df()
        except duckdb.Error as error:
            raise _sql_error(error, storage) from None


def export_sql(
    sql: str, fmt: str, output: Output | Path | None, storage: StorageSettings | None = None
) -> str:
    """run_sql written as it is read, in batches; the terminal table reads only the rows it
    shows. The time limit covers writing the result too. Returns the text for the terminal."""
    storage = storage or StorageSettings.from_env()
    _only_a_select(sql, storage)
    with connect(storage) as conn, _within_limits(conn, storage):
        try:
            return write_batches(conn.execute(sql).to_arrow_reader(BATCH_ROWS), fmt, output)
        except duckdb.Error as error:
            raise _sql_error(error, storage) from None


def format_for(output: Path | None, fmt: str | None) -> str:
    """The output format: the one asked for, else the output file's suffix, else a table."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise QueryError(f"format: unknown '{fmt}'; choose one of {', '.join(FORMATS)}.")
        return fmt
    if output is None:
        return "table"
    suffix = output.suffix.lstrip(".").lower()
    if suffix not in FORMATS[1:]:
        raise QueryError(
            f"output: cannot tell the format of '{output.name}'; name it .csv, .json, "
            ".parquet or .duckdb, or pass --format."
        )
    return suffix


def _readable(value: float) -> str:
    """Bytes as whole numbers with separators, latencies with their significant digits."""
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    if abs(value) >= 1 or value == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _output(output: Output | Path | None) -> Output | None:
    """A plain path writes a new file only (see outputs.py)."""
    return Output(output) if isinstance(output, Path) else output


def write_frame(
    frame: pd.DataFrame, fmt: str, output: Output | Path | None, max_rows: int = 200
) -> str:
    """Writes the frame to `output` in `fmt`; returns the text for the terminal."""
    if fmt in BINARY_FORMATS and output is None:
        raise QueryError(f"format: {fmt} is binary; give a file with --output.")
    output = _output(output)
    if fmt == "duckdb":
        return write_batches(
            pa.Table.from_pandas(frame, preserve_index=False).to_reader(), fmt, output
        )
    if fmt == "table":
        shown = (
            frame.head(max_rows).to_string(index=False, float_format=_readable)
            if len(frame)
            else "(no rows)"
        )
        more = len(frame) - max_rows
        text = shown + (
            f"\n... {more} more row(s): use --format csv or --output" if more > 0 else ""
        )
        if output is None:
            return text
        with open_text_output(output) as out:
            out.write(text + "\n")
    elif fmt == "parquet":
        with open_output(output) as binary:  # type: ignore[arg-type]
            frame.to_parquet(binary, index=False)
    else:
        with _text_destination(output) as out:
            if fmt == "csv":
                frame.to_csv(out, index=False)
            else:
                frame.to_json(out, orient="records", date_format="iso", date_unit="s", indent=1)
                if output is None:
                    out.write("\n")
    return f"Wrote {len(frame)} row(s) to {output.path}" if output is not None else ""


def _text_destination(output: Output | None) -> AbstractContextManager[IO[str]]:
    return open_text_output(output) if output is not None else nullcontext(sys.stdout)


def write_batches(
    reader: pa.RecordBatchReader,
    fmt: str,
    output: Output | Path | None,
    max_rows: int = 200,
    table: str = EXPORT_TABLE,
) -> str:
    """Writes the batches to `output` (or stdout) in `fmt` as they come; the terminal table
    reads no more than the rows it shows; a DuckDB export holds them as `table`. Returns the
    text for the terminal."""
    if fmt in BINARY_FORMATS and output is None:
        raise QueryError(f"format: {fmt} is binary; give a file with --output.")
    output = _output(output)
    if fmt == "table":
        return _first_rows_table(reader, max_rows, output)
    rows = 0
    if fmt == "duckdb":
        with open_output(output) as binary:  # type: ignore[arg-type]
            rows = _write_duckdb(reader, table, binary)
    elif fmt == "parquet":
        with open_output(output) as binary, pq.ParquetWriter(binary, reader.schema) as writer:  # type: ignore[arg-type]
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
    else:
        with _text_destination(output) as out:
            rows = _write_text(reader, fmt, out)
    return f"Wrote {rows} row(s) to {output.path}" if output is not None else ""


def _write_duckdb(reader: pa.RecordBatchReader, table: str, out: IO[bytes]) -> int:
    """The rows as `table` of a DuckDB database file in the storage format DuckDB 1.2 and
    newer open (clients too old for the lake read a range this way). DuckDB writes a database
    only at a path of its own: it is built in a private temporary folder, then copied into
    `out` (the output's rules: a new owner-only file, whole or not at all)."""
    with tempfile.TemporaryDirectory(prefix="metrics-export-") as folder:
        database = Path(folder) / "export.duckdb"
        with duckdb.connect(
            str(database), config={"storage_compatibility_version": STORAGE_COMPATIBILITY_VERSION}
        ) as conn:
            conn.register("batch", reader.schema.empty_table())
            conn.execute(f"CREATE TABLE {table} AS SELECT * FROM batch")
            rows = 0
            for batch in reader:
                conn.register("batch", pa.Table.from_batches([batch]))
                conn.execute(f"INSERT INTO {table} SELECT * FROM batch")
                rows += batch.num_rows
            conn.execute("CHECKPOINT")
        with database.open("rb") as written:
            shutil.copyfileobj(written, out)
    return rows


def _write_text(reader: pa.RecordBatchReader, fmt: str, out: IO[str]) -> int:
    """CSV or a JSON array, batch after batch, formatted as pandas formats a whole frame."""
    rows = 0
    if fmt == "json":
        out.write("[")
    for batch in reader:
        frame = batch.to_pandas()
        if fmt == "csv":
            frame.to_csv(out, index=False, header=rows == 0)
        elif len(frame):
            records = frame.to_json(orient="records", date_format="iso", date_unit="s")
            out.write(("," if rows else "") + records[1:-1])
        rows += batch.num_rows
    if fmt == "csv" and rows == 0:
        out.write(",".join(reader.schema.names) + "\n")
    if fmt == "json":
        out.write("]\n")
    return rows


def _first_rows_table(reader: pa.RecordBatchReader, max_rows: int, output: Output | None) -> str:
    taken: list[Any] = []
    count = 0
    for batch in reader:
        taken.append(batch)
        count += batch.num_rows
        if count > max_rows:
            break
    frame = pa.Table.from_batches(taken, schema=reader.schema).to_pandas()
    shown = (
        frame.head(max_rows).to_string(index=False, float_format=_readable)
        if len(frame)
        else "(no rows)"
    )
    text = shown + ("\n... more rows: use --format csv or --output" if count > max_rows else "")
    if output is not None:
        with open_text_output(output) as out:
            out.write(text + "\n")
        return f"Wrote the first {min(count, max_rows)} row(s) to {output.path}"
    return text
