"""One fresh tick's wall time and bytes written to disk, on an empty warehouse and on one
holding a long history, for each storage: does a tick cost more as history grows?

    .venv/bin/python -m benchmarks.tick_growth                  # 200 instances, 30 + 455 days
    .venv/bin/python -m benchmarks.tick_growth --instances 20 --raw-days 2 --hourly-days 10

For each storage (the DuckDB file with its whole-file snapshot; a lake on this machine, a
DuckDB catalog file and a data folder), against the local AWS serving `--instances`
instances in two regions:
1. the inventory is collected once, then one fresh tick is measured as it is deployed:
   `dagster job execute -m metrics_pipeline.definitions -j fresh_collection_job` over the
   hour in progress and the one before, checks and the readers' snapshot included, in a child
   process whose wall time and bytes written to disk (its rusage, children included) are
   taken;
2. the warehouse is filled, through the pipeline's own writer (`replace_metrics`, a day a
   transaction, as the healing runs write), with `--raw-days` days of the raw tier at 300 s
   and `--hourly-days` days of the hourly tier for every instance and default metric, and the
   daily tier from it, then the lake is compacted as its daily maintenance does (and says
   how many bytes of data files each tier takes per statistic value stored);
3. the same tick is measured again, three times (the median).
The figures are ratios within one run of one machine (wall times on a shared machine are
noisy: read them against each other). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from benchmarks.collect import REGIONS, window_hours
from benchmarks.local_fleet import PROJECT_ROOT, local_aws
from metrics_pipeline.catalog import (
    DEFAULT_STATISTICS,
    HOURLY_STATISTIC_COLUMNS,
    RDS_INSTANCE_DEFAULTS,
)
from metrics_pipeline.collection.store import (
    HOURLY_DESTINATION,
    RAW_DESTINATION,
    Destination,
    replace_metrics,
)
from metrics_pipeline.dagster_runs import range_tags
from metrics_pipeline.hours import floor_day
from metrics_pipeline.maintenance.retention import compact_lake
from metrics_pipeline.rollups.store import replace_days
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.lake import LAKE_ALIAS
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import DAILY_TABLE

DAY = timedelta(days=1)
STORAGES = ("file", "local_lake")


def storage_env(storage: str, folder: Path) -> dict[str, str]:
    if storage == "file":
        return {"METRICS_DUCKDB_PATH": str(folder / "metrics.duckdb")}
    return {
        "METRICS_DUCKDB_PATH": str(folder / "metrics.duckdb"),
        "METRICS_WAREHOUSE": f"ducklake:{folder / 'metrics.ducklake'}",
        "METRICS_LAKE_DATA_PATH": f"{folder / 'data'}/",
    }


def warehouse_of(storage: str, folder: Path) -> WarehouseResource:
    env = storage_env(storage, folder)
    return WarehouseResource(
        database=env["METRICS_DUCKDB_PATH"],
        lake_catalog=env.get("METRICS_WAREHOUSE", ""),
        lake_data_path=env.get("METRICS_LAKE_DATA_PATH", ""),
    )


def dagster(env: dict[str, str], *args: str) -> tuple[float, int]:
    """Runs the dagster CLI; its wall seconds and the bytes it and its children wrote."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock
    began = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"dagster {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    written = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock - before) * 512
    return wall, written


def fresh_tick(env: dict[str, str]) -> tuple[float, int]:
    first, last = window_hours(2, newest_settled=True)
    tags = json.dumps(range_tags(first, last))
    return dagster(
        env, "job", "execute", "-m", "metrics_pipeline.definitions",
        "-j", "fresh_collection_job", "--tags", tags,
    )  # fmt: skip


def spool_day(
    folder: Path,
    instances: pa.Table,
    day: datetime,
    period: int,
    statistics: Sequence[str],
) -> Path:
    """A day of every instance, metric and statistic at `period`, as the fetch spools it."""
    path = folder / f"{day:%Y%m%d}-{period}.parquet"
    with duckdb.connect() as conn:
        conn.register("fleet", instances)
        conn.execute(
            f"""
            COPY (
                SELECT account_id, region, instance_id, metric, statistic,
                       ? + INTERVAL (p * {period}) SECOND AS ts,
                       hash(instance_id, metric, statistic, p, ?) % 100000 / 1000 AS value
                FROM fleet, unnest(?) b(metric), unnest(?) c(statistic),
                     range({86400 // period}) d(p)
            ) TO '{path}' (FORMAT parquet)
            """,
            [day, day, list(RDS_INSTANCE_DEFAULTS), list(statistics)],
        )
    return path


def fill(
    warehouse: WarehouseResource, spool: Path, raw_days: int, hourly_days: int
) -> dict[str, int]:
    """The history, older than the ticks' hours, through the pipeline's writer."""
    with warehouse.reader() as conn:
        instances = conn.execute(
            "SELECT DISTINCT account_id, region, instance_id FROM rds_instances"
        ).to_arrow_table()
    targets = [Instance(*row) for row in zip(*instances.to_pydict().values(), strict=True)]
    today = floor_day(datetime.now(UTC).replace(tzinfo=None))
    tiers: list[tuple[int, int, Destination, Sequence[str]]] = [
        (raw_days, 300, RAW_DESTINATION, DEFAULT_STATISTICS),
        (hourly_days, 3600, HOURLY_DESTINATION, list(HOURLY_STATISTIC_COLUMNS)),
    ]
    stored: dict[str, int] = {}
    with warehouse.connect() as conn:
        for days, period, destination, stats in tiers:
            stored[destination.table.name] = 0
            for n in range(1, days + 1):
                day = today - n * DAY
                spooled = spool_day(spool, instances, day, period, stats)
                written = replace_metrics(
                    conn,
                    spool_files=[spooled],
                    targets=targets,
                    start=day,
                    end=day + DAY,
                    fetched_at=day + 2 * DAY,
                    settle_delay=timedelta(minutes=15),
                    run_id="benchmark-fill",
                    destination=destination,
                )
                stored[destination.table.name] += written.rows_written
                spooled.unlink()
        if hourly_days:
            stored[DAILY_TABLE] = replace_days(
                conn, today - hourly_days * DAY, today, datetime.now(UTC).replace(tzinfo=None)
            )
        if warehouse.lake:
            compact_lake(conn, datetime.now(UTC).replace(tzinfo=None) + DAY)
    return stored


# Statistic values a row holds, by table: the raw tier's five statistics, the hourly tier's
# nine; a daily row keeps the five statistics and three peaks.
DATAPOINTS_PER_ROW = {
    RAW_DESTINATION.table.name: len(DEFAULT_STATISTICS),
    HOURLY_DESTINATION.table.name: len(HOURLY_STATISTIC_COLUMNS),
    DAILY_TABLE: 8,
}


def lake_bytes_per_datapoint(
    warehouse: WarehouseResource, stored: dict[str, int]
) -> dict[str, float]:
    """Each tier's data files (the lake's own account of them) per statistic value stored."""
    with warehouse.connect() as conn:
        sizes = dict(
            conn.execute(
                f"SELECT table_name, file_size_bytes + delete_file_size_bytes "
                f"FROM ducklake_table_info('{LAKE_ALIAS}')"
            ).fetchall()
        )
    return {
        table: round(sizes[table] / max(1, rows * DATAPOINTS_PER_ROW[table]), 2)
        for table, rows in stored.items()
        if rows
    }


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure_storage(
    storage: str, root: Path, endpoint: str, raw_days: int, hourly_days: int, repeats: int
) -> dict[str, Any]:
    folder = root / storage
    folder.mkdir()
    home = folder / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "METRICS_AWS_REGIONS": REGIONS,
        "METRICS_MAX_REQUESTS_PER_SECOND": "50",
        **storage_env(storage, folder / "warehouse"),
    }
    fresh_tick(env)  # the inventory and a first write: what "empty" holds
    empty = [fresh_tick(env) for _ in range(repeats)]
    began = time.perf_counter()
    warehouse = warehouse_of(storage, folder / "warehouse")
    stored = fill(warehouse, folder, raw_days, hourly_days)
    fill_seconds = time.perf_counter() - began
    full = [fresh_tick(env) for _ in range(repeats)]
    wall_empty = statistics.median(w for w, _ in empty)
    wall_full = statistics.median(w for w, _ in full)
    bytes_empty = statistics.median(b for _, b in empty)
    bytes_full = statistics.median(b for _, b in full)
    return {
        "storage": storage,
        "rows": stored,
        "fill_seconds": round(fill_seconds, 1),
        "warehouse_mib": round(folder_bytes(folder / "warehouse") / 2**20, 1),
        "tick_seconds_empty": round(wall_empty, 1),
        "tick_seconds_full": round(wall_full, 1),
        "tick_seconds_ratio": round(wall_full / wall_empty, 2),
        "tick_written_mib_empty": round(bytes_empty / 2**20, 1),
        "tick_written_mib_full": round(bytes_full / 2**20, 1),
        "tick_written_ratio": round(bytes_full / max(bytes_empty, 1), 2),
        "bytes_per_datapoint": (
            lake_bytes_per_datapoint(warehouse, stored) if warehouse.lake else {}
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--raw-days", type=int, default=30)
    parser.add_argument("--hourly-days", type=int, default=455)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storage", default=",".join(STORAGES))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tick-growth-") as folder:
        root = Path(folder)
        with local_aws(args.instances, root) as aws:
            for storage in args.storage.split(","):
                figures = measure_storage(
                    storage, root, aws.endpoint, args.raw_days, args.hourly_days, args.repeats
                )
                print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
