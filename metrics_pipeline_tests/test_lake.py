"""What only the warehouse on a DuckLake (a PostgreSQL catalog and Parquet files on a moto S3
server, both on loopback) has: writers on several processes, conflict retry, readers during
writes, its maintenance and sandbox, the move from a DuckDB file. The behaviour both kinds share
is tested in each domain's module, on every storage kind (conftest.py's STORAGE_KINDS).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import boto3
import duckdb
import psycopg2
import pytest
from dagster import Failure, materialize

from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.hours import partition_key, utc_now
from metrics_pipeline.maintenance.retention import compact_lake
from metrics_pipeline.warehouse.lake import (
    WRITE_LOCK_TABLE,
    Lake,
    LakeError,
    WriteLock,
    open_lake,
)
from metrics_pipeline.warehouse.migrations import SCHEMA_VERSION
from metrics_pipeline.warehouse.readers import SnapshotMissingError
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.sql import ConflictError, in_transaction, retry_conflicts
from metrics_pipeline.warehouse.tables import TABLES
from metrics_pipeline_tests.conftest import S3Server
from metrics_pipeline_tests.helpers import (
    DAGSTER,
    generate_metrics,
    peak_rss_mib,
    pipeline_env,
    rds_metrics_hourly,
)
from metrics_pipeline_tests.known_data import seed
from metrics_pipeline_tests.moto_fleet import TWO_DAYS_AGO, create_instance, put_metrics
from metrics_pipeline_tests.test_cli import CLI
from metrics_pipeline_tests.test_rds_metrics import HOUR, collect

pytestmark = [
    pytest.mark.scale_out,
    pytest.mark.storage_kinds("lake", reason="what only a lake has"),
]


def test_a_new_lake_has_partitioned_tables_and_nothing_to_read(
    warehouse: WarehouseResource, lake: Lake
) -> None:
    with (
        pytest.raises(SnapshotMissingError, match="has no warehouse tables yet"),
        warehouse.reader(),
    ):
        pass
    assert not warehouse.has_data()
    warehouse.prepare()
    assert warehouse.has_data()
    with open_lake(lake, read_only=True) as conn:
        partitioned = conn.execute(
            "SELECT t.table_name, count(*) FROM __ducklake_metadata_lake.ducklake_partition_info p "
            "JOIN __ducklake_metadata_lake.ducklake_table t USING (table_id) "
            "WHERE t.end_snapshot IS NULL GROUP BY ALL ORDER BY 1"
        ).fetchall()
    assert [name for name, _ in partitioned] == [
        "rds_cluster_metric_fetches", "rds_cluster_metrics", "rds_metric_fetches",
        "rds_metric_hourly_fetches", "rds_metrics", "rds_metrics_daily", "rds_metrics_hourly",
        "rds_pi_fetches", "rds_pi_load", "rds_pi_load_personal",
    ]  # fmt: skip


def test_a_transaction_that_lost_to_another_commit_runs_again(lake: Lake) -> None:
    with open_lake(lake, read_only=False) as writer, open_lake(lake, read_only=False) as other:
        writer.execute("CREATE TABLE t (k INTEGER, v VARCHAR)")
        writer.execute("INSERT INTO t VALUES (1, 'old'), (2, 'old')")
        attempts = []

        def replace_first_row() -> None:
            attempts.append(len(attempts) + 1)
            writer.execute("DELETE FROM t WHERE k = 1")
            writer.execute("INSERT INTO t VALUES (1, ?)", [f"attempt {len(attempts)}"])
            if len(attempts) == 1:  # another writer commits a delete of the same table first
                other.execute("DELETE FROM t WHERE k = 2")

        in_transaction(writer, replace_first_row)
        rows = writer.execute("SELECT * FROM t ORDER BY k").fetchall()
    assert attempts == [1, 2]
    assert rows == [(1, "attempt 2")]


def test_a_write_that_always_loses_fails_clearly() -> None:
    def losing() -> None:
        raise duckdb.TransactionException(
            "Failed to commit DuckLake transaction.\nTransaction conflict - attempting to "
            'delete from table with index "2" - but another transaction has deleted from it'
        )

    pauses: list[float] = []
    with pytest.raises(ConflictError) as raised:
        retry_conflicts(losing, attempts=4, sleep=pauses.append)
    assert str(raised.value).startswith(
        "The write lost to other writers' commits 4 times in a row (Transaction conflict - "
        'attempting to delete from table with index "2"'
    )
    assert len(pauses) == 3 and pauses[0] < pauses[-1]


def test_a_reader_holding_a_long_query_sees_one_commit_throughout(
    warehouse: WarehouseResource,
) -> None:
    stored_rows = seed(warehouse)
    with warehouse.reader() as reader:
        batches = reader.execute(
            "SELECT instance_id, metric, ts, average FROM rds_metrics ORDER BY ALL"
        ).to_arrow_reader(100)
        seen = batches.read_next_batch().to_pylist()
        with warehouse.connect() as writer:  # rewrites every row, then compacts the lake
            in_transaction(writer, lambda: writer.execute("UPDATE rds_metrics SET average = -1"))
            in_transaction(writer, lambda: writer.execute("DELETE FROM rds_metrics"))
            compact_lake(writer, utc_now())
        seen += batches.read_all().to_pylist()
    assert len(seen) == len(stored_rows)
    assert {(r["instance_id"], r["metric"], r["ts"]): r["average"] for r in seen} == {
        (p.instance_id, p.metric, p.ts): p.average for p in stored_rows
    }
    with warehouse.reader() as later:
        assert later.execute("SELECT count(*) FROM rds_metrics").fetchall() == [(0,)]


def test_writers_on_many_threads_keep_every_row_once(warehouse: WarehouseResource) -> None:
    """Eight writers replace the same keys at once, each its own connection (as runs on other
    machines): the writers' lock and DuckLake's commit leave each key exactly once."""
    warehouse.prepare()
    start = datetime(2026, 11, 1)
    errors: list[BaseException] = []

    def write(writer_number: int) -> None:
        try:
            with warehouse.connect() as conn:
                for _ in range(3):
                    in_transaction(
                        conn,
                        lambda: (
                            conn.execute("DELETE FROM rds_metrics WHERE ts >= ?", [start]),
                            conn.execute(
                                "INSERT INTO rds_metrics (ts, account_id, region, instance_id, "
                                "metric, average, collected_at) "
                                "SELECT ? + INTERVAL 5 MINUTE * n, '1', 'us-east-1', 'db', "
                                "'CPUUtilization', ?, ? FROM range(24) t(n)",
                                [start, float(writer_number), start],
                            ),
                        ),
                    )
        except BaseException as error:  # reported below, with the writer
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with warehouse.reader() as conn:
        [(rows, keys, writers)] = conn.execute(
            "SELECT count(*), count(DISTINCT ts), count(DISTINCT average) FROM rds_metrics"
        ).fetchall()
    assert (rows, keys, writers) == (24, 24, 1)


def test_the_reader_is_a_sandbox_on_a_lake_too(warehouse: WarehouseResource, tmp_path) -> None:
    seed(warehouse)
    outside = tmp_path / "outside.csv"
    outside.write_text("secret\n")
    with warehouse.reader() as conn:
        for statement, refused in (
            (f"SELECT * FROM read_csv('{outside}')", "disabled by configuration"),
            (f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'", "disabled by configuration"),
            ("DELETE FROM rds_metrics", "read-only mode"),
            (f"ATTACH '{tmp_path / 'x.duckdb'}' AS x", "disabled by configuration"),
            ("SET enable_external_access = true", "configuration has been locked"),
            ("INSTALL spatial", "disabled by configuration"),
            # The catalog's PostgreSQL is reached read-only, through DuckDB and past it.
            ("DELETE FROM __ducklake_metadata_lake.ducklake_snapshot", "read-only mode"),
            (
                "CALL postgres_execute('__ducklake_metadata_lake', 'DROP TABLE ducklake_table')",
                "READ ONLY",
            ),
        ):
            with pytest.raises(duckdb.Error, match=refused):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) > 0 FROM rds_metrics").fetchall() == [(True,)]
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.e2e
@pytest.mark.usefixtures("moto_aws")
def test_a_duckdb_warehouse_moves_into_a_lake_with_every_row(
    aws: AwsResource, collection: CollectionResource, lake: Lake, tmp_path: Path
) -> None:
    """`metrics-pipeline migrate-to-lake`: a file warehouse with collected metrics, the hourly
    tier and run figures moves into an empty lake; every table then reads the same there."""
    create_instance("us-east-1", "orders-db", tags={"team": "shop"})
    put_metrics("us-east-1", ["orders-db"], ["CPUUtilization"], HOUR, HOUR + timedelta(hours=2))
    file = WarehouseResource(database=str(tmp_path / "file" / "metrics.duckdb"))
    collect(aws, collection, file, HOUR, HOUR + timedelta(hours=1))
    tier = materialize(
        [rds_metrics_hourly],
        partition_key=HOUR.strftime("%Y-%m-%d"),
        resources={"aws": aws, "collection": collection, "warehouse": file},
    )
    assert tier.success
    # The hours put that fall in HOUR's day (the second may be the next day's first).
    tier_hours = sum((HOUR + timedelta(hours=n)).date() == HOUR.date() for n in range(2))
    in_the_lake = WarehouseResource(
        database=file.database, lake_catalog=lake.catalog, lake_data_path=lake.data_path
    )
    env = {
        **os.environ,
        "METRICS_DUCKDB_PATH": file.database,
        "METRICS_WAREHOUSE": lake.catalog,
        "METRICS_LAKE_DATA_PATH": lake.data_path,
    }

    moved = subprocess.run([CLI, "migrate-to-lake"], env=env, capture_output=True, text=True)

    assert moved.returncode == 0, moved.stderr
    copied = 0
    with file.reader() as source, in_the_lake.reader() as target:
        for table in TABLES:
            before = source.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            after = target.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            assert after == before, table
            copied += len(before)
        [(metric_rows,)] = source.execute("SELECT count(*) FROM rds_metrics").fetchall()
        [(hourly_rows,)] = source.execute("SELECT count(*) FROM rds_metrics_hourly").fetchall()
    assert (metric_rows, hourly_rows) == (2 * 12, tier_hours)
    assert moved.stdout.startswith(
        f"Moved {copied} row(s) of {len(TABLES)} table(s) from {file.database}"
    )
    assert moved.stdout.rstrip().endswith("every table's row count and checksum match.")
    assert "copying rds_metrics (24 row(s))\n" in moved.stderr  # progress, table by table

    again = subprocess.run([CLI, "migrate-to-lake"], env=env, capture_output=True, text=True)
    assert again.returncode == 1
    assert again.stderr == (
        "metrics-pipeline: error: migrate-to-lake: the lake already holds rows "
        "(rds_instances 1, rds_instance_history 1, rds_metrics 24, rds_metric_fetches 2, "
        f"pipeline_runs 2, pipeline_run_parts 2, rds_metrics_hourly {tier_hours}, "
        "rds_metric_hourly_fetches 24); nothing was copied. Move a file into a new, empty "
        "lake.\n"
    )


@pytest.mark.e2e
def test_two_processes_collecting_overlapping_windows_store_every_key_once(
    moto_server: str, lake: Lake, tmp_path: Path
) -> None:
    """Two `dagster asset materialize` processes at once, as two pods would: a three-hour
    range and its middle hour, each for two regions, into the same lake tables."""
    first, last = TWO_DAYS_AGO, TWO_DAYS_AGO + timedelta(hours=2)
    create_instance("us-east-1", "orders-db")
    create_instance("eu-west-1", "users-db")
    end = last + timedelta(hours=1)
    expected = put_metrics("us-east-1", ["orders-db"], ["CPUUtilization"], first, end)
    expected |= put_metrics("eu-west-1", ["users-db"], ["CPUUtilization"], first, end)
    env = pipeline_env(
        tmp_path,
        moto_server,
        METRICS_AWS_REGIONS="us-east-1,eu-west-1",
        METRICS_CLOUDWATCH_METRICS="CPUUtilization",
        METRICS_WAREHOUSE=lake.catalog,
        METRICS_LAKE_DATA_PATH=lake.data_path,
    )
    module = ["asset", "materialize", "-m", "metrics_pipeline.definitions", "--select"]
    discovered = subprocess.run(
        [DAGSTER, *module, "rds_instances"], env=env, capture_output=True, text=True
    )
    assert discovered.returncode == 0, discovered.stderr[-3000:]

    runs = [
        subprocess.Popen(
            [DAGSTER, *module, "rds_metrics", *partitions],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for partitions in (
            ["--partition-range", f"{partition_key(first)}...{partition_key(last)}"],
            ["--partition", partition_key(first + timedelta(hours=1))],
        )
    ]
    for run in runs:
        output, _ = run.communicate(timeout=300)
        assert run.returncode == 0, output[-3000:]

    warehouse = WarehouseResource(
        database=env["METRICS_DUCKDB_PATH"],
        lake_catalog=lake.catalog,
        lake_data_path=lake.data_path,
    )
    with warehouse.reader() as conn:
        rows = conn.execute(
            "SELECT instance_id, metric, ts, average, minimum, maximum, sum, sample_count "
            "FROM rds_metrics"
        ).fetchall()
        [(fetches, fetched_keys)] = conn.execute(
            "SELECT count(*), count(DISTINCT (instance_id, hour)) FROM rds_metric_fetches"
        ).fetchall()
    assert len(rows) == len({row[:3] for row in rows}) == 2 * 3 * 12
    assert (fetches, fetched_keys) == (2 * 3, 2 * 3)
    columns = ("average", "minimum", "maximum", "sum", "sample_count")
    got = {(r[0], r[1], r[2], c): v for r in rows for c, v in zip(columns, r[3:], strict=True)}
    assert got == pytest.approx(expected)


def test_a_lake_from_a_newer_build_is_refused_before_anything_is_written(
    warehouse: WarehouseResource,
) -> None:
    warehouse.prepare()
    with warehouse.connect() as conn:
        in_transaction(
            conn, lambda: conn.execute("INSERT INTO schema_version VALUES (99, now()::TIMESTAMP)")
        )
    with pytest.raises(Failure) as refused:
        warehouse.prepare()
    assert refused.value.description == (
        f"The warehouse {warehouse.database}: the warehouse has schema version 99, newer than "
        f"this build's ({SCHEMA_VERSION}): upgrade metrics_pipeline to write it."
    )


def test_a_writer_waits_for_the_lake_then_fails_naming_the_setting_and_the_holder(
    lake: Lake, warehouse: WarehouseResource
) -> None:
    """Another machine's writer holds the lake (the row of the writers' lock) past the wait:
    the one waiting says which writer it is, as PostgreSQL knows it."""
    patient = warehouse.model_copy(update={"lock_timeout_seconds": 0.5})
    patient.prepare()
    assert lake.postgres_dsn is not None
    holder = psycopg2.connect(
        lake.postgres_dsn, application_name="metrics_pipeline writer pod-7 pid 42"
    )
    with holder.cursor() as cursor:  # a transaction left open, the row locked
        cursor.execute(f"SELECT id FROM {WRITE_LOCK_TABLE} FOR UPDATE")
        cursor.execute("SELECT pg_backend_pid()")
        [(holder_pid,)] = cursor.fetchall()
    try:
        with patient.connect() as conn, pytest.raises(LakeError) as waited:
            in_transaction(conn, lambda: conn.execute("DELETE FROM rds_metrics"))
    finally:
        holder.close()
    message = str(waited.value)
    assert message.startswith(
        "Another writer held the lake for more than 0.5 s (METRICS_LOCK_TIMEOUT_SECONDS): held "
        "by metrics_pipeline writer pod-7 pid 42 (role metrics_writer, from 127.0.0.1, "
        f"backend pid {holder_pid}, for "
    ), message
    assert message.endswith(" s); nothing was written."), message
    with warehouse.connect() as conn:  # released with its holder's connection
        in_transaction(conn, lambda: conn.execute("DELETE FROM rds_metrics"))


def test_a_writer_names_itself_to_postgresql(lake: Lake) -> None:
    lock = WriteLock(lake, 1.0)
    try:
        with lock.held(), psycopg2.connect(lake.postgres_dsn) as other, other.cursor() as cursor:
            cursor.execute(
                "SELECT application_name FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
                "AND pid <> pg_backend_pid()"
            )
            names = [name for (name,) in cursor.fetchall()]
    finally:
        lock.close()
    assert names == [f"metrics_pipeline writer {socket.gethostname()} pid {os.getpid()}"]


@pytest.mark.e2e
def test_processes_installing_the_extensions_at_once_all_load_them(tmp_path: Path) -> None:
    """A fleet's first runs start together on a new machine: each installs DuckDB's extensions
    from the wheels into the same empty cache, one at a time, and each then loads them."""
    load_all = (
        "import json\n"
        "import duckdb\n"
        "from metrics_pipeline.warehouse.lake import extension_directory, install_extensions\n"
        "install_extensions(extension_directory())\n"
        "conn = duckdb.connect(config={'extension_directory': str(extension_directory()), "
        "'autoload_known_extensions': False, 'autoinstall_known_extensions': False})\n"
        "for name in ('ducklake', 'postgres', 'httpfs'):\n"
        "    conn.execute(f'LOAD {name}')\n"
        "print(json.dumps([r[0] for r in conn.execute("
        "'SELECT extension_name FROM duckdb_extensions() WHERE loaded').fetchall()]))\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", load_all], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0]
    for output in outputs:
        assert {"ducklake", "httpfs", "postgres_scanner"} <= set(json.loads(output))


def migration_env(file: WarehouseResource, lake: Lake, **settings: str) -> dict[str, str]:
    env = {
        **os.environ,
        "METRICS_DUCKDB_PATH": file.database,
        "METRICS_WAREHOUSE": lake.catalog,
        "METRICS_LAKE_DATA_PATH": lake.data_path,
        **settings,
    }
    env.pop("DAGSTER_HOME", None)
    return env


def data_files(lake: Lake, s3_server: S3Server) -> set[str]:
    """The objects under the lake's data path in the S3 server, as its administrator sees
    them."""
    bucket, _, prefix = lake.data_path.removeprefix("s3://").partition("/")
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server.url,
        region_name="us-east-1",
        aws_access_key_id=s3_server.admin.key_id,
        aws_secret_access_key=s3_server.admin.secret,
    )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def known_files(lake: Lake) -> set[str]:
    """The data files the lake's catalog knows, as keys of its bucket."""
    bucket = lake.data_path.removeprefix("s3://").partition("/")[0]
    with open_lake(lake, read_only=True) as conn:
        rows = conn.execute("FROM ducklake_list_files('lake', 'rds_metrics')").fetchall()
    return {row[0].removeprefix(f"s3://{bucket}/") for row in rows}


@pytest.mark.e2e
@pytest.mark.load
def test_a_migration_stays_within_the_memory_limit_whatever_the_days(
    lake: Lake, tmp_path: Path
) -> None:
    """Two million rows over 120 days (a file per day, 120 of them open at once where one
    statement copied the table, holding every row until the end) move with
    METRICS_DUCKDB_MEMORY_LIMIT at 256 MiB: the command's whole process grows by less than
    220 MiB over what it takes to move an empty warehouse (Python, Dagster, DuckDB and its
    extensions). Measured: 163 MiB; 260 MiB when one statement copied each table."""
    file = WarehouseResource(database=str(tmp_path / "file" / "metrics.duckdb"))
    generate_metrics(file, 0)
    env = migration_env(file, lake, METRICS_DUCKDB_MEMORY_LIMIT="256MiB")
    code, before_any_row, stderr = peak_rss_mib([CLI, "migrate-to-lake"], env)
    assert code == 0, stderr
    rows, days = 2_000_000, 120
    generate_metrics(file, rows, instances=rows // (days * 24) + 1, minutes=60)

    code, peak, stderr = peak_rss_mib([CLI, "migrate-to-lake"], env)

    print(
        f"migration of {rows:,} rows over {days} days: peak {peak:.0f} MiB, "
        f"{before_any_row:.0f} MiB for none"
    )
    assert code == 0, stderr
    with open_lake(lake, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM rds_metrics").fetchone() == (rows,)
        assert conn.execute("SELECT count(DISTINCT ts::DATE) FROM rds_metrics").fetchone() == (
            days,
        )
    assert peak - before_any_row < 220


def kill_a_migration(
    lake: Lake, s3_server: S3Server, tmp_path: Path
) -> tuple[dict[str, str], set[str]]:
    """SIGKILL of `metrics-pipeline migrate-to-lake` of 400,000 rows while it writes the
    lake's files: its environment, and the files it left in S3 (in no snapshot)."""
    file = WarehouseResource(database=str(tmp_path / "file" / "metrics.duckdb"))
    generate_metrics(file, 400_000, instances=280, minutes=60)
    env = migration_env(file, lake)
    killed = subprocess.Popen([CLI, "migrate-to-lake"], env=env, stderr=subprocess.PIPE, text=True)
    assert killed.stderr is not None
    for line in killed.stderr:
        if line.startswith("copying rds_metrics "):
            break
    # In steps of 50 ms, stopped in between, until its first file is in S3: on an idle machine
    # the whole copy, commit included, can take less than one look at the bucket.
    killed.send_signal(signal.SIGSTOP)
    while not any(key.endswith(".parquet") for key in data_files(lake, s3_server)):
        killed.send_signal(signal.SIGCONT)
        time.sleep(0.05)
        killed.send_signal(signal.SIGSTOP)
    killed.kill()
    killed.wait()
    orphans = data_files(lake, s3_server)
    assert orphans and not known_files(lake)
    return env, orphans


@pytest.mark.e2e
def test_a_killed_migration_leaves_no_files_after_the_next_one(
    lake: Lake, s3_server: S3Server, tmp_path: Path
) -> None:
    """The next migration deletes what a killed one wrote, then moves every row."""
    env, orphans = kill_a_migration(lake, s3_server, tmp_path)

    moved = subprocess.run([CLI, "migrate-to-lake"], env=env, capture_output=True, text=True)

    assert moved.returncode == 0, moved.stderr
    assert f"deleted {len(orphans)} file(s) an earlier, unfinished copy left" in moved.stderr
    left = data_files(lake, s3_server)
    assert not orphans & left
    assert left == known_files(lake)
    with open_lake(lake, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM rds_metrics").fetchone() == (400_000,)


@pytest.mark.e2e
def test_retention_deletes_what_a_killed_write_left_once_a_day_old(
    lake: Lake, s3_server: S3Server, tmp_path: Path
) -> None:
    _, orphans = kill_a_migration(lake, s3_server, tmp_path)
    warehouse = WarehouseResource(
        database=str(tmp_path / "w.duckdb"),
        lake_catalog=lake.catalog,
        lake_data_path=lake.data_path,
    )
    with warehouse.connect() as conn:
        assert compact_lake(conn, utc_now()).orphans_deleted == 0  # could be a write at work
        assert data_files(lake, s3_server) == orphans
        compaction = compact_lake(conn, utc_now() + timedelta(days=1, minutes=5))
    assert compaction.orphans_deleted == len(orphans)
    assert data_files(lake, s3_server) == set()
