"""The Python API analysts use, on a warehouse whose answers are known."""

import json
import signal
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from metrics_pipeline.analysts import query
from metrics_pipeline.analysts.query import QueryError, QueryStopped
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.known_data import (
    FIRST_HOUR,
    LAST_HOUR,
    MISSING_HOURS,
    PERIODS,
    Period,
    seed,
)
from metrics_pipeline_tests.moto_fleet import ACCOUNT_ID

pytestmark = pytest.mark.storage_neutral

# The moment the queries are asked at (passed to them): just after the seeded hours.
NOW = LAST_HOUR + timedelta(minutes=7)
END = FIRST_HOUR + timedelta(hours=6)


@pytest.fixture
def storage(warehouse: WarehouseResource) -> StorageSettings:
    return StorageSettings(
        duckdb_path=Path(warehouse.database),
        warehouse=warehouse.lake_catalog or None,
        lake_data_path=warehouse.lake_data_path or None,
    )


@pytest.fixture
def stored(warehouse: WarehouseResource) -> list[Period]:
    return seed(warehouse)


def test_times_in_every_form_the_help_promises() -> None:
    assert query.parse_time("start", "now", NOW) == NOW
    assert query.parse_time("start", "now-6h", NOW) == NOW - timedelta(hours=6)
    assert query.parse_time("start", "-3d", NOW) == NOW - timedelta(days=3)
    assert query.parse_time("start", "now-30m", NOW) == NOW - timedelta(minutes=30)
    assert query.parse_time("end", "2026-11-26T08:00", NOW) == datetime(2026, 11, 26, 8)
    assert query.parse_time("end", "2026-11-26T10:00+02:00", NOW) == datetime(2026, 11, 26, 8)
    with pytest.raises(QueryError, match=r"^start: 'yesterday' is not a time; expected ISO"):
        query.parse_time("start", "yesterday", NOW)


def test_a_range_reaching_past_retention_starts_at_the_oldest_hour_kept() -> None:
    start, end = query.check_range(NOW - timedelta(days=10), NOW, 7, NOW)
    assert (start, end) == (LAST_HOUR - timedelta(days=7), NOW)


def test_only_whole_hours_inside_the_range_can_be_missing(
    storage: StorageSettings, stored: list[Period]
) -> None:
    # Starting three minutes before the second hour ends: the first two hours are not whole.
    start = FIRST_HOUR + timedelta(hours=1, minutes=57)
    summary = query.health_summary(start, END, storage=storage, now=NOW)
    for row in summary.itertuples():
        assert row.hours_expected == 4
        assert row.hours_missing == (2 if row.instance_id == "users-db" else 0)
        values = [
            p.average
            for p in stored
            if (p.instance_id, p.metric) == (row.instance_id, row.metric) and p.ts >= start
        ]
        assert row.periods == len(values)


def test_ranges_that_cannot_be_answered_are_refused() -> None:
    with pytest.raises(QueryError, match=r"^end \(.*\) must be after start"):
        query.check_range(NOW, NOW - timedelta(hours=1), 7, NOW)
    with pytest.raises(QueryError, match=r"outside retention.*METRICS_RETENTION_DAYS=7"):
        query.check_range(NOW - timedelta(days=10), NOW - timedelta(days=8), 7, NOW)
    with pytest.raises(QueryError, match="is in the future"):
        query.check_range(NOW + timedelta(hours=1), NOW + timedelta(hours=2), 7, NOW)


def test_extract_returns_exactly_what_was_stored(
    storage: StorageSettings, stored: list[Period]
) -> None:
    frame = query.extract_metrics(FIRST_HOUR, END, storage=storage, now=NOW)
    assert len(frame) == len(stored)
    got = {(r.instance_id, r.metric, r.ts.to_pydatetime()): r.average for r in frame.itertuples()}
    assert got == {(p.instance_id, p.metric, p.ts): p.average for p in stored}

    one = query.extract_metrics(
        FIRST_HOUR + timedelta(hours=1),
        FIRST_HOUR + timedelta(hours=2),
        instances=["orders-db"],
        metrics=["CPUUtilization"],
        storage=storage,
        now=NOW,
    )
    assert one["ts"].tolist() == [FIRST_HOUR + timedelta(hours=1, minutes=5 * k) for k in range(12)]
    assert one["average"].tolist() == [float(((12 + k) * 37) % 100) for k in range(12)]

    wide = query.extract_metrics(
        FIRST_HOUR, END, instances=["users-db"], wide=True, storage=storage, now=NOW
    )
    expected_rows = PERIODS - 12 * len(MISSING_HOURS)
    assert len(wide) == expected_rows
    cpu = {p.ts: p.average for p in stored if p.instance_id == "users-db" and p.metric[0] == "C"}
    assert dict(zip(wide["ts"].dt.to_pydatetime(), wide["cpu_utilization"], strict=True)) == cpu


def test_unknown_instance_or_metric_names_what_exists(
    storage: StorageSettings, stored: list[Period]
) -> None:
    with pytest.raises(QueryError, match=r"^instance: unknown 'nope-db'; .*orders-db, users-db"):
        query.extract_metrics(FIRST_HOUR, END, instances=["nope-db"], storage=storage, now=NOW)
    with pytest.raises(
        QueryError,
        match=r"^metric: unknown 'CPU'; the warehouse has: CPUUtilization, FreeStorageSpace\.$",
    ):
        query.extract_metrics(FIRST_HOUR, END, metrics=["CPU"], storage=storage, now=NOW)


def test_health_summary_matches_a_hand_computation(
    storage: StorageSettings, stored: list[Period]
) -> None:
    summary = query.health_summary(FIRST_HOUR, END, storage=storage, now=NOW)
    assert sorted(zip(summary["instance_id"], summary["metric"], strict=True)) == [
        ("orders-db", "CPUUtilization"),
        ("orders-db", "FreeStorageSpace"),
        ("users-db", "CPUUtilization"),
        ("users-db", "FreeStorageSpace"),
    ]
    for row in summary.itertuples():
        values = np.array(
            [
                p.average
                for p in stored
                if (p.instance_id, p.metric) == (row.instance_id, row.metric)
            ]
        )
        assert row.minimum == values.min()
        assert row.maximum == values.max()
        assert row.average == pytest.approx(values.mean())
        assert row.p95 == pytest.approx(np.percentile(values, 95))
        assert row.periods == len(values)
        assert row.hours_expected == 6
    users = summary[summary["instance_id"] == "users-db"].iloc[0]
    assert users["hours_missing"] == 2
    first, last = (FIRST_HOUR + timedelta(hours=h) for h in MISSING_HOURS)
    last_shown = f"{last:%H:%M}" if first.date() == last.date() else f"{last:%Y-%m-%d %H:%M}"
    assert users["missing_hours"] == f"{first:%Y-%m-%d %H:%M}..{last_shown}"
    orders = summary[summary["instance_id"] == "orders-db"].iloc[0]
    assert (orders["hours_missing"], orders["missing_hours"]) == (0, "")


def test_hours_cloudwatch_had_nothing_for_are_empty_not_missing(
    warehouse: WarehouseResource, storage: StorageSettings, stored: list[Period]
) -> None:
    # users-db was stopped during its first absent hour: fetched after it settled, nothing came.
    stopped, absent = (FIRST_HOUR + timedelta(hours=h) for h in MISSING_HOURS)
    with warehouse.connect() as conn:
        conn.execute(
            "INSERT INTO rds_metric_fetches "
            "VALUES (?, ?, 'eu-west-1', 'users-db', ?, 0, true, 'r')",
            [stopped, ACCOUNT_ID, stopped + timedelta(hours=2)],
        )
    summary = query.health_summary(FIRST_HOUR, END, storage=storage, now=NOW)
    users = summary[summary["instance_id"] == "users-db"]
    assert users["hours_missing"].tolist() == [1, 1]
    assert users["missing_hours"].tolist() == [f"{absent:%Y-%m-%d %H:%M}"] * 2
    assert users["hours_empty"].tolist() == [1, 1]
    orders = summary[summary["instance_id"] == "orders-db"]
    assert orders["hours_empty"].tolist() == [0, 0]


def test_hour_ranges_fold_consecutive_hours() -> None:
    day = datetime(2026, 11, 25)
    hours = [day + timedelta(hours=h) for h in (3, 4, 5, 9, 23, 24, 25)]
    assert query.hour_ranges(hours) == (
        "2026-11-25 03:00..05:00, 2026-11-25 09:00, 2026-11-25 23:00..2026-11-26 01:00"
    )


def test_sql_reads_but_never_writes(storage: StorageSettings, stored: list[Period]) -> None:
    counted = query.run_sql("SELECT count(*) AS n FROM rds_metrics", storage)
    assert counted["n"].tolist() == [len(stored)]
    with pytest.raises(QueryError, match=r"^sql: only SELECT queries are allowed here, not INSERT"):
        query.run_sql("INSERT INTO rds_metrics SELECT * FROM rds_metrics", storage)
    with pytest.raises(QueryError, match=r"not DROP"):
        query.run_sql("DROP TABLE rds_metrics", storage)
    with pytest.raises(QueryError, match="expected exactly one statement, got 2"):
        query.run_sql("SELECT 1; SELECT 2", storage)
    with pytest.raises(QueryError, match=r"^sql: .*nosuchtable"):
        query.run_sql("SELECT * FROM nosuchtable", storage)
    assert query.run_sql("SELECT count(*) AS n FROM rds_metrics", storage)["n"][0] == len(stored)


def test_reading_pipeline_health_as_a_table_says_where_it_lives(
    storage: StorageSettings, stored: list[Period]
) -> None:
    with pytest.raises(QueryError) as raised:
        query.run_sql("SELECT * FROM pipeline_health", storage)
    assert str(raised.value) == (
        "sql: Catalog Error: Table with name pipeline_health does not exist! (pipeline_health "
        "is a Dagster asset with no table: its figures are its materializations' metadata in "
        "the Dagster UI, computed from the tables pipeline_runs and pipeline_run_parts)"
    )


def test_every_format_reads_back_the_same_rows(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2026-11-25 03:00", "2026-11-25 03:05"]),
            "instance_id": ["a", "b"],
            "average": [1.5, None],
        }
    )
    for fmt, read in (("csv", pd.read_csv), ("parquet", pd.read_parquet)):
        path = tmp_path / f"out.{fmt}"
        message = query.write_frame(frame, query.format_for(path, None), path)
        assert message == f"Wrote 2 row(s) to {path}"
        back = read(path)
        assert back["instance_id"].tolist() == ["a", "b"]
        assert back["average"].iloc[0] == 1.5 and pd.isna(back["average"].iloc[1])
    path = tmp_path / "out.json"
    query.write_frame(frame, "json", path)
    assert json.loads(path.read_text()) == [
        {"ts": "2026-11-25T03:00:00", "instance_id": "a", "average": 1.5},
        {"ts": "2026-11-25T03:05:00", "instance_id": "b", "average": None},
    ]
    header, row, more = query.write_frame(frame, "table", None, max_rows=1).splitlines()
    assert header.split() == ["ts", "instance_id", "average"]
    assert row.split() == ["2026-11-25", "03:00:00", "a", "1.50"]
    assert more == "... 1 more row(s): use --format csv or --output"

    with pytest.raises(QueryError, match=r"^output: cannot tell the format of 'out.xlsx'"):
        query.format_for(tmp_path / "out.xlsx", None)
    with pytest.raises(QueryError, match=r"^format: unknown 'xml'"):
        query.format_for(None, "xml")
    with pytest.raises(QueryError, match=r"^format: parquet is binary"):
        query.write_frame(frame, "parquet", None)
    with pytest.raises(QueryError, match=r"^format: duckdb is binary; give a file with"):
        query.write_frame(frame, "duckdb", None)
    assert query.format_for(tmp_path / "range.duckdb", None) == "duckdb"


def test_terminal_numbers_are_readable_at_every_scale() -> None:
    frame = pd.DataFrame({"value": [5_732_085_302.4, 51.287, 0.004468, 0.0]})
    lines = query.write_frame(frame, "table", None).splitlines()
    assert [line.strip() for line in lines] == [
        "value",
        "5,732,085,302",
        "51.29",
        "0.00447",
        "0.00",
    ]


def test_a_warehouse_never_written_is_a_clear_error(tmp_path: Path) -> None:
    storage = StorageSettings(duckdb_path=tmp_path / "none.duckdb")
    with pytest.raises(QueryError, match=r"No warehouse snapshot at .*none\.snapshot\.duckdb"):
        query.list_instances(storage)


def test_connect_holds_duckdb_to_the_query_memory_limit(
    storage: StorageSettings, stored: list[Period]
) -> None:
    """Inside someone's notebook process too: DuckDB's default is 80% of the RAM."""
    for limit, shown in (("1GB", "953.6 MiB"), ("300MB", "286.1 MiB")):
        with query.connect(replace(storage, query_memory_limit=limit)) as conn:
            [(setting,)] = conn.execute("SELECT current_setting('memory_limit')").fetchall()
            assert setting == shown
            with pytest.raises(duckdb.Error, match="configuration has been locked"):
                conn.execute("SET memory_limit = '100GB'")


def test_run_sql_stops_at_the_time_limit_and_lets_go_of_ctrl_c(
    storage: StorageSettings, stored: list[Period]
) -> None:
    limited = replace(storage, query_timeout_seconds=0.5)
    for sql in (
        "SELECT count(*) FROM range(10000000000000)",
        "WITH RECURSIVE t(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM t) SELECT count(*) FROM t",
    ):
        with pytest.raises(QueryStopped) as stopped:
            query.run_sql(sql, limited)
        assert str(stopped.value).startswith(
            "sql: stopped after 0.5 s, the time limit of METRICS_QUERY_TIMEOUT_SECONDS"
        )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert query.run_sql("SELECT count(*) AS n FROM rds_metrics", limited)["n"][0] == len(stored)


def test_the_tier_follows_the_range_unless_one_is_asked_for() -> None:
    storage = StorageSettings(duckdb_path=Path("unused.duckdb"), retention_days=7)
    recent = query.choose_tier(NOW - timedelta(days=2), NOW, None, storage, NOW)
    assert (recent.tier, recent.start, recent.end) == ("raw", NOW - timedelta(days=2), NOW)
    assert recent.line() == "read the raw tier (rds_metrics): the range is within its 7 days"
    old = query.choose_tier(NOW - timedelta(days=30), NOW, None, storage, NOW)
    assert (old.tier, old.start, old.table.name) == (
        "hourly",
        NOW - timedelta(days=30),
        "rds_metrics_hourly",
    )
    assert "starts before the raw tier's 7 days (METRICS_RETENTION_DAYS)" in old.why
    # Asked for, the raw tier gives what it keeps of the range; the daily tier all of it.
    raw = query.choose_tier(NOW - timedelta(days=30), NOW, "raw", storage, NOW)
    assert (raw.tier, raw.start) == ("raw", LAST_HOUR - timedelta(days=7))
    daily = query.choose_tier(datetime(2020, 1, 1), NOW, "daily", storage, NOW)
    assert (daily.tier, daily.start, daily.table.name) == (
        "daily",
        datetime(2020, 1, 1),
        "rds_metrics_daily",
    )
    with pytest.raises(QueryError, match=r"outside retention.*METRICS_RETENTION_DAYS=7\)\.$"):
        query.choose_tier(datetime(2020, 1, 1), datetime(2020, 1, 2), "raw", storage, NOW)
    kept_a_year = replace(storage, hourly_retention_days=365)
    with pytest.raises(QueryError, match=r"METRICS_HOURLY_RETENTION_DAYS=365\)\.$"):
        query.choose_tier(datetime(2020, 1, 1), datetime(2020, 1, 2), None, kept_a_year, NOW)
    with pytest.raises(QueryError, match=r"^tier: 'weekly' is not a tier; choose raw, hourly"):
        query.choose_tier(NOW - timedelta(days=1), NOW, "weekly", storage, NOW)


def test_an_extract_before_the_raw_tier_reads_the_hourly_one(
    warehouse: WarehouseResource, storage: StorageSettings
) -> None:
    """Hourly rows of a month ago, as the hourly tier holds them: the extract returns them,
    and says so; the wide view (of the raw tier) is refused for them by name."""
    month_ago = LAST_HOUR - timedelta(days=30)
    rows = [
        (month_ago + timedelta(hours=n), ACCOUNT_ID, "us-east-1", "orders-db", "CPUUtilization",
         "Percent", 10.0 + n, 1.0, 90.0, 120.0 + n, 12.0, 9.0, 50.0, 60.0 + n, 80.0, NOW)
        for n in range(3)
    ]  # fmt: skip
    with warehouse.connect() as conn:
        conn.executemany(
            f"INSERT INTO rds_metrics_hourly VALUES ({', '.join('?' * len(rows[0]))})", rows
        )
    frame = query.extract_metrics(
        month_ago - timedelta(hours=1), month_ago + timedelta(hours=2), storage=storage, now=NOW
    )
    assert frame.attrs["tier"] == "hourly"
    assert list(frame["hour"].dt.to_pydatetime()) == [month_ago, month_ago + timedelta(hours=1)]
    assert frame["p95"].tolist() == [60.0, 61.0]
    assert "collected_at" not in frame.columns
    with pytest.raises(QueryError, match=r"^wide: the wide view is of the raw tier"):
        query.extract_metrics(month_ago, NOW, wide=True, storage=storage, now=NOW)
