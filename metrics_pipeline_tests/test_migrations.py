"""The warehouse's schema version: an older warehouse is backed up and migrated, a newer or a
tampered one is refused with one line before AWS is asked anything."""

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import DagsterEventType, Failure, materialize

from metrics_pipeline.collection.resources import CollectionResource
from metrics_pipeline.collection.store import record_run, upsert_instances
from metrics_pipeline.hours import floor_hour, partition_key, utc_now
from metrics_pipeline.warehouse.migrations import SCHEMA_VERSION, structure_problems
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import (
    METRICS_TABLE,
    RUN_PARTS_TABLE,
    VERSION_TABLE,
    schema_sql,
)
from metrics_pipeline.warehouse.tables import (
    CLUSTER_PLACE,
    CLUSTERS,
    INSTANCE_HISTORY,
    INSTANCES,
    PERFORMANCE_INSIGHTS,
    RUN_PARTS,
    RUNS,
)
from metrics_pipeline_tests.helpers import make_aws, rds_metrics
from metrics_pipeline_tests.moto_fleet import create_instance

ROWS = [
    ("123456789012", "us-east-1", "orders-db", "CPUUtilization", "Percent",
     datetime(2026, 11, 20, 10, 5), 41.5, 40.0, 43.0, 83.0, 2.0),
    ("123456789012", "us-east-1", "orders-db", "CPUUtilization", "Percent",
     datetime(2026, 11, 20, 10, 10), 12.25, 10.0, 15.0, 24.5, 2.0),
]  # fmt: skip


def metric_rows(database: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(database, read_only=True) as conn:
        return conn.execute(
            "SELECT account_id, region, instance_id, metric, unit, ts, average, minimum, "
            f"maximum, sum, sample_count FROM {METRICS_TABLE} ORDER BY ts"
        ).fetchall()


def unversioned_warehouse(path: Path, without: set[str] = frozenset()) -> str:
    """A warehouse as builds before versioning left it: today's tables (less `without`), no
    version table, and two rows of metrics."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as conn:
        conn.execute(schema_sql(keys=True))
        for table in without:
            conn.execute(f"DROP TABLE {table}")
        conn.executemany(
            f"INSERT INTO {METRICS_TABLE} (account_id, region, instance_id, metric, unit, ts, "
            "average, minimum, maximum, sum, sample_count, collected_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(*row, datetime(2026, 11, 20, 11, 0)) for row in ROWS],
        )
    return str(path)


def test_a_version_1_warehouse_gets_the_run_parts_table(tmp_path: Path) -> None:
    """Version 1 had no pipeline_run_parts: version 2 adds it, keeping every row."""
    database = unversioned_warehouse(tmp_path / "metrics.duckdb", without={RUN_PARTS_TABLE})
    with duckdb.connect(database) as conn:
        conn.execute(
            f"CREATE TABLE {VERSION_TABLE} (version INTEGER PRIMARY KEY, "
            "migrated_at TIMESTAMP NOT NULL)"
        )
        conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES (1, TIMESTAMP '2026-11-20 09:00')")
    warehouse = WarehouseResource(database=database)

    warehouse.prepare()

    assert metric_rows(database) == ROWS
    with duckdb.connect(database, read_only=True) as conn:
        versions = conn.execute(f"SELECT version FROM {VERSION_TABLE} ORDER BY 1").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        assert conn.execute(f"SELECT count(*) FROM {RUN_PARTS_TABLE}").fetchall() == [(0,)]
        assert structure_problems(conn) == []
    [backup] = warehouse.backups_path.glob(f"before-schema-v{SCHEMA_VERSION}-from-v1-*.duckdb")
    assert metric_rows(str(backup)) == ROWS


def test_a_new_warehouse_gets_the_current_version(tmp_path: Path) -> None:
    warehouse = WarehouseResource(database=str(tmp_path / "metrics.duckdb"))
    warehouse.prepare()
    with duckdb.connect(warehouse.database, read_only=True) as conn:
        assert conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchall() == [
            (SCHEMA_VERSION,)
        ]
        assert structure_problems(conn) == []
    assert not warehouse.backups_path.exists()  # nothing to back up


def test_a_warehouse_from_before_versioning_is_backed_up_then_migrated(tmp_path: Path) -> None:
    derived = {"rds_metrics_hourly", "rds_rightsizing"}
    database = unversioned_warehouse(tmp_path / "metrics.duckdb", without=derived)
    warehouse = WarehouseResource(database=database)

    warehouse.prepare()

    assert metric_rows(database) == ROWS
    with duckdb.connect(database, read_only=True) as conn:
        versions = conn.execute(f"SELECT version FROM {VERSION_TABLE} ORDER BY 1").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        assert structure_problems(conn) == []  # the derived tables older builds lacked exist
    [backup] = warehouse.backups_path.glob(f"before-schema-v{SCHEMA_VERSION}-from-v0-*.duckdb")
    assert metric_rows(str(backup)) == ROWS
    with duckdb.connect(str(backup), read_only=True) as conn:
        tables = {row[0] for row in conn.execute("SHOW TABLES").fetchall()}
    assert VERSION_TABLE not in tables and not derived & tables

    warehouse.prepare()  # the next writer: nothing to migrate, nothing backed up again
    assert len(list(warehouse.backups_path.iterdir())) == 1


def test_a_newer_warehouse_is_refused(tmp_path: Path) -> None:
    warehouse = WarehouseResource(database=str(tmp_path / "metrics.duckdb"))
    warehouse.prepare()
    with duckdb.connect(warehouse.database) as conn:
        conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES (7, now())")
    with pytest.raises(Failure) as refused:
        warehouse.prepare()
    assert refused.value.description == (
        f"The warehouse {warehouse.database}: the warehouse has schema version 7, newer than "
        f"this build's ({SCHEMA_VERSION}): upgrade metrics_pipeline to write it."
    )
    assert not refused.value.allow_retries


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            "ALTER TABLE pipeline_runs DROP COLUMN cpu_seconds",
            "column pipeline_runs.cpu_seconds is missing",
        ),
        ("ALTER TABLE rds_metrics ADD COLUMN note VARCHAR", "column rds_metrics.note is unknown"),
        (
            "ALTER TABLE rds_metric_fetches ALTER datapoints TYPE VARCHAR",
            "column rds_metric_fetches.datapoints is VARCHAR, expected BIGINT",
        ),
    ],
)
def test_a_changed_column_is_refused_naming_it(tmp_path: Path, tamper: str, message: str) -> None:
    warehouse = WarehouseResource(database=str(tmp_path / "metrics.duckdb"))
    warehouse.prepare()
    with duckdb.connect(warehouse.database) as conn:
        conn.execute(tamper)
    with pytest.raises(Failure) as refused:
        warehouse.prepare()
    assert refused.value.description == (
        f"The warehouse {warehouse.database}: {message}: the warehouse's tables are not the "
        "ones this build writes; restore them (or a backup) before collecting."
    )


@pytest.mark.usefixtures("moto_aws")
def test_a_renamed_table_fails_the_run_before_aws_is_asked_and_strands_nothing(
    tmp_path: Path, get_metric_data_calls: list[dict[str, Any]]
) -> None:
    create_instance("us-east-1", "orders-db")
    database = unversioned_warehouse(tmp_path / "metrics.duckdb")
    with duckdb.connect(database) as conn:
        conn.execute(f"ALTER TABLE {METRICS_TABLE} RENAME TO rds_metrics_v0")
    hour = floor_hour(utc_now()) - timedelta(hours=3)

    result = materialize(
        [rds_metrics],
        partition_key=partition_key(hour),
        resources={
            "aws": make_aws(regions=["us-east-1"]),
            "collection": CollectionResource(),
            "warehouse": WarehouseResource(database=database),
        },
        raise_on_error=False,
    )

    assert not result.success
    [failure] = result.get_step_failure_events()
    assert failure.step_failure_data.error.message.splitlines()[0] == (
        f"dagster._core.definitions.events.Failure: The warehouse {database}: table "
        "rds_metrics is missing (the warehouse has rds_metrics_v0); restore it (or a backup) "
        "before collecting."
    )
    assert not [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert get_metric_data_calls == []
    with duckdb.connect(database, read_only=True) as conn:
        tables = {row[0] for row in conn.execute("SHOW TABLES").fetchall()}
        kept = conn.execute("SELECT count(*) FROM rds_metrics_v0").fetchone()
    assert METRICS_TABLE not in tables  # no new, empty table in its place
    assert kept == (len(ROWS),)


# The rollup tables of schema version 3, made from the raw periods.
VERSION_3_ROLLUPS = """
CREATE TABLE rds_metrics_hourly (hour TIMESTAMP NOT NULL, account_id VARCHAR NOT NULL,
    region VARCHAR NOT NULL, instance_id VARCHAR NOT NULL, metric VARCHAR NOT NULL,
    unit VARCHAR, average DOUBLE, minimum DOUBLE, maximum DOUBLE, p50 DOUBLE, p95 DOUBLE,
    p99 DOUBLE, sample_count DOUBLE, periods INTEGER NOT NULL, completeness DOUBLE NOT NULL,
    computed_at TIMESTAMP NOT NULL);
CREATE TABLE rds_metrics_daily (day TIMESTAMP NOT NULL, account_id VARCHAR NOT NULL,
    region VARCHAR NOT NULL, instance_id VARCHAR NOT NULL, metric VARCHAR NOT NULL,
    unit VARCHAR, average DOUBLE, minimum DOUBLE, maximum DOUBLE, p50 DOUBLE, p95 DOUBLE,
    p99 DOUBLE, sample_count DOUBLE, periods INTEGER NOT NULL, completeness DOUBLE NOT NULL,
    computed_at TIMESTAMP NOT NULL);
"""


def test_a_version_3_warehouse_trades_its_rollups_for_the_hourly_tier(
    warehouse: WarehouseResource,
) -> None:
    """Version 3's rds_metrics_hourly and rds_metrics_daily were rollups of the raw periods:
    version 4 replaces them with the hourly tier (empty until the gap sensor fetches it),
    its fetch log and the daily tier; the raw rows stay."""
    warehouse.prepare()
    with warehouse.connect() as conn:
        for table in ("rds_metrics_daily", "rds_metric_hourly_fetches", "rds_metrics_hourly"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute(VERSION_3_ROLLUPS)
        conn.executemany(
            f"INSERT INTO {METRICS_TABLE} (account_id, region, instance_id, metric, unit, ts, "
            "average, minimum, maximum, sum, sample_count, collected_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, TIMESTAMP '2026-11-20 11:00')",
            ROWS,
        )
        conn.execute(
            "INSERT INTO rds_metrics_hourly VALUES ('2026-11-20 10:00', '123456789012', "
            "'us-east-1', 'orders-db', 'CPUUtilization', 'Percent', 26.9, 10, 43, 26.9, 40, "
            "41, 4, 2, 0.17, '2026-11-20 11:00')"
        )
        conn.execute(f"DELETE FROM {VERSION_TABLE}")
        conn.execute(
            f"INSERT INTO {VERSION_TABLE} VALUES (1, TIMESTAMP '2026-11-01'), "
            "(2, TIMESTAMP '2026-11-02'), (3, TIMESTAMP '2026-11-03')"
        )
        assert structure_problems(conn)  # the old shape is not this build's

    warehouse.prepare()

    with warehouse.connect() as conn:
        assert structure_problems(conn) == []
        [(version,)] = conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchall()
        assert version == SCHEMA_VERSION
        counts = conn.execute(
            f"SELECT (SELECT count(*) FROM {METRICS_TABLE}), "
            "(SELECT count(*) FROM rds_metrics_hourly), (SELECT count(*) FROM rds_metrics_daily)"
        ).fetchall()
        assert counts == [(len(ROWS), 0, 0)]
    if not warehouse.lake_catalog:  # a file is copied first (a lake is its catalog's backups)
        [backup] = warehouse.backups_path.glob(f"before-schema-v{SCHEMA_VERSION}-from-v3-*.duckdb")
        with duckdb.connect(str(backup), read_only=True) as conn:
            assert conn.execute("SELECT periods FROM rds_metrics_hourly").fetchall() == [(2,)]


PI_TABLES = ("rds_pi_load", "rds_pi_load_personal", "rds_pi_statements", "rds_pi_sql",
             "rds_pi_fetches")  # fmt: skip


def test_a_version_4_warehouse_learns_aurora_clusters_and_performance_insights_load(
    warehouse: WarehouseResource,
) -> None:
    """Version 5 adds the instances' cluster, role and Performance Insights settings (unknown
    until the next discovery), their history's cluster and role, and rds_clusters; version 6
    Performance Insights' load tables. The inventory and its history keep their rows."""
    seen = datetime(2026, 11, 20, 10, 0)
    orders = {
        "account_id": "123456789012", "region": "us-east-1", "instance_id": "orders-db",
        "engine": "aurora-postgresql", "instance_class": "db.r6g.large", "tags": {},
        "dbi_resource_id": "db-A",
    }  # fmt: skip
    # Version 4 kept one row of figures per run (without PI's requests), and its parts had no
    # asset.
    runs_v4 = dataclasses.replace(RUNS, columns=RUNS.columns[:-1], primary_key=("run_id",))
    parts_v4 = dataclasses.replace(
        RUN_PARTS,
        columns=RUN_PARTS.columns[:-1],
        primary_key=("run_id", "account_id", "region"),
    )
    warehouse.prepare()
    with warehouse.connect() as conn:
        upsert_instances(conn, [orders], seen)
        keys = not warehouse.lake_catalog
        conn.execute(f"DROP TABLE {RUN_PARTS.name}")
        conn.execute(f"DROP TABLE {RUNS.name}")
        conn.execute(runs_v4.create_sql(keys=keys) + parts_v4.create_sql(keys=keys))
        conn.execute(
            f"INSERT INTO {RUNS.name} (run_id, asset, window_start, window_end, finished_at) "
            "VALUES ('r1', 'rds_metrics_hourly', $t, $t, $t)",
            {"t": seen},
        )
        conn.execute(
            f"INSERT INTO {RUN_PARTS.name} VALUES "
            "('r1', '123456789012', 'us-east-1', 'collected', 1, 1, 24, 216, 1, 0, NULL)"
        )
        conn.execute(f"DROP TABLE {CLUSTERS.name}")
        for name in PI_TABLES:
            conn.execute(f"DROP TABLE {name}")  # version 6's
        for table, columns in (
            (INSTANCES, (*CLUSTER_PLACE, *PERFORMANCE_INSIGHTS)),
            (INSTANCE_HISTORY, CLUSTER_PLACE),
        ):
            for column in columns:
                conn.execute(f"ALTER TABLE {table.name} DROP COLUMN {column.name}")
        conn.execute(f"DELETE FROM {VERSION_TABLE}")
        conn.execute(
            f"INSERT INTO {VERSION_TABLE} SELECT v, TIMESTAMP '2026-11-01' FROM range(1, 5) t(v)"
        )
        assert structure_problems(conn)

    warehouse.prepare()

    with warehouse.connect() as conn:
        assert structure_problems(conn) == []
        [(version,)] = conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchall()
        assert version == SCHEMA_VERSION == 6
        for name in PI_TABLES:
            assert conn.execute(f"SELECT count(*) FROM {name}").fetchall() == [(0,)]
        assert conn.execute(
            "SELECT instance_id, dbi_resource_id, cluster_id, cluster_role, "
            "performance_insights_enabled FROM rds_instances"
        ).fetchall() == [("orders-db", "db-A", None, None, None)]
        assert conn.execute("SELECT count(*) FROM rds_clusters").fetchall() == [(0,)]
        # The run's parts name its asset; the same run may now record a second asset.
        assert conn.execute(
            f"SELECT run_id, asset, rows_written FROM {RUN_PARTS.name}"
        ).fetchall() == [("r1", "rds_metrics_hourly", 24)]
        record_run(
            conn,
            {"run_id": "r1", "asset": "rds_cluster_metrics", "window_start": seen,
             "window_end": seen, "finished_at": seen},
        )  # fmt: skip
        assert conn.execute(f"SELECT asset FROM {RUNS.name} ORDER BY 1").fetchall() == [
            ("rds_cluster_metrics",),
            ("rds_metrics_hourly",),
        ]
        # The next discovery says where it stands: a new version of the instance.
        later = seen + timedelta(hours=1)
        upsert_instances(
            conn,
            [{**orders, "cluster_id": "shop-aurora", "cluster_role": "writer"}],
            later,
            clusters=[
                {"account_id": "123456789012", "region": "us-east-1",
                 "cluster_id": "shop-aurora", "writer_instance_id": "orders-db", "tags": {}}
            ],
        )  # fmt: skip
        assert conn.execute(
            "SELECT valid_from, cluster_id, cluster_role FROM rds_instance_history ORDER BY 1"
        ).fetchall() == [(seen, None, None), (later, "shop-aurora", "writer")]
        assert conn.execute(
            "SELECT cluster_id, writer_instance_id, first_seen FROM rds_clusters"
        ).fetchall() == [("shop-aurora", "orders-db", later)]
    if not warehouse.lake_catalog:
        [backup] = warehouse.backups_path.glob("before-schema-v6-from-v4-*.duckdb")
        with duckdb.connect(str(backup), read_only=True) as conn:
            assert "cluster_id" not in {
                row[0] for row in conn.execute("DESCRIBE rds_instances").fetchall()
            }
