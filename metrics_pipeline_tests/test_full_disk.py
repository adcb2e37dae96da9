"""A full disk, for real: the warehouse on a 20 MB tmpfs (a lake on this machine: 40 MB)
mounted in a private mount namespace (root only; CI runs as root). A write the disk cannot
hold fails before it writes, naming the space it needs, and the warehouse and what its readers
see keep their rows."""

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import materialize

from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.dagster_runs import range_tags
from metrics_pipeline.hours import floor_hour, partition_key
from metrics_pipeline.lake_catalog import Lake
from metrics_pipeline.local_aws.fleet import generated_fleet
from metrics_pipeline.local_aws.server import start
from metrics_pipeline.quality.alerts import root_cause
from metrics_pipeline.warehouse.readers import open_reader
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import PROJECT_ROOT, rds_instances, rds_metrics

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None,
        reason="mounting a small filesystem needs root and unshare (CI runs as root)",
    ),
]

# A lake's catalog file and its published copy take some 12 MB from its first writes.
SIZE = {"file": "20m", "local_lake": "40m"}
INSTANCES = 40
DAYS = 6


def rows(source: Path | Lake) -> int:
    """The rows a reader sees: in the DuckDB file or its snapshot, or in the lake."""
    if isinstance(source, Lake):
        with open_reader(source) as conn:
            return conn.execute("SELECT count(*) FROM rds_metrics").fetchone()[0]
    with duckdb.connect(str(source), read_only=True) as conn:
        return conn.execute("SELECT count(*) FROM rds_metrics").fetchone()[0]


def warehouse_on(folder: Path, storage: str) -> tuple[WarehouseResource, Path | Lake, Path | Lake]:
    """The warehouse, and what its writer and its readers see."""
    if storage == "file":
        warehouse = WarehouseResource(database=str(folder / "metrics.duckdb"))
        return warehouse, Path(warehouse.database), warehouse.snapshot_path
    lake = Lake(f"ducklake:{folder / 'metrics.ducklake'}", f"{folder / 'data'}/")
    warehouse = WarehouseResource(
        database=str(folder / "metrics.duckdb"),
        lake_catalog=lake.catalog,
        lake_data_path=lake.data_path,
    )
    return warehouse, lake, lake


def collect_on_a_small_disk(folder: Path, storage: str) -> dict[str, Any]:
    """The child's work, inside the namespace: a small collection that fits, then six days
    of the fleet, which do not."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    now = datetime.now(UTC)
    local = start(generated_fleet(now, INSTANCES, ("us-east-1",)))
    os.environ["AWS_ENDPOINT_URL"] = local.url
    warehouse, written, read = warehouse_on(folder, storage)
    resources = {
        "aws": AwsResource(regions=["us-east-1"], max_requests_per_second=1000),
        "collection": CollectionResource(),
        "warehouse": warehouse,
    }
    hour = floor_hour(now.replace(tzinfo=None)) - timedelta(hours=3)
    assert materialize([rds_instances], resources=resources).success
    small = materialize([rds_metrics], resources=resources, partition_key=partition_key(hour))
    before = (rows(written), rows(read))
    big = materialize(
        [rds_metrics],
        resources=resources,
        tags=range_tags(hour - timedelta(days=DAYS), hour - timedelta(hours=1)),
        raise_on_error=False,
    )
    [failure] = big.get_step_failure_events() or [None]
    local.stop()
    return {
        "small_succeeded": small.success,
        "big_succeeded": big.success,
        "error": root_cause(failure.step_failure_data.error).message if failure else None,
        "rows_before": before,
        "rows_after": (rows(written), rows(read)),
    }


@pytest.mark.parametrize("storage", ["file", "local_lake"])
def test_a_write_the_disk_cannot_hold_fails_first_and_keeps_the_old_rows(
    tmp_path: Path, storage: str
) -> None:
    small = tmp_path / "small"
    small.mkdir()
    result_file = tmp_path / "result.json"
    child = [sys.executable, "-m", "metrics_pipeline_tests.test_full_disk", str(small), storage]
    script = (
        f"mount -t tmpfs -o size={SIZE[storage]} tmpfs {shlex.quote(str(small))} && "
        f"exec {shlex.join(child)} > {shlex.quote(str(result_file))}"
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(result_file.read_text())

    assert result["small_succeeded"] and not result["big_succeeded"]
    assert result["error"].startswith(
        "dagster._core.definitions.events.Failure: Not enough free space for this write next to "
    )
    assert "nothing was written" in result["error"]
    assert result["rows_after"] == result["rows_before"]
    assert result["rows_before"][0] == INSTANCES * 14 * 12  # the small collection's hour


if __name__ == "__main__":
    print(json.dumps(collect_on_a_small_disk(Path(sys.argv[1]), sys.argv[2])))
