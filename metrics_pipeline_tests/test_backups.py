"""Backups: taken while a writer holds the warehouse, restored round-trip, pruned by age."""

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
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
from metrics_pipeline_tests.helpers import generate_metrics, hold_write_lock, peak_rss_mib
from metrics_pipeline_tests.known_data import periods, seed

pytestmark = pytest.mark.storage_kinds(
    "duckdb", reason="the DuckDB file's backups, copies of its snapshot file"
)

TABLES = ("rds_instances", "rds_metrics")
NOW = datetime(2026, 11, 26, 0, 40)
CLI = str(Path(sys.executable).with_name("metrics-pipeline"))


def contents(database: str) -> dict[str, pd.DataFrame]:
    with duckdb.connect(database, read_only=True) as conn:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY ALL").df() for table in TABLES}


@pytest.mark.e2e
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
    with warehouse.reader() as conn:  # readers see the restored rows too
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


def tamper_and_restore(warehouse: WarehouseResource, tamper: Callable[[Path], None]) -> str:
    """Backs up, tampers with the backup, then restores it: the refusal's message, having
    checked that the warehouse was left as it was."""
    seed(warehouse)
    backup = create_backup(warehouse.snapshot_path, warehouse.backups_path, NOW)
    tamper(backup.path)
    with warehouse.connect() as conn:
        conn.execute("DELETE FROM rds_metrics WHERE instance_id = 'users-db'")
    before = contents(warehouse.database)
    with pytest.raises(BackupError) as refused, warehouse.connect() as conn:
        restore_backup(conn, find_backup(warehouse.backups_path, backup.name))
    for table in TABLES:
        pd.testing.assert_frame_equal(contents(warehouse.database)[table], before[table])
    return str(refused.value)


def rewrite_metrics_file(path: Path, select: str) -> None:
    """rds_metrics.parquet replaced by `select` over its own rows (same row count)."""
    file = path / "rds_metrics.parquet"
    with duckdb.connect(":memory:") as conn:
        conn.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{file}')")
        conn.execute(f"COPY ({select}) TO '{file}' (FORMAT parquet)")


def edit_manifest(path: Path, edit: Callable[[dict], None]) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    edit(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


def test_a_table_left_out_of_the_manifest_is_refused(warehouse: WarehouseResource) -> None:
    message = tamper_and_restore(
        warehouse, lambda path: edit_manifest(path, lambda m: m["rows"].pop("rds_metrics"))
    )
    assert message == (
        "backup 20261126T004000Z: its manifest lists no rds_metrics; nothing was restored."
    )


def test_a_file_without_some_columns_is_refused(warehouse: WarehouseResource) -> None:
    message = tamper_and_restore(
        warehouse,
        lambda path: rewrite_metrics_file(path, "SELECT * EXCLUDE (average, sum) FROM t"),
    )
    assert message == (
        "backup 20261126T004000Z: rds_metrics.parquet does not match its SHA-256 in the "
        "manifest; nothing was restored."
    )


def test_changed_values_with_the_same_row_count_are_refused(
    warehouse: WarehouseResource,
) -> None:
    message = tamper_and_restore(
        warehouse,
        lambda path: rewrite_metrics_file(path, "SELECT * REPLACE (average * 2 AS average) FROM t"),
    )
    assert "rds_metrics.parquet does not match its SHA-256" in message


def test_a_file_whose_checksum_was_forged_still_needs_its_columns(
    warehouse: WarehouseResource,
) -> None:
    def forge(path: Path) -> None:
        rewrite_metrics_file(path, "SELECT * EXCLUDE (sum) FROM t")
        digest = hashlib.sha256((path / "rds_metrics.parquet").read_bytes()).hexdigest()
        edit_manifest(path, lambda m: m["sha256"].update({"rds_metrics.parquet": digest}))

    message = tamper_and_restore(warehouse, forge)
    assert message.startswith("backup 20261126T004000Z: rds_metrics.parquet has the columns ")
    assert "'sum'" not in message.split("its manifest says")[0]
    assert message.endswith("; nothing was restored.")


def test_a_backup_from_before_checksums_needs_an_explicit_unverified_restore(
    warehouse: WarehouseResource,
) -> None:
    def unverified(path: Path) -> None:
        edit_manifest(path, lambda m: (m.pop("sha256"), m.pop("columns")))

    message = tamper_and_restore(warehouse, unverified)
    assert message == (
        "backup 20261126T004000Z: it was made before backups carried checksums and cannot be "
        "verified (restore it with --unverified to accept that); nothing was restored."
    )
    with warehouse.connect() as conn:
        backup = find_backup(warehouse.backups_path, "20261126T004000Z")
        restored = restore_backup(conn, backup, verify=False)
    assert restored["rds_metrics"] == len(periods())


def test_manifests_with_an_offset_or_unreadable_are_handled(warehouse: WarehouseResource) -> None:
    seed(warehouse)
    folder = warehouse.backups_path
    offset = create_backup(warehouse.snapshot_path, folder, NOW)
    edit_manifest(offset.path, lambda m: m.update(created_at="2026-11-26T05:40:00+05:00"))
    broken = create_backup(warehouse.snapshot_path, folder, NOW - timedelta(days=30))
    (broken.path / MANIFEST).write_text("{not json")

    skipped: list[str] = []
    [listed] = list_backups(folder, skipped)
    assert (listed.name, listed.created_at) == (offset.name, NOW)  # 05:40+05:00 is 00:40 UTC
    assert len(skipped) == 1 and skipped[0].startswith(f"{broken.name}: unreadable manifest.json")
    assert prune_backups(folder, keep_days=1, now=NOW + timedelta(days=3)) == []
    with pytest.raises(BackupError, match=rf"^backup {broken.name}: unreadable manifest.json"):
        find_backup(folder, broken.name)
    with warehouse.connect() as conn:
        assert restore_backup(conn, find_backup(folder, offset.name))["rds_metrics"] == len(
            periods()
        )


def test_two_backups_in_the_same_second_get_two_names(warehouse: WarehouseResource) -> None:
    seed(warehouse)
    first = create_backup(warehouse.snapshot_path, warehouse.backups_path, NOW)
    second = create_backup(warehouse.snapshot_path, warehouse.backups_path, NOW)
    assert (first.name, second.name) == ("20261126T004000Z", "20261126T004000Z-2")
    assert [b.name for b in list_backups(warehouse.backups_path)] == [first.name, second.name]
    assert str(second.path / "rds_metrics.parquet") in (second.path / "load.sql").read_text()


@pytest.mark.e2e
def test_a_million_rows_restore_within_the_memory_limit(
    warehouse: WarehouseResource,
) -> None:
    """A restore inserts in chunks that fit METRICS_DUCKDB_MEMORY_LIMIT: a million rows (which
    once failed DuckDB's 367 MiB default, exit code 2) restore with the limit at 256 MiB, and
    the command's whole process stays within the limit plus what Python, Dagster and DuckDB
    take before any row (about 250 MiB)."""
    rows = 1_000_000
    generate_metrics(warehouse, rows)
    backup = create_backup(warehouse.snapshot_path, warehouse.backups_path, NOW)
    with warehouse.connect() as conn:
        conn.execute("DELETE FROM rds_metrics WHERE instance_id = 'db-7'")
        before = conn.execute("SELECT count(*), sum(average) FROM rds_metrics").fetchone()
    env = {
        **os.environ,
        "METRICS_DUCKDB_PATH": warehouse.database,
        "METRICS_DUCKDB_MEMORY_LIMIT": "256MiB",
    }
    env.pop("DAGSTER_HOME", None)

    code, peak, stderr = peak_rss_mib([CLI, "backup", "restore", backup.name, "--yes"], env)

    print(f"restore of {rows:,} rows: peak {peak:.0f} MiB")
    assert (code, stderr) == (0, "")
    with duckdb.connect(warehouse.database, read_only=True) as conn:
        restored = conn.execute("SELECT count(*), sum(average) FROM rds_metrics").fetchone()
        tables = [row[0] for row in conn.execute("SHOW TABLES").fetchall()]
    assert restored[0] == rows and before[0] == rows - rows // 100
    with duckdb.connect(":memory:") as conn:
        [(expected,)] = conn.execute(
            "SELECT sum(average) FROM read_parquet(?)", [str(backup.path / "rds_metrics.parquet")]
        ).fetchall()
    assert restored[1] == pytest.approx(expected)
    assert not [table for table in tables if table.endswith("__restoring")]
    assert peak < 256 + 200


def rewrite_consistently(path: Path, table: str, select: str) -> None:
    """`table`'s file replaced by `select` over its rows, with a manifest that agrees: a
    backup as consistent as one made that way."""
    file = path / f"{table}.parquet"
    with duckdb.connect(":memory:") as conn:
        conn.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{file}')")
        conn.execute(f"COPY ({select}) TO '{file}' (FORMAT parquet)")
        [(rows,)] = conn.execute(f"SELECT count(*) FROM read_parquet('{file}')").fetchall()
        columns = [
            [name, data_type]
            for name, data_type, *_ in conn.execute(
                f"DESCRIBE SELECT * FROM read_parquet('{file}')"
            ).fetchall()
        ]
    digest = hashlib.sha256(file.read_bytes()).hexdigest()

    def agree(manifest: dict) -> None:
        manifest["rows"][table] = rows
        manifest["columns"][table] = columns
        manifest["sha256"][file.name] = digest

    edit_manifest(path, agree)


def test_a_consistent_backup_without_a_nullable_column_is_refused(
    warehouse: WarehouseResource,
) -> None:
    message = tamper_and_restore(
        warehouse,
        lambda path: rewrite_consistently(path, "rds_instances", "SELECT * EXCLUDE (tags) FROM t"),
    )
    assert message == (
        "backup 20261126T004000Z: rds_instances.parquet has no column tags, which the "
        "warehouse's rds_instances has (it would be left empty in every row); nothing was "
        "restored."
    )


@pytest.mark.e2e
def test_a_restore_that_fails_on_the_way_says_so_in_one_line_and_exits_1(
    warehouse: WarehouseResource,
) -> None:
    seed(warehouse)
    backup = create_backup(warehouse.snapshot_path, warehouse.backups_path, NOW)
    # Every row twice: consistent, but the warehouse's primary key refuses it.
    rewrite_consistently(backup.path, "rds_metrics", "SELECT * FROM t UNION ALL SELECT * FROM t")
    before = contents(warehouse.database)
    env = {**os.environ, "METRICS_DUCKDB_PATH": warehouse.database}
    env.pop("DAGSTER_HOME", None)

    failed = subprocess.run(
        [CLI, "backup", "restore", backup.name, "--yes"], env=env, capture_output=True, text=True
    )

    assert failed.returncode == 1
    assert failed.stderr.startswith(
        f"metrics-pipeline: error: backup {backup.name} could not be restored (Constraint "
        "Error: PRIMARY KEY or UNIQUE constraint violation: duplicate key"
    )
    assert failed.stderr.endswith("); nothing was changed.\n")
    assert failed.stderr.count("\n") == 1
    for table in TABLES:
        pd.testing.assert_frame_equal(contents(warehouse.database)[table], before[table])
    with duckdb.connect(warehouse.database, read_only=True) as conn:
        assert not conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '%restoring'"
        ).fetchall()


def test_prune_leaves_a_symlinked_backup_and_goes_on(warehouse: WarehouseResource) -> None:
    """A link named like a backup is not one this folder made: prune neither follows nor
    fails on it, every time."""
    seed(warehouse)
    folder = warehouse.backups_path
    old = NOW - timedelta(days=20)
    elsewhere = create_backup(warehouse.snapshot_path, folder.parent / "elsewhere", old)
    for days_ago in (10, 9, 1):
        create_backup(warehouse.snapshot_path, folder, NOW - timedelta(days=days_ago))
    link = folder / "20261101T004000Z"
    link.symlink_to(elsewhere.path)

    assert sorted(b.name for b in prune_backups(folder, keep_days=7, now=NOW)) == [
        "20261116T004000Z",
        "20261117T004000Z",
    ]
    assert prune_backups(folder, keep_days=7, now=NOW) == []
    assert link.is_symlink() and (elsewhere.path / MANIFEST).exists()
    assert [b.name for b in list_backups(folder)] == ["20261125T004000Z"]


def modes(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): stat.S_IMODE(path.lstat().st_mode)
        for path in sorted(folder.rglob("*"))
    }


@pytest.mark.e2e
def test_a_killed_backup_create_leaves_nothing_after_the_next_one(
    warehouse: WarehouseResource,
) -> None:
    """SIGKILL of `metrics-pipeline backup create` in the middle of its export, into a
    backup folder someone made readable by all: what it left is owner-only, and the next
    `backup create` removes it."""
    generate_metrics(warehouse, 1_000_000)
    folder = warehouse.backups_path
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    env = {**os.environ, "METRICS_DUCKDB_PATH": warehouse.database}
    command = [CLI, "backup", "create"]
    killed = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(folder.glob(".*.partial/*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the export has begun
    killed.kill()
    killed.wait()

    left = modes(folder)
    [partial] = [name for name in left if name.endswith(".partial")]
    reserved = partial[1 : -len(".partial")]
    assert left[partial] == left[reserved] == 0o700  # nothing in it reachable by others
    assert list_backups(folder) == []

    made = subprocess.run(command, env=env, capture_output=True, text=True)

    assert made.returncode == 0, made.stderr
    [backup] = list_backups(folder)
    assert backup.rows["rds_metrics"] == 1_000_000
    after = modes(folder)
    assert sorted(after) == [
        backup.name,
        *(f"{backup.name}/{f.name}" for f in sorted(backup.path.iterdir())),
    ]
    assert after.pop(backup.name) == 0o700
    assert set(after.values()) == {0o600}
