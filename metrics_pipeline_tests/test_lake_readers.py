"""What an analyst reading a lake can and cannot do (docs/scale-out.md, "What a lake reader can
and cannot do"), each claim tried with the analyst's own connection and credentials, as the
local stack gives them: the read-only database role of the local PostgreSQL (its own password
file, without the pipeline's) and S3 keys of deploy/iam/analyst-policy.json, on a moto S3 that
enforces IAM.

The reader runs in its own process (`metrics-pipeline query`, or query.connect() as in a
notebook), with nothing of the pipeline's environment.
"""

import json
import os
import subprocess
import sys
import zlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import boto3
import duckdb
import psycopg2
import pytest
from dagster import materialize

from metrics_pipeline.collection.resources import AwsResource
from metrics_pipeline.local_postgres.server import READER, SUPERUSER, WRITER, LocalPostgres
from metrics_pipeline.warehouse.lake import WRITE_LOCK_TABLE, Lake, LakeError, WriteLock, open_lake
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.sql import in_transaction, sql_literal
from metrics_pipeline_tests.conftest import S3Server
from metrics_pipeline_tests.helpers import rds_instances
from metrics_pipeline_tests.known_data import seed
from metrics_pipeline_tests.moto_fleet import create_instance
from metrics_pipeline_tests.test_cli import CLI

pytestmark = [
    pytest.mark.scale_out,
    pytest.mark.storage_kinds("lake", reason="the lake's reader sandbox and credentials"),
]

# Runs each statement through query.connect(), the analysts' Python API; prints each one's
# rows or error.
READER_SCRIPT = """
import json, sys
from metrics_pipeline.analysts import query
results = []
with query.connect() as conn:
    for statement in json.loads(sys.argv[1]):
        try:
            rows = conn.execute(statement).fetchall()
            results.append({"rows": [[str(value) for value in row] for row in rows]})
        except Exception as error:
            results.append({"error": str(error)})
print(json.dumps(results))
"""


def as_reader(env: dict[str, str], *statements: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-c", READER_SCRIPT, json.dumps(statements)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def remote(sql: str) -> str:
    """`sql` run on the catalog's PostgreSQL through the reader's attached catalog."""
    return f"SELECT * FROM postgres_query('__ducklake_metadata_lake', {sql_literal(sql)})"


@pytest.fixture
def seeded(warehouse: WarehouseResource) -> WarehouseResource:
    seed(warehouse)
    return warehouse


@pytest.fixture
def writer_session(lake: Lake) -> Iterator[int]:
    """A writer's open session on the catalog, as a collection's: its backend's pid."""
    assert lake.postgres_dsn is not None
    conn = psycopg2.connect(lake.postgres_dsn, application_name="metrics_pipeline writer")
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        [(pid,)] = cursor.fetchall()
    yield pid
    conn.close()


@pytest.mark.e2e
def test_a_reader_reads_the_lake_with_its_own_role_and_keys(
    seeded: WarehouseResource, lake_reader_env: dict[str, str]
) -> None:
    with seeded.reader() as conn:
        [(rows,)] = conn.execute("SELECT count(*) FROM rds_metrics").fetchall()
    done = subprocess.run(
        [CLI, "query", "SELECT count(*) AS n FROM rds_metrics", "-f", "csv"],
        env=lake_reader_env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["n", str(rows)]
    [who] = as_reader(
        lake_reader_env,
        remote(
            "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, rolconnlimit "
            "FROM pg_roles WHERE rolname = current_user"
        ),
    )
    assert who == {"rows": [["metrics_reader", "False", "False", "False", "64"]]}


@pytest.mark.e2e
def test_a_reader_reaches_no_other_database_role_or_privileged_function(
    seeded: WarehouseResource,
    lake_reader_env: dict[str, str],
    postgres: LocalPostgres,
    writer_session: int,
) -> None:
    def scan(role: str, database: str) -> str:
        return f"SELECT * FROM postgres_scan('{postgres.dsn(database, role)}', 'public', 'runs')"

    refused = {
        scan(READER, "dagster"): 'no pg_hba.conf entry for host "127.0.0.1", user '
        '"metrics_reader", database "dagster"',
        scan(READER, "postgres"): "no pg_hba.conf entry",
        scan(WRITER, "dagster"): "no password supplied",  # the pipeline's is not the reader's
        scan(SUPERUSER, "postgres"): 'no pg_hba.conf entry for host "127.0.0.1", user "metrics"',
        remote("SELECT pg_read_file('/etc/hostname')"): "permission denied for function "
        "pg_read_file",
        remote("SELECT pg_ls_dir('.')"): "permission denied for function pg_ls_dir",
        remote("SELECT pg_reload_conf()"): "permission denied for function pg_reload_conf",
        remote(f"SELECT pg_cancel_backend({writer_session})"): "permission denied to cancel query",
        remote(f"SELECT pg_terminate_backend({writer_session})"): "permission denied to "
        "terminate process",
        # Refused twice over: DuckDB's transaction on the catalog is read-only, and past
        # DuckDB the role lacks UPDATE (the next test).
        remote(f"SELECT id FROM {WRITE_LOCK_TABLE} FOR UPDATE"): "cannot execute SELECT FOR "
        "UPDATE in a read-only transaction",
        remote("SELECT set_config('role', 'metrics_writer', false)"): "permission denied to "
        'set role "metrics_writer"',
    }
    results = as_reader(lake_reader_env, *refused)
    for (statement, expected), result in zip(refused.items(), results, strict=True):
        assert expected in str(result.get("error")), (statement, result)
    with psycopg2.connect(seeded.lake.postgres_dsn) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [writer_session])
        assert cursor.fetchall() == [(1,)]  # the writer's session lives on


def test_with_its_credentials_past_duckdb_a_reader_still_only_reads(
    seeded: WarehouseResource, lake: Lake, postgres: LocalPostgres
) -> None:
    """What the reader's role can do with psql or psycopg2 instead of DuckDB: read the
    catalog's tables, nothing else; and no lock it takes holds a writer up."""
    database = lake.data_path.removeprefix("s3://lake/").strip("/")
    reader = psycopg2.connect(postgres.dsn(database, READER), password=postgres.password(READER))
    with reader.cursor() as cursor:
        cursor.execute("SELECT count(*) > 0 FROM ducklake_snapshot")
        assert cursor.fetchall() == [(True,)]
        reader.rollback()
        for statement, error in (
            ("DELETE FROM ducklake_snapshot", "permission denied for table ducklake_snapshot"),
            (
                "UPDATE ducklake_table SET table_name = 'x'",
                "permission denied for table ducklake_table",
            ),
            ("CREATE TABLE mine (x INTEGER)", "permission denied for schema public"),
            ("COPY (SELECT 1) TO PROGRAM 'id'", "permission denied to COPY"),
            ("SET ROLE metrics_writer", 'permission denied to set role "metrics_writer"'),
            (
                f"SELECT id FROM {WRITE_LOCK_TABLE} FOR UPDATE",
                f"permission denied for table {WRITE_LOCK_TABLE}",
            ),
            (
                f"LOCK TABLE {WRITE_LOCK_TABLE} IN EXCLUSIVE MODE",
                f"permission denied for table {WRITE_LOCK_TABLE}",
            ),
        ):
            with pytest.raises(psycopg2.Error, match=error):
                cursor.execute(statement)
            reader.rollback()
        # Advisory locks (the writers' key of earlier builds among them), and a read of the
        # lock's table in a transaction left open.
        earlier_key = zlib.crc32(b"metrics_pipeline warehouse writer")
        cursor.execute(
            "SELECT pg_advisory_lock(k) FROM (SELECT %s::BIGINT UNION ALL "
            "SELECT generate_series(-5, 5)) keys(k)",
            [earlier_key],
        )
        cursor.execute(f"SELECT * FROM {WRITE_LOCK_TABLE}")
        patient = WarehouseResource(
            database=seeded.database,
            lake_catalog=lake.catalog,
            lake_data_path=lake.data_path,
            lock_timeout_seconds=2.0,
        )
        with patient.connect() as conn:
            in_transaction(conn, lambda: conn.execute("DELETE FROM rds_metrics"))
            [(left,)] = conn.execute("SELECT count(*) FROM rds_metrics").fetchall()
    reader.close()
    assert left == 0


@pytest.mark.e2e
def test_a_reader_cannot_overwrite_a_data_file_nor_leave_the_prefix(
    seeded: WarehouseResource, lake: Lake, lake_reader_env: dict[str, str], s3_server: S3Server
) -> None:
    with open_lake(lake, read_only=True) as conn:
        files = [
            path
            for (path,) in conn.execute(
                "SELECT data_file FROM ducklake_list_files('lake', 'rds_metrics')"
            ).fetchall()
        ]
        before = conn.execute("SELECT sum(average) FROM rds_metrics").fetchall()
    assert files and all(path.startswith(lake.data_path) for path in files)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server.url,
        region_name="us-east-1",
        aws_access_key_id=s3_server.admin.key_id,
        aws_secret_access_key=s3_server.admin.secret,
    )
    s3.put_object(Bucket="lake", Key="elsewhere/secret.csv", Body=b"secret\n42\n")
    escape = f"{lake.data_path}../elsewhere"
    attempts = as_reader(
        lake_reader_env,
        f"COPY (SELECT * REPLACE (99999.0 AS average) FROM read_parquet('{files[0]}')) "
        f"TO '{files[0]}'",
        f"SELECT * FROM read_csv('{escape}/secret.csv')",
        f"COPY (SELECT 1 AS x) TO '{escape}/planted.csv'",
        f"COPY (SELECT 1 AS x) TO '{lake.data_path}planted.csv'",
        "SELECT * FROM read_csv('s3://lake/elsewhere/secret.csv')",
    )
    for attempt in attempts[:4]:
        assert "403" in str(attempt.get("error")), attempt  # S3 refused the analyst's key
    assert "disabled by configuration" in str(attempts[4].get("error"))  # DuckDB's sandbox
    listed = s3.list_objects_v2(Bucket="lake")["Contents"]
    assert not [item["Key"] for item in listed if item["Key"].endswith("planted.csv")]
    with open_lake(lake, read_only=True) as conn:
        assert conn.execute("SELECT sum(average) FROM rds_metrics").fetchall() == before


WRONG = "Wr0ng-s3cret-pa55"


@pytest.mark.e2e
@pytest.mark.usefixtures("moto_aws")
def test_a_password_in_the_catalog_setting_shows_nowhere(
    lake: Lake,
    postgres: LocalPostgres,
    aws: AwsResource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGPASSFILE")  # the password is in the setting alone
    password = postgres.password(WRITER)
    with_password = Lake(f"{lake.catalog} password={password}", lake.data_path)
    warehouse = WarehouseResource(
        database=str(tmp_path / "metrics.duckdb"),
        lake_catalog=with_password.catalog,
        lake_data_path=lake.data_path,
    )
    seed(warehouse)
    with warehouse.connect() as writer, warehouse.reader() as reader:
        for conn in (writer, reader):
            paths = conn.execute("SELECT path FROM duckdb_databases()").fetchall()
            assert paths and password not in str(paths)
            assert "user=metrics_writer" in str(paths)
            with pytest.raises(duckdb.Error) as failed:
                conn.execute(
                    "SELECT * FROM postgres_query('__ducklake_metadata_lake', 'SELECT nothing')"
                )
            assert password not in str(failed.value)

    port = postgres.port
    create_instance("us-east-1", "orders-db")
    for wrong in (
        f"{lake.catalog} password={WRONG}",
        f"ducklake:postgres:postgresql://{WRITER}:{WRONG}@127.0.0.1:{port}/"
        + lake.data_path.removeprefix("s3://lake/").strip("/"),
    ):
        refused = Lake(wrong, lake.data_path)
        assert WRONG not in repr(refused) and WRONG not in str(refused)
        for attempt in (
            partial(open_lake, refused, read_only=True),
            partial(WriteLock, refused, 1),
        ):
            with pytest.raises(LakeError) as failed:
                attempt()
            assert "password authentication failed" in str(failed.value)
            assert WRONG not in str(failed.value)

        failing = WarehouseResource(
            database=warehouse.database, lake_catalog=wrong, lake_data_path=lake.data_path
        )
        result = materialize(
            [rds_instances], resources={"aws": aws, "warehouse": failing}, raise_on_error=False
        )
        assert not result.success
        [failure] = result.get_step_failure_events()
        assert "password authentication failed" in str(failure.event_specific_data)
        assert WRONG not in str(result.all_events)

        cli = subprocess.run(
            [CLI, "query", "SELECT 1"],
            env={
                **os.environ,
                "METRICS_WAREHOUSE": wrong,
                "METRICS_LAKE_DATA_PATH": lake.data_path,
            },
            capture_output=True,
            text=True,
        )
        assert cli.returncode != 0
        assert "password authentication failed" in cli.stderr
        assert WRONG not in cli.stderr + cli.stdout
