"""Analysts' queries on each storage: the lake on this machine against the DuckDB file.

    .venv/bin/python -m benchmarks.analyst_queries                 # 200 instances, 7 + 90 days
    .venv/bin/python -m benchmarks.analyst_queries --instances 50 --raw-days 2 --hourly-days 10

Both warehouses get the same history through the pipeline's writer (benchmarks.tick_growth's
fill: `--raw-days` of the raw tier at 300 s, `--hourly-days` of the hourly tier, for every
instance and default metric; the lake then compacted as its daily maintenance does). Each
query then runs as an analyst runs it, through `query.run_sql` (a new sandboxed reader each
time: the snapshot attached, or the lake's catalog copy with its data folder read through the
read-only file system), five times; the median is printed with the lake's time as a ratio of
the file's, and whether both answered the same rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.tick_growth import fill, storage_env, warehouse_of
from metrics_pipeline.analysts import query
from metrics_pipeline.hours import floor_hour
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.resources import WarehouseResource

QUERIES = {
    "open a reader (SELECT 1)": "SELECT 1",
    "latest CPU of every instance": """
        SELECT account_id, region, instance_id, max(ts) AS latest,
               arg_max(average, ts) AS cpu
        FROM rds_metrics WHERE metric = 'CPUUtilization'
          AND ts >= (SELECT max(ts) FROM rds_metrics) - INTERVAL 1 DAY
        GROUP BY ALL""",
    "one instance's week of raw CPU": """
        SELECT ts, average, maximum FROM rds_metrics
        WHERE instance_id = 'db-1' AND metric = 'CPUUtilization'
          AND ts >= (SELECT max(ts) FROM rds_metrics) - INTERVAL 7 DAY
        ORDER BY ts""",
    "fleet's daily worst hourly p95, whole hourly tier": """
        SELECT instance_id, date_trunc('day', hour) AS day, max(p95) AS worst_p95
        FROM rds_metrics_hourly WHERE metric = 'CPUUtilization' GROUP BY ALL""",
    "weekly shape, 28 days of rds_hourly_history": """
        SELECT instance_id, isodow(hour) AS weekday, hour(hour) AS hour_of_day,
               avg(p95) AS cpu_p95
        FROM rds_hourly_history WHERE metric = 'CPUUtilization'
          AND hour >= (SELECT max(hour) FROM rds_metrics_hourly) - INTERVAL 28 DAY
        GROUP BY ALL""",
}


def seed_inventory(warehouse: WarehouseResource, instances: int) -> None:
    now = floor_hour(datetime.now(UTC).replace(tzinfo=None))
    warehouse.prepare()
    with warehouse.connect() as conn:
        conn.execute(
            "INSERT INTO rds_instances (account_id, region, instance_id, engine, status, "
            "first_seen, last_seen) "
            "SELECT '123456789012', 'us-east-1', 'db-' || i, 'postgres', 'available', ?, ? "
            "FROM range(?) t(i)",
            [now, now, instances],
        )


def storage_settings(storage: str, folder: Path) -> StorageSettings:
    env = storage_env(storage, folder)
    return StorageSettings(
        duckdb_path=Path(env["METRICS_DUCKDB_PATH"]),
        warehouse=env.get("METRICS_WAREHOUSE"),
        lake_data_path=env.get("METRICS_LAKE_DATA_PATH"),
    )


def median_seconds(sql: str, storage: StorageSettings, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        query.run_sql(sql, storage)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def sorted_rows(frame: pd.DataFrame) -> list[tuple[object, ...]]:
    """The rows in one order, floats to 12 significant digits: an average over many rows
    differs in its last bits with the order DuckDB's threads add them in."""
    rows = (
        tuple(float(f"{value:.12g}") if isinstance(value, float) else value for value in row)
        for row in frame.itertuples(index=False, name=None)
    )
    return sorted(rows, key=repr)


def measure_queries(
    root: Path, instances: int, raw_days: int, hourly_days: int, repeats: int
) -> list[dict[str, Any]]:
    """Each query's median time on the file and on the lake, filled alike."""
    settings = {}
    for storage in ("file", "local_lake"):
        place = root / storage
        warehouse = warehouse_of(storage, place)
        seed_inventory(warehouse, instances)
        fill(warehouse, root, raw_days, hourly_days)
        settings[storage] = storage_settings(storage, place)
    measured = []
    for name, sql in QUERIES.items():
        seconds = {s: median_seconds(sql, settings[s], repeats) for s in settings}
        answers = [sorted_rows(query.run_sql(sql, settings[s])) for s in settings]
        measured.append(
            {
                "query": name,
                "rows": len(answers[0]),
                "same_rows": answers[0] == answers[1],
                "file_ms": round(seconds["file"] * 1000),
                "lake_ms": round(seconds["local_lake"] * 1000),
                "lake_to_file": round(seconds["local_lake"] / seconds["file"], 2),
            }
        )
    return measured


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--raw-days", type=int, default=7)
    parser.add_argument("--hourly-days", type=int, default=90)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="analyst-queries-") as folder:
        measured = measure_queries(
            Path(folder), args.instances, args.raw_days, args.hourly_days, args.repeats
        )
    for figures in measured:
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
