"""A lake on this machine (a DuckDB catalog file and a data folder): writers in several
processes take turns on the catalog, each waiting for the file as the DuckDB file's writers
do; readers open the copy of the catalog each writer publishes, so they never wait for a
writer nor block one, and see whole writes only."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import Failure

from metrics_pipeline.settings import ConfigError, StorageSettings, settings_for, snapshot_path_for
from metrics_pipeline.warehouse.readers import SnapshotMissingError, open_reader
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.known_data import seed
from metrics_pipeline_tests.test_cli import CLI

pytestmark = pytest.mark.storage_kinds("local_lake", reason="what only a lake on this machine has")

ROWS = 2_000
GENERATIONS = 8

# One writer process: GENERATIONS times, in one transaction, replaces its own instance's rows
# with ROWS rows carrying the generation number.
_WRITER = f"""
import sys
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.known_data import seed
from metrics_pipeline_tests.test_cli import CLI

warehouse = WarehouseResource(
    database=sys.argv[1], lake_catalog=sys.argv[2], lake_data_path=sys.argv[3],
    lock_timeout_seconds=120,
)
instance = sys.argv[4]
for generation in range(1, {GENERATIONS} + 1):
    with warehouse.connect() as conn:
        conn.begin()
        conn.execute("DELETE FROM rds_metrics WHERE instance_id = ?", [instance])
        conn.execute(
            '''
            INSERT INTO rds_metrics (ts, account_id, region, instance_id, metric, average,
                                     collected_at)
            SELECT TIMESTAMP '2026-01-01' + INTERVAL 1 MINUTE * p, '1', 'us-east-1', ?,
                   'CPUUtilization', ?, now()
            FROM range({ROWS}) AS t(p)
            ''',
            [instance, generation],
        )
        conn.commit()
    print(generation, flush=True)
"""


# Holds the writer's connection (and with it the catalog) for a minute.
_HOLDER = """
import sys, time
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.known_data import seed
from metrics_pipeline_tests.test_cli import CLI

warehouse = WarehouseResource(
    database=sys.argv[1], lake_catalog=sys.argv[2], lake_data_path=sys.argv[3]
)
with warehouse.connect():
    print("held", flush=True)
    time.sleep(60)
"""


def writer(
    warehouse: WarehouseResource, instance: str, script: str = _WRITER
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-c", script, warehouse.database, warehouse.lake_catalog,
            warehouse.lake_data_path, instance,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.mark.e2e
def test_writers_take_turns_and_readers_see_whole_writes_meanwhile(
    warehouse: WarehouseResource,
) -> None:
    with pytest.raises(SnapshotMissingError, match="no warehouse tables yet"), warehouse.reader():
        pass
    warehouse.prepare()
    writers = [writer(warehouse, name) for name in ("db-a", "db-b", "db-c")]
    seen: set[tuple[str, int]] = set()
    while any(process.poll() is None for process in writers):
        with warehouse.reader() as conn:
            for instance, rows, generations in conn.execute(
                "SELECT instance_id, count(*), count(DISTINCT average) FROM rds_metrics GROUP BY 1"
            ).fetchall():
                assert (rows, generations) == (ROWS, 1), instance  # never half of a write
            seen |= {
                (instance, int(generation))
                for instance, generation in conn.execute(
                    "SELECT DISTINCT instance_id, average FROM rds_metrics"
                ).fetchall()
            }
    for process in writers:
        out, err = process.communicate()
        assert process.returncode == 0, err[-3000:]
        assert out.split() == [str(n) for n in range(1, GENERATIONS + 1)]
    with warehouse.reader() as conn:
        final = conn.execute(
            "SELECT instance_id, count(*), min(average), max(average) FROM rds_metrics "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert final == [(name, ROWS, GENERATIONS, GENERATIONS) for name in ("db-a", "db-b", "db-c")]
    assert len(seen) > 3  # the readers read while the writers wrote


def test_a_reader_holding_the_catalog_copy_blocks_no_writer(warehouse: WarehouseResource) -> None:
    warehouse.prepare()
    with warehouse.reader() as held:
        held.execute("SELECT count(*) FROM rds_metrics").fetchall()
        with warehouse.connect() as conn:
            conn.execute(
                "INSERT INTO rds_metrics (ts, account_id, region, instance_id, metric, average, "
                "collected_at) VALUES (TIMESTAMP '2026-01-01', '1', 'us-east-1', 'db-x', 'm', "
                "1.5, now())"
            )
        assert held.execute("SELECT count(*) FROM rds_metrics").fetchall() == [(0,)]
        with warehouse.reader() as fresh:
            assert fresh.execute("SELECT average FROM rds_metrics").fetchall() == [(1.5,)]


@pytest.mark.e2e
def test_a_writer_waits_for_the_catalog_then_fails_naming_the_setting(
    warehouse: WarehouseResource,
) -> None:
    warehouse.prepare()
    holder = writer(warehouse, "", _HOLDER)
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        impatient = warehouse.model_copy(update={"lock_timeout_seconds": 0.0})
        with pytest.raises(Failure) as failed, impatient.connect():
            pass
    finally:
        holder.kill()
        holder.wait()
    catalog = warehouse.lake.catalog_file if warehouse.lake else None
    assert failed.value.description is not None
    assert failed.value.description.startswith(
        f"The warehouse {catalog} is locked by another process and was not released within "
        "0 s (METRICS_LOCK_TIMEOUT_SECONDS); nothing was written."
    )
    with warehouse.connect():  # the killed writer left no lock behind
        pass


def test_the_catalog_copy_is_republished_after_each_write(warehouse: WarehouseResource) -> None:
    assert warehouse.lake and warehouse.lake.catalog_file
    copy = snapshot_path_for(warehouse.lake.catalog_file)
    warehouse.prepare()
    first = copy.stat().st_mtime_ns, copy.stat().st_ino
    with warehouse.connect() as conn:
        conn.execute("DELETE FROM rds_metrics")
    assert (copy.stat().st_mtime_ns, copy.stat().st_ino) != first
    assert oct(copy.stat().st_mode & 0o777) == oct(0o600)
    assert not list(copy.parent.glob(".*.partial"))


@pytest.mark.parametrize(
    ("catalog", "message"),
    [
        pytest.param(
            "ducklake:sqlite:metrics.sqlite",
            "METRICS_WAREHOUSE: a DuckLake catalog in sqlite is not supported",
            id="sqlite",
        ),
        pytest.param(
            "ducklake:mysql:db=lake",
            "METRICS_WAREHOUSE: a DuckLake catalog in mysql is not supported",
            id="mysql",
        ),
        pytest.param(
            "duckdb:metrics.ducklake",
            "METRICS_WAREHOUSE: 'duckdb:metrics.ducklake' is not a DuckLake catalog",
            id="no_prefix",
        ),
    ],
)
def test_catalogs_other_than_a_file_or_postgresql_are_refused(catalog: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        StorageSettings.from_env(
            {"METRICS_WAREHOUSE": catalog, "METRICS_LAKE_DATA_PATH": "/tmp/data"}
        )
    assert str(refused.value).startswith(message)
    assert "'ducklake:<path of a DuckDB catalog file>'" in str(refused.value)


def test_a_relative_catalog_file_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = StorageSettings.from_env(
        {
            "METRICS_WAREHOUSE": "ducklake:data/metrics.ducklake",
            "METRICS_LAKE_DATA_PATH": "data/lake",
        }
    )
    assert storage.lake is not None
    assert storage.lake.catalog_file == tmp_path / "data" / "metrics.ducklake"
    assert storage.lake.data_path == f"{tmp_path / 'data' / 'lake'}/"
    with (
        pytest.raises(SnapshotMissingError, match="no warehouse tables yet"),
        open_reader(storage.read_source),
    ):
        pass


@pytest.mark.e2e
def test_an_earlier_duckdb_file_moves_into_the_default_lake(tmp_path: Path) -> None:
    """An earlier version's warehouse, data/metrics.duckdb, under a deployment that sets
    nothing: a run refuses to start a new lake beside it; the documented command moves every
    row (counts and checksums compared), after which runs write the lake."""
    earlier = WarehouseResource(database=str(tmp_path / "data" / "metrics.duckdb"))
    stored = seed(earlier)
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_")}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        for name in ("METRICS_WAREHOUSE", "METRICS_LAKE_DATA_PATH", "METRICS_DUCKDB_PATH"):
            patch.delenv(name, raising=False)
        settings = StorageSettings.from_env()
        default = WarehouseResource(
            database=str(settings.duckdb_path), **settings_for(WarehouseResource, settings)
        )
    assert default.lake and default.lake.catalog_file == tmp_path / "data" / "metrics.ducklake"
    with pytest.raises(Failure) as refused:
        default.prepare()
    assert refused.value.description == (
        f"The DuckDB warehouse {earlier.database} holds the history of an earlier version, and "
        f"the lake {default.lake.label} is new: move the history first with `metrics-pipeline "
        f"migrate-to-lake --warehouse {earlier.database}` (scripts/start.sh does it itself), "
        "or set METRICS_DUCKDB_PATH to keep writing the file. Nothing was written."
    )
    assert not default.lake.catalog_file.exists()

    moved = subprocess.run(
        [CLI, "migrate-to-lake", "--warehouse", "data/metrics.duckdb"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.startswith("Moved ") and "row count and checksum match" in moved.stdout
    default.prepare()  # the lake exists now: runs go on
    with default.reader() as conn:
        got = conn.execute(
            "SELECT instance_id, metric, ts, average FROM rds_metrics ORDER BY ALL"
        ).fetchall()
    assert got == sorted((p.instance_id, p.metric, p.ts, p.average) for p in stored)
