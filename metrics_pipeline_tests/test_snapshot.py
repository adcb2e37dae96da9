"""Readers and the writer at the same time: readers see whole writes only, and never block."""

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import materialize

from metrics_pipeline.hours import partition_key
from metrics_pipeline.settings import snapshot_path_for
from metrics_pipeline.warehouse.readers import SnapshotMissingError, open_reader
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import ensure_schema
from metrics_pipeline.warehouse.snapshot import publish_snapshot
from metrics_pipeline_tests.helpers import make_aws, make_collection, rds_instances, rds_metrics
from metrics_pipeline_tests.moto_fleet import TWO_DAYS_AGO, create_instance, put_metrics

pytestmark = pytest.mark.storage_kinds("duckdb", reason="the DuckDB file's snapshot for readers")

INSTANCES = 5
METRICS = 14
PERIODS = 12
ROWS_PER_HOUR = INSTANCES * METRICS * PERIODS
HOURS = 3
GENERATIONS = 25

# Rewrites the same three hours again and again, each time in one transaction with every row
# carrying the generation number, through the connection every asset writes with.
_WRITER = f"""
import sys
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import ensure_schema

warehouse = WarehouseResource(database=sys.argv[1])
for generation in range(1, {GENERATIONS} + 1):
    with warehouse.connect() as conn:
        ensure_schema(conn)
        conn.begin()
        conn.execute("DELETE FROM rds_metrics")
        conn.execute(
            '''
            INSERT INTO rds_metrics (ts, account_id, region, instance_id, metric, average,
                                     collected_at)
            SELECT TIMESTAMP '2026-01-01' + INTERVAL 5 MINUTE * p, '1', 'us-east-1',
                   'db-' || i, 'metric-' || m, ?, now()
            FROM range({HOURS * PERIODS}) AS t(p), range({INSTANCES}) AS u(i),
                 range({METRICS}) AS v(m)
            ''',
            [generation],
        )
        conn.commit()
    print(generation, flush=True)
"""


@pytest.mark.e2e
def test_readers_see_whole_writes_only_and_a_held_reader_blocks_nothing(tmp_path: Path) -> None:
    warehouse = WarehouseResource(database=str(tmp_path / "metrics.duckdb"))
    with (
        pytest.raises(SnapshotMissingError, match="No warehouse snapshot"),
        open_reader(warehouse.snapshot_path),
    ):
        pass

    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, warehouse.database], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "1"
    # An analyst's notebook: one connection held open for the whole test.
    notebook = duckdb.connect(str(warehouse.snapshot_path), read_only=True)
    [pinned] = notebook.execute("SELECT DISTINCT average FROM rds_metrics").fetchall()

    seen: list[int] = []
    while writer.poll() is None:
        with open_reader(warehouse.snapshot_path) as conn:
            rows, generations, low = conn.execute(
                "SELECT count(*), count(DISTINCT average), min(average) FROM rds_metrics"
            ).fetchone()
        assert rows == HOURS * ROWS_PER_HOUR
        assert generations == 1  # never a mix of two writes
        seen.append(int(low))
    assert writer.wait() == 0
    assert seen == sorted(seen)
    assert len(set(seen)) > 1, "the reader never overlapped a write; the test proved nothing"

    assert notebook.execute("SELECT DISTINCT average FROM rds_metrics").fetchall() == [pinned]
    notebook.close()
    with open_reader(warehouse.snapshot_path) as conn:
        assert conn.execute("SELECT DISTINCT average FROM rds_metrics").fetchall() == [
            (GENERATIONS,)
        ]


_NOTEBOOK = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1], read_only=True)
count = lambda: conn.execute("SELECT count(*) FROM rds_metrics").fetchone()[0]
print(count(), flush=True)
sys.stdin.readline()
print(count(), flush=True)
"""


@pytest.mark.e2e
@pytest.mark.usefixtures("moto_aws")
def test_collection_runs_while_a_reader_holds_the_snapshot(tmp_path: Path) -> None:
    aws = make_aws(regions=["us-east-1"])
    collection = make_collection(metrics=["CPUUtilization"])
    warehouse = WarehouseResource(database=str(tmp_path / "metrics.duckdb"), lock_timeout_seconds=1)
    resources = {"aws": aws, "collection": collection, "warehouse": warehouse}
    hour = TWO_DAYS_AGO
    create_instance("us-east-1", "reader-db")
    put_metrics("us-east-1", ["reader-db"], ["CPUUtilization"], hour, hour + timedelta(hours=1))
    assert materialize([rds_instances], resources=resources).success

    notebook = subprocess.Popen(
        [sys.executable, "-c", _NOTEBOOK, str(warehouse.snapshot_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert notebook.stdin is not None and notebook.stdout is not None
    try:
        assert notebook.stdout.readline().strip() == "0"
        result = materialize([rds_metrics], partition_key=partition_key(hour), resources=resources)
        assert result.success  # with a 1 s lock budget: the reader never held the warehouse
        notebook.stdin.write("\n")
        notebook.stdin.flush()
        assert notebook.stdout.readline().strip() == "0"  # its snapshot did not move under it
    finally:
        notebook.kill()
        notebook.wait()
    with warehouse.reader() as conn:
        assert conn.execute("SELECT count(*) FROM rds_metrics").fetchone() == (12,)


_TRY_TO_WRITE = """
import sys, duckdb
try:
    duckdb.connect(sys.argv[1]).close()
    print("opened")
except duckdb.IOException as error:
    print("locked" if "lock" in str(error).lower() else error)
"""


@pytest.mark.e2e
def test_the_writer_keeps_its_lock_through_a_publish(tmp_path: Path) -> None:
    database = tmp_path / "metrics.duckdb"
    conn = duckdb.connect(str(database))
    try:
        ensure_schema(conn)  # as every writer connection does
        publish_snapshot(conn, database, snapshot_path_for(database))
        second = subprocess.run(
            [sys.executable, "-c", _TRY_TO_WRITE, str(database)],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        conn.close()
    assert second.stdout.strip() == "locked"
    with open_reader(snapshot_path_for(database)) as reader:
        tables = {row[0] for row in reader.execute("SHOW TABLES").fetchall()}
    assert {"rds_instances", "rds_metrics", "pipeline_runs"} <= tables


def test_dagster_duckdbs_get_connection_is_the_writer_and_publishes(
    warehouse: WarehouseResource,
) -> None:
    Path(warehouse.database).parent.mkdir(parents=True, exist_ok=True)
    with warehouse.get_connection() as conn:
        conn.execute(
            "INSERT INTO pipeline_runs (run_id, asset, window_start, window_end, finished_at) "
            "VALUES ('run-1', 'rds_metrics', TIMESTAMP '2026-11-26 08:00', "
            "TIMESTAMP '2026-11-26 09:00', TIMESTAMP '2026-11-26 09:01')"
        )
    with warehouse.reader() as reader:
        assert reader.execute("SELECT run_id FROM pipeline_runs").fetchall() == [("run-1",)]


def test_rows_written_but_not_published_are_reported_as_written(
    tmp_path: Path,
) -> None:
    """A snapshot that cannot be published (here its path is taken by a folder; on a full disk
    the copy fails) does not undo the committed write: the run succeeds and says so, and the
    next write publishes a snapshot with every row."""
    warehouse = WarehouseResource(database=str(tmp_path / "metrics.duckdb"))
    with warehouse.connect() as conn:
        conn.execute(
            "INSERT INTO rds_instances (account_id, region, instance_id, first_seen, last_seen) "
            "VALUES ('1', 'us-east-1', 'a', now(), now())"
        )
    assert warehouse.unpublished is None
    warehouse.snapshot_path.unlink()
    warehouse.snapshot_path.mkdir()
    with warehouse.connect() as conn:
        conn.execute(
            "INSERT INTO rds_instances (account_id, region, instance_id, first_seen, last_seen) "
            "VALUES ('1', 'us-east-1', 'b', now(), now())"
        )
    assert warehouse.unpublished is not None
    assert warehouse.unpublished.startswith("IsADirectoryError")

    warehouse.snapshot_path.rmdir()
    with warehouse.connect():
        pass
    assert warehouse.unpublished is None
    with warehouse.reader() as conn:
        assert conn.execute("SELECT count(*) FROM rds_instances").fetchone() == (2,)
