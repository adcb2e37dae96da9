"""The two warehouse backends measured side by side in one run: the embedded DuckDB file (with
the snapshot it publishes) and the DuckLake (a PostgreSQL catalog and Parquet on S3, here a
local PostgreSQL and a moto S3 server on loopback, each in its own process).

    .venv/bin/python -m benchmarks.backends                     # 200 instances, a day
    .venv/bin/python -m benchmarks.backends --instances 50 --hours 6

For each backend, on a warehouse already holding `--hours` hours of the fleet:
- commit latency: one small transaction (a run's figures), the median of 20;
- rewrite of one hour: the pipeline's own write of one hour of every instance (replacing
  what was there), the median of 3; for the file, the snapshot it publishes afterwards too;
- analyst query: a reader opening the warehouse and averaging every metric per instance and
  hour over the whole window, the median of 3.
Figures are medians in seconds and the lake's as a ratio to the file's; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from metrics_pipeline.catalog import DEFAULT_STATISTICS, RDS_INSTANCE_DEFAULTS
from metrics_pipeline.collection.store import record_run, replace_metrics
from metrics_pipeline.local_postgres import server as local_postgres
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.lake import Lake
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.sql import sql_literal

FIRST_HOUR = datetime(2026, 11, 1)
ACCOUNT = "123456789012"


def spool_hour(folder: Path, instances: int, hour: datetime, seed: int) -> Path:
    """One hour of every instance, metric and statistic, as the fetch spools it."""
    path = folder / f"hour-{hour:%Y%m%d%H}-{seed}.parquet"
    metrics = ", ".join(sql_literal(m) for m in RDS_INSTANCE_DEFAULTS)
    stats = ", ".join(sql_literal(s) for s in DEFAULT_STATISTICS)
    with duckdb.connect() as conn:
        conn.execute(
            f"""
            COPY (
                SELECT {sql_literal(ACCOUNT)} AS account_id, 'us-east-1' AS region,
                       'db-' || i AS instance_id, metric, statistic,
                       ? + INTERVAL 5 MINUTE * p AS ts,
                       hash(i, metric, statistic, p, {seed}) % 1000 / 10.0 AS value
                FROM range({instances}) a(i), unnest([{metrics}]) b(metric),
                     unnest([{stats}]) c(statistic), range(12) d(p)
            ) TO {sql_literal(path)} (FORMAT parquet)
            """,
            [hour],
        )
    return path


def median_seconds(action: Callable[[], object], times: int) -> float:
    taken = []
    for _ in range(times):
        began = time.perf_counter()
        action()
        taken.append(time.perf_counter() - began)
    return statistics.median(taken)


def measure(
    warehouse: WarehouseResource, spool: Path, instances: int, hours: int
) -> dict[str, float]:
    targets = [Instance(ACCOUNT, "us-east-1", f"db-{i}") for i in range(instances)]

    def write_hour(conn: duckdb.DuckDBPyConnection, hour: datetime, files: list[Path]) -> None:
        replace_metrics(
            conn,
            spool_files=files,
            targets=targets,
            start=hour,
            end=hour + timedelta(hours=1),
            fetched_at=hour + timedelta(hours=2),
            settle_delay=timedelta(minutes=15),
            run_id="benchmark",
        )

    for h in range(hours):  # a run each, as collection writes (and the file publishes)
        hour = FIRST_HOUR + timedelta(hours=h)
        with warehouse.connect() as conn:
            write_hour(conn, hour, [spool_hour(spool, instances, hour, 0)])
    rewritten = FIRST_HOUR + timedelta(hours=hours // 2)
    rewrite_files = [spool_hour(spool, instances, rewritten, 1)]
    figures: dict[str, float] = {}
    with warehouse.connect() as conn:
        run = 0

        def commit() -> None:
            nonlocal run
            run += 1
            record_run(
                conn,
                {"run_id": f"r{run}", "asset": "rds_metrics", "window_start": FIRST_HOUR,
                 "window_end": FIRST_HOUR, "finished_at": FIRST_HOUR},
            )  # fmt: skip

        figures["commit_s"] = median_seconds(commit, 20)
        figures["rewrite_hour_s"] = median_seconds(
            lambda: write_hour(conn, rewritten, rewrite_files), 3
        )
    figures["publish_s"] = warehouse.publish_seconds

    def analyst_query() -> None:
        with warehouse.reader() as conn:
            conn.execute(
                "SELECT instance_id, metric, date_trunc('hour', ts) AS hour, avg(average) "
                "FROM rds_metrics GROUP BY ALL"
            ).fetchall()

    figures["query_s"] = median_seconds(analyst_query, 3)
    with warehouse.reader() as conn:
        [(rows,)] = conn.execute("SELECT count(*) FROM rds_metrics").fetchall()
    figures["rows"] = rows
    return figures


@contextmanager
def lake_servers(folder: Path) -> Iterator[Lake]:
    """A PostgreSQL and a moto S3 server on loopback, each its own process."""
    postgres_folder = Path(tempfile.mkdtemp(prefix="metrics-benchmark-postgres-"))
    postgres = local_postgres.start(postgres_folder)
    port = local_postgres.free_port()
    s3 = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/")
                break
            except OSError:
                time.sleep(0.1)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/lake", method="PUT"))
        os.environ |= {
            "PGPASSFILE": str(postgres.passfile(local_postgres.WRITER)),
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "benchmark"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "benchmark"),
        }
        yield Lake(f"ducklake:postgres:{postgres.dsn('lake')}", "s3://lake/benchmark/")
    finally:
        s3.terminate()
        s3.wait(10)
        postgres.stop()
        shutil.rmtree(postgres_folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--hours", type=int, default=24)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="metrics-backends-") as temp:
        folder = Path(temp)
        spool = folder / "spool"
        spool.mkdir()
        file = WarehouseResource(database=str(folder / "file" / "metrics.duckdb"))
        results = {"DuckDB file": measure(file, spool, args.instances, args.hours)}
        with lake_servers(folder) as lake:
            in_lake = WarehouseResource(
                database=str(folder / "lake" / "unused.duckdb"),
                lake_catalog=lake.catalog,
                lake_data_path=lake.data_path,
            )
            results["DuckLake (PostgreSQL + S3)"] = measure(
                in_lake, spool, args.instances, args.hours
            )
    file_figures = results["DuckDB file"]
    print(
        f"{args.instances} instances × {len(RDS_INSTANCE_DEFAULTS)} metrics × {args.hours} h "
        f"({file_figures['rows']:,.0f} rows); medians in seconds, the lake's also as a ratio "
        "to the file's"
    )
    print("| backend | commit | rewrite of one hour | snapshot publish | analyst query |")
    print("|---|---|---|---|---|")
    for name, figures in results.items():
        cells = []
        for key in ("commit_s", "rewrite_hour_s", "publish_s", "query_s"):
            value = figures[key]
            if key == "publish_s" and name != "DuckDB file":
                cells.append("none")
                continue
            ratio = (
                value / file_figures[key] if name != "DuckDB file" and file_figures[key] else None
            )
            cells.append(f"{value:.3f}" + (f" ({ratio:.1f}×)" if ratio else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
