"""Storage per stored datapoint, tier by tier, as the pipeline's own writers store them in a
DuckDB file.

    .venv/bin/python -m benchmarks.tiers                        # 200 instances, 30 days
    .venv/bin/python -m benchmarks.tiers --instances 50 --days 7

For a fleet of `--instances` instances and the 14 default metrics, each tier is written by the
pipeline's own writer into a file of its own, then checkpointed:
- raw: `--raw-days` days at 300 s with the five statistics (`replace_metrics`, a day a
  transaction);
- hourly: `--days` days at 3600 s with the five statistics and four percentiles
  (`replace_metrics` into the hourly tier, a day a transaction, as its runs write);
- daily: the daily tier computed from that hourly file (`replace_days`), copied into a file
  of its own.
Each file's size is less that of a file holding the empty tables.
A datapoint is one statistic value stored. The values are random doubles (what CloudWatch
sends compresses no better), so the figures are an upper bound. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

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
from metrics_pipeline.rollups.store import replace_days
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.schema import DAILY_TABLE, ensure_schema
from metrics_pipeline.warehouse.sql import sql_literal

FIRST_DAY = datetime(2026, 1, 1)
ACCOUNT = "123456789012"
DAY = timedelta(days=1)


def spool_day(
    folder: Path, instances: int, day: datetime, period: int, statistics: Sequence[str]
) -> Path:
    """A day of every instance, metric and statistic at `period`, as the fetch spools it."""
    path = folder / f"{day:%Y%m%d}-{period}.parquet"
    metrics = ", ".join(sql_literal(m) for m in RDS_INSTANCE_DEFAULTS)
    stats = ", ".join(sql_literal(s) for s in statistics)
    with duckdb.connect() as conn:
        conn.execute(
            f"""
            COPY (
                SELECT {sql_literal(ACCOUNT)} AS account_id, 'us-east-1' AS region,
                       'db-' || i AS instance_id, metric, statistic,
                       ? + INTERVAL (p * {period}) SECOND AS ts,
                       random() * 100 AS value
                FROM range({instances}) a(i), unnest([{metrics}]) b(metric),
                     unnest([{stats}]) c(statistic), range({86400 // period}) d(p)
            ) TO {sql_literal(path)} (FORMAT parquet)
            """,
            [day],
        )
    return path


def write_tier(
    database: Path,
    spool: Path,
    instances: int,
    days: int,
    period: int,
    destination: Destination,
    statistics: Sequence[str],
) -> int:
    """Writes `days` days of the fleet into `destination`; returns the datapoints stored."""
    targets = [Instance(ACCOUNT, "us-east-1", f"db-{i}") for i in range(instances)]
    stored = 0
    with duckdb.connect(str(database)) as conn:
        ensure_schema(conn)
        for n in range(days):
            day = FIRST_DAY + n * DAY
            files = [spool_day(spool, instances, day, period, statistics)]
            written = replace_metrics(
                conn,
                spool_files=files,
                targets=targets,
                start=day,
                end=day + DAY,
                fetched_at=day + 2 * DAY,
                settle_delay=timedelta(minutes=15),
                run_id="benchmark",
                destination=destination,
            )
            stored += written.datapoints
            files[0].unlink()
        conn.execute("CHECKPOINT")
    return stored


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--days", type=int, default=30, help="days of the hourly tier")
    parser.add_argument("--raw-days", type=int, default=1, help="days of the raw tier")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tiers-benchmark-") as folder:
        root = Path(folder)
        raw_file, hourly_file = root / "raw.duckdb", root / "hourly.duckdb"
        raw = write_tier(
            raw_file, root, args.instances, args.raw_days, 300, RAW_DESTINATION,
            DEFAULT_STATISTICS,
        )  # fmt: skip
        hourly = write_tier(
            hourly_file, root, args.instances, args.days, 3600, HOURLY_DESTINATION,
            list(HOURLY_STATISTIC_COLUMNS),
        )  # fmt: skip
        sizes = {"raw": raw_file.stat().st_size, "hourly": hourly_file.stat().st_size}
        with duckdb.connect(str(hourly_file)) as conn:
            replace_days(conn, FIRST_DAY, FIRST_DAY + args.days * DAY, FIRST_DAY)
            [(daily_rows,)] = conn.execute(f"SELECT count(*) FROM {DAILY_TABLE}").fetchall()
        daily_file, empty_file = root / "daily.duckdb", root / "empty.duckdb"
        with duckdb.connect(str(daily_file)) as conn:
            ensure_schema(conn)
            conn.execute(f"ATTACH {sql_literal(hourly_file)} AS hourly (READ_ONLY)")
            conn.execute(f"INSERT INTO {DAILY_TABLE} SELECT * FROM hourly.{DAILY_TABLE}")
            conn.execute("CHECKPOINT")
        with duckdb.connect(str(empty_file)) as conn:
            ensure_schema(conn)
            conn.execute("CHECKPOINT")
        sizes["daily"] = daily_file.stat().st_size
        empty = empty_file.stat().st_size
        # A daily row keeps 8 values: the 5 statistics and 3 peaks (and its count of hours).
        daily = daily_rows * 8
        print(f"{args.instances} instances x {len(RDS_INSTANCE_DEFAULTS)} metrics (random values)")
        print("| tier | datapoints stored | bytes | bytes per datapoint |")
        print("|---|---|---|---|")
        for tier, name, datapoints in (
            ("raw", f"raw ({args.raw_days} d at 300 s, 5 statistics)", raw),
            ("hourly", f"hourly ({args.days} d, 9 statistics)", hourly),
            ("daily", f"daily ({args.days} d, from the hourly tier)", daily),
        ):
            size = sizes[tier] - empty
            print(f"| {name} | {datapoints:,} | {size:,} | {size / max(1, datapoints):.1f} |")


if __name__ == "__main__":
    main()
