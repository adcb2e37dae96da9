"""Backups: taken while a writer holds the warehouse, restored round-trip, pruned by age."""

import json
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from metrics_pipeline.maintenance.backups import (
    MANIFEST,
    BackupError,
    create_backup,
    find_backup,
    list_backups,
    prune_backups,
    restore_backup,
)
from metrics_pipeline.maintenance.jobs import backup_job
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import hold_write_lock
from metrics_pipeline_tests.known_data import periods, seed

TABLES = ("rds_instances", "rds_metrics")
NOW = datetime(2026, 11, 26, 0, 40)


def contents(database: str) -> dict[str, pd.DataFrame]:
    with duckdb.connect(database, read_only=True) as conn:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY ALL").df() for table in TABLES}


def test_backup_while_writing_then_restore_round_trip(warehouse: WarehouseResource) -> None:
    seed(warehouse)
    original = contents(warehouse.database)
    folder = Path(warehouse.database).parent / "backups"

    writer = hold_write_lock(warehouse.database, 60)  # a collection run in progress
    try:
        backup = create_backup(warehouse.snapshot_path, folder, NOW)
    finally:
        writer.kill()
        writer.wait()
    assert backup.rows["rds_metrics"] == len(periods())
    assert backup.rows["rds_instances"] == 2
    assert {p.name for p in backup.path.iterdir()} >= {
        "schema.sql",
        "load.sql",
        MANIFEST,
        "rds_metrics.parquet",
        "rds_instances.parquet",
    }
    assert [b.name for b in list_backups(folder)] == ["20261126T004000Z"]

    with warehouse.connect() as conn:
        conn.execute("DELETE FROM rds_metrics WHERE instance_id = 'orders-db'")
        conn.execute("UPDATE rds_metrics SET average = -1")
        conn.execute("UPDATE rds_instances SET status = 'deleted'")
    assert not contents(warehouse.database)["rds_metrics"].equals(original["rds_metrics"])

    with warehouse.connect() as conn:
        restored = restore_backup(conn, find_backup(folder, backup.name))
    assert restored["rds_metrics"] == len(periods())
    after = contents(warehouse.database)
    for table in TABLES:
        pd.testing.assert_frame_equal(after[table], original[table])
    with warehouse.read_snapshot() as conn:  # readers see the restored rows too
        assert conn.execute("SELECT count(*) FROM rds_metrics").fetchone() == (len(periods()),)


def test_a_restore_that_cannot_complete_changes_nothing(warehouse: WarehouseResource) -> None:
    seed(warehouse)
    folder = Path(warehouse.database).parent / "backups"
    backup = create_backup(warehouse.snapshot_path, folder, NOW)
    manifest = json.loads((backup.path / MANIFEST).read_text())
    manifest["rows"]["rds_metrics"] += 1  # the files no longer match what was backed up
    (backup.path / MANIFEST).write_text(json.dumps(manifest))
    with warehouse.connect() as conn:
        conn.execute("DELETE FROM rds_metrics WHERE instance_id = 'users-db'")
    before = contents(warehouse.database)

    with (
        pytest.raises(BackupError, match=r"rds_metrics has \d+ row\(s\), its manifest says"),
        warehouse.connect() as conn,
    ):
        restore_backup(conn, find_backup(folder, backup.name))
    for table in TABLES:
        pd.testing.assert_frame_equal(contents(warehouse.database)[table], before[table])
    with pytest.raises(BackupError, match=r"^backup: no backup named 'nope'.*20261126T004000Z"):
        find_backup(folder, "nope")


def test_prune_keeps_the_last_days_and_always_the_newest(warehouse: WarehouseResource) -> None:
    seed(warehouse)
    folder = Path(warehouse.database).parent / "backups"
    for days_ago in (10, 8, 6, 1):
        create_backup(warehouse.snapshot_path, folder, NOW - timedelta(days=days_ago))
    deleted = prune_backups(folder, keep_days=7, now=NOW)
    assert sorted(b.name for b in deleted) == ["20261116T004000Z", "20261118T004000Z"]
    assert [b.name for b in list_backups(folder)] == ["20261125T004000Z", "20261120T004000Z"]
    assert [b.name for b in prune_backups(folder, keep_days=7, now=NOW + timedelta(days=30))] == [
        "20261120T004000Z"
    ]
    assert [b.name for b in list_backups(folder)] == ["20261125T004000Z"]


def test_backup_job_reports_what_it_saved(warehouse: WarehouseResource) -> None:
    seed(warehouse)
    result = backup_job.execute_in_process(resources={"warehouse": warehouse})
    assert result.success
    name = result.output_for_node("back_up_warehouse")
    [backup] = list_backups(warehouse.backups_path)
    assert backup.name == name
    [output] = [event for event in result.all_node_events if event.is_successful_output]
    metadata = output.step_output_data.metadata
    assert metadata["rows_rds_metrics"].value == len(periods())
    assert metadata["rows_rds_instances"].value == 2
    assert metadata["kept_backups"].value == 1


def test_only_complete_backups_are_listed_and_pruned(warehouse: WarehouseResource) -> None:
    seed(warehouse)
    folder = Path(warehouse.database).parent / "backups"
    old = create_backup(warehouse.snapshot_path, folder, NOW - timedelta(days=20))
    create_backup(warehouse.snapshot_path, folder, NOW)
    (old.path / MANIFEST).write_text("{}")  # damaged: no longer a backup
    shared = folder / "notes"  # someone else's folder, with a manifest of its own
    shared.mkdir()
    (shared / MANIFEST).write_text(json.dumps({"created_at": "2020-01-01T00:00", "rows": {}}))
    assert [b.name for b in list_backups(folder)] == ["20261126T004000Z"]
    assert prune_backups(folder, keep_days=1, now=NOW + timedelta(days=30)) == []
    assert shared.exists() and old.path.exists()


def test_a_backup_restores_without_this_package(warehouse: WarehouseResource) -> None:
    seed(warehouse)
    backup = create_backup(warehouse.snapshot_path, warehouse.backups_path, NOW)
    assert str(backup.path / "rds_metrics.parquet") in (backup.path / "load.sql").read_text()
    with duckdb.connect(":memory:") as conn:
        conn.execute(f"IMPORT DATABASE '{backup.path}'")
        assert conn.execute("SELECT count(*) FROM rds_metrics").fetchone() == (len(periods()),)


def test_a_table_added_after_the_backup_is_emptied_by_the_restore(
    warehouse: WarehouseResource,
) -> None:
    seed(warehouse)
    backup = create_backup(warehouse.snapshot_path, warehouse.backups_path, NOW)
    manifest = json.loads((backup.path / MANIFEST).read_text())
    del manifest["rows"]["pipeline_runs"]  # as if pipeline_runs came with a later version
    (backup.path / MANIFEST).write_text(json.dumps(manifest))
    with warehouse.connect() as conn:
        conn.execute(
            "INSERT INTO pipeline_runs (run_id, asset, window_start, window_end, finished_at) "
            "VALUES ('after-the-backup', 'rds_metrics', now(), now(), now())"
        )
        restored = restore_backup(conn, find_backup(warehouse.backups_path, backup.name))
        assert "pipeline_runs" not in restored
        assert conn.execute("SELECT count(*) FROM pipeline_runs").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM rds_metrics").fetchone() == (len(periods()),)
