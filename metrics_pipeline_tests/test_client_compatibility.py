"""Analysts' own DuckDB clients open the snapshot: the oldest client the docs name (the DuckDB
CLI 1.4.4, installed by the dev dependencies) reads it and sees what the pipeline wrote; and,
too old for the lake, a range exported from it as a DuckDB file."""

import csv
import io
import shutil
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import STORAGE_COMPATIBILITY_VERSION
from metrics_pipeline_tests.known_data import FIRST_HOUR, periods, seed

pytestmark = pytest.mark.storage_kinds(
    "duckdb", reason="the DuckDB file's storage format, as older clients read it"
)

OLDEST_DOCUMENTED_CLIENT = "v1.4.4"


@pytest.fixture
def old_cli(tmp_path: Path) -> Path:
    """The duckdb-cli wheel's binary (pip installs it without the executable bit)."""
    installed = Path(sys.executable).with_name("duckdb")
    if not installed.is_file():
        pytest.fail("the DuckDB CLI is missing: install the dev dependencies (duckdb-cli)")
    binary = tmp_path / "duckdb-cli"
    shutil.copy(installed, binary)
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


@pytest.mark.e2e
def test_the_oldest_documented_client_reads_the_snapshot(
    old_cli: Path, warehouse: WarehouseResource
) -> None:
    written = periods()
    seed(warehouse)
    version = subprocess.run(
        [str(old_cli), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert version.startswith(OLDEST_DOCUMENTED_CLIENT)

    sql = (
        "SELECT instance_id, metric, ts, average FROM rds_metrics ORDER BY instance_id, metric, ts"
    )
    answer = subprocess.run(
        [str(old_cli), "-readonly", "-csv", str(warehouse.snapshot_path), sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    rows = list(csv.DictReader(io.StringIO(answer.stdout)))
    expected = sorted(written, key=lambda p: (p.instance_id, p.metric, p.ts))
    assert [(r["instance_id"], r["metric"], r["ts"], float(r["average"])) for r in rows] == [
        (p.instance_id, p.metric, p.ts.isoformat(sep=" "), p.average) for p in expected
    ]


def test_the_warehouse_is_written_in_the_compatible_storage_format(
    warehouse: WarehouseResource,
) -> None:
    seed(warehouse)
    with duckdb.connect(":memory:") as conn:
        for name, path in (("w", warehouse.database), ("s", warehouse.snapshot_path)):
            conn.execute(f"ATTACH '{path}' AS {name} (READ_ONLY)")
            [(tags,)] = conn.execute(
                "SELECT tags FROM duckdb_databases() WHERE database_name = ?", [name]
            ).fetchall()
            assert tags["storage_version"].startswith(STORAGE_COMPATIBILITY_VERSION)


@pytest.mark.e2e
@pytest.mark.storage_kinds("local_lake", reason="the export for clients too old for the lake")
def test_the_oldest_documented_client_reads_a_range_exported_from_the_lake(
    old_cli: Path, warehouse: WarehouseResource, tmp_path: Path
) -> None:
    written = [p for p in periods() if p.ts < FIRST_HOUR + timedelta(hours=2)]
    seed(warehouse)
    export = tmp_path / "range.duckdb"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("metrics-pipeline")), "extract",
         "--start", f"{FIRST_HOUR:%Y-%m-%dT%H:%M}",
         "--end", f"{FIRST_HOUR + timedelta(hours=2):%Y-%m-%dT%H:%M}", "-o", str(export)],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
             "METRICS_WAREHOUSE": warehouse.lake_catalog,
             "METRICS_LAKE_DATA_PATH": warehouse.lake_data_path},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Wrote {len(written)} row(s) to {export}"
    assert export.stat().st_mode & 0o777 == 0o600
    sql = (
        "SELECT instance_id, metric, ts, average FROM rds_metrics ORDER BY instance_id, metric, ts"
    )
    answer = subprocess.run(
        [str(old_cli), "-readonly", "-csv", str(export), sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    rows = list(csv.DictReader(io.StringIO(answer.stdout)))
    expected = sorted(written, key=lambda p: (p.instance_id, p.metric, p.ts))
    assert [(r["instance_id"], r["metric"], r["ts"], float(r["average"])) for r in rows] == [
        (p.instance_id, p.metric, p.ts.isoformat(sep=" "), p.average) for p in expected
    ]
