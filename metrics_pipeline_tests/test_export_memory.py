"""Exports stream: the command-line tool's memory does not grow with the range it writes,
measured on a generated snapshot of a 500-instance fleet's 7 days (14 million rows)."""

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from metrics_pipeline.catalog import RDS_INSTANCE_DEFAULTS, RDS_METRIC_UNITS
from metrics_pipeline.hours import floor_hour, utc_now
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import METRICS_TABLE, schema_sql

pytestmark = pytest.mark.load

FIRST = floor_hour(utc_now()) - timedelta(days=7) + timedelta(hours=1)
WEEK = ("--start", FIRST.isoformat(), "--end", floor_hour(utc_now()).isoformat())

INSTANCES = 500
PERIODS = (7 * 24 - 1) * 12  # the 7 days of 5-minute periods up to the current hour
ROWS = INSTANCES * len(RDS_INSTANCE_DEFAULTS) * PERIODS
CLI = str(Path(sys.executable).with_name("metrics-pipeline"))
PEAK_MIB = 500

# Runs the command, then prints the peak resident memory of that child alone (kilobytes).
MEASURED = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


@pytest.fixture(scope="module")
def big_warehouse(tmp_path_factory: pytest.TempPathFactory) -> WarehouseResource:
    """A snapshot as the pipeline would publish it after a week of the fleet, generated in
    one statement (its table without the writer's primary key, which readers never use)."""
    warehouse = WarehouseResource(database=str(tmp_path_factory.mktemp("big") / "metrics.duckdb"))
    metrics = ", ".join(f"('{m}', '{RDS_METRIC_UNITS[m]}')" for m in RDS_INSTANCE_DEFAULTS)
    with duckdb.connect(str(warehouse.snapshot_path)) as conn:
        conn.execute(
            f"""
            CREATE TABLE {METRICS_TABLE} AS
            SELECT $first + to_minutes(p * 5) AS ts, '123456789012' AS account_id,
                   'us-east-1' AS region, 'db-' || lpad(i::VARCHAR, 4, '0') AS instance_id,
                   m.metric, m.unit, ((i * 7 + p) % 100)::DOUBLE AS average,
                   ((i * 7 + p) % 100 - 1)::DOUBLE AS minimum,
                   ((i * 7 + p) % 100 + 1)::DOUBLE AS maximum,
                   (((i * 7 + p) % 100) * 5)::DOUBLE AS sum, 5::DOUBLE AS sample_count,
                   $first AS collected_at
            FROM range({INSTANCES}) r(i), range({PERIODS}) q(p),
                 (VALUES {metrics}) m(metric, unit)
            """,
            {"first": FIRST},
        )
        conn.execute(schema_sql(keys=True))  # the other tables and the views
    return warehouse


def peak_mib(warehouse: WarehouseResource, *args: str) -> float:
    env = {"METRICS_DUCKDB_PATH": warehouse.database, "PATH": "/usr/bin:/bin"}
    measured = subprocess.run(
        [sys.executable, "-c", MEASURED, CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=True,
    )
    code, kilobytes = measured.stdout.split()
    assert code == "0", measured.stderr
    return int(kilobytes) / 1024


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args",
    [
        ("extract", *WEEK, "-o", "{out}/all.csv"),
        ("extract", *WEEK, "-o", "{out}/all.parquet"),
        ("extract", *WEEK, "--wide", "-o", "{out}/wide.csv"),
        ("query", f"SELECT * FROM {METRICS_TABLE}", "-o", "{out}/query.parquet"),
    ],
    ids=["csv", "parquet", "wide-csv", "query-parquet"],
)
def test_an_export_of_the_whole_week_stays_under_500_mib(
    big_warehouse: WarehouseResource, tmp_path: Path, args: tuple[str, ...]
) -> None:
    args = tuple(arg.format(out=tmp_path) for arg in args)
    peak = peak_mib(big_warehouse, *args)
    output = Path(args[-1])
    if output.suffix == ".parquet":
        written = pq.ParquetFile(output).metadata.num_rows
    else:
        with output.open() as lines:
            written = sum(1 for _ in lines) - 1
    expected = ROWS // len(RDS_INSTANCE_DEFAULTS) if "--wide" in args else ROWS
    print(f"{args[0]} {output.name}: {written:,} rows, peak {peak:.0f} MiB")
    assert written == expected
    assert peak < PEAK_MIB


def test_the_snapshot_holds_what_was_generated(big_warehouse: WarehouseResource) -> None:
    with duckdb.connect(str(big_warehouse.snapshot_path), read_only=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {METRICS_TABLE}").fetchone() == (ROWS,)
