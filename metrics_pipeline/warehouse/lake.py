"""The warehouse on DuckLake: a catalog in PostgreSQL and Parquet files in S3 (or a folder),
which processes on many machines write and read at once, and analysts query with DuckDB.

Each connection is an in-memory DuckDB with the lake attached as `lake` and in use, so the
SQL the writers and readers run on the DuckDB file runs here unchanged. The DuckDB
extensions come from their PyPI wheels (duckdb-extension-*), installed once into a local
extension folder: nothing is downloaded at run time, and nothing is loaded behind a query's
back.

Writers are serialised per transaction by a row lock in the catalog's database (see
WriteLock): DuckLake checks conflicts per table at commit, but two transactions that each
delete nothing and insert the same rows would both commit, and a window collected twice at
once would then be stored twice.

A password in METRICS_WAREHOUSE never reaches DuckDB's connection string (which errors and
`duckdb_databases()` show): DuckDB gets it in a secret, psycopg2 as a keyword, and messages
name the lake without it. libpq's own PGPASSFILE (`~/.pgpass`) or PGPASSWORD are better still.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import duckdb
import psycopg2
from fsspec import AbstractFileSystem

from metrics_pipeline.lake_catalog import LAKE_PREFIX, Lake, LakeError
from metrics_pipeline.settings import variable
from metrics_pipeline.warehouse.read_only_folder import read_only_url
from metrics_pipeline.warehouse.sql import sql_literal

LAKE_ALIAS = "lake"
# The catalog database DuckLake attaches for LAKE_ALIAS.
METADATA_ALIAS = f"__ducklake_metadata_{LAKE_ALIAS}"
# What writes a catalog file's log into the file, so that a copy of it holds every commit.
CATALOG_CHECKPOINT = f"CHECKPOINT {METADATA_ALIAS}"
# What duckdb.connect accepts as its `config`.
DuckDBSetting = str | bool | int | float | list[str]
DuckDBConfig = dict[str, DuckDBSetting]
# Name to LOAD, and the PyPI package whose wheel carries it.
EXTENSIONS = {
    "ducklake": "duckdb_extension_ducklake",
    "postgres": "duckdb_extension_postgres",
    "httpfs": "duckdb_extension_httpfs",
}
# The writers' lock: a one-row table in the catalog's database whose row a writer locks
# (SELECT ... FOR UPDATE), which needs the UPDATE privilege: a read-only role cannot take it.
WRITE_LOCK_TABLE = "metrics_pipeline_write_lock"
# How a writer's lock connection names itself to PostgreSQL (pg_stat_activity), so that one
# that waits can say which writer holds the lake.
WRITER_APPLICATION = "metrics_pipeline writer"
CATALOG_SECRET = "metrics_lake_catalog"
# How files go up to S3: DuckDB's default buffers 80 MB per part in flight (800GB over
# 10,000 parts), and a write of several partitions at once ran out of memory on one part's
# 76 MiB; the smallest maximum file size it allows gives parts of 5 MB (a day's file of a
# table stays far below 50 GB), and fewer parts at once.
S3_UPLOADS = {"s3_uploader_max_filesize": "50GB", "s3_uploader_thread_limit": "8"}


def extension_directory() -> Path:
    """Where the wheels' extensions are installed for DuckDB to load: a per-user cache
    (XDG_CACHE_HOME where the home folder is read-only, as in some containers)."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "metrics_pipeline" / "duckdb_extensions"


def _wheel_extension(name: str) -> Path:
    spec = find_spec(EXTENSIONS[name])
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = (
        Path(locations[0]) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
        if locations
        else None
    )
    if path is None or not path.exists():
        package = EXTENSIONS[name].replace("_", "-")
        raise LakeError(
            f"DuckLake needs DuckDB's {name} extension for DuckDB {duckdb.__version__}, from "
            f"the {package} package at that version: reinstall metrics_pipeline."
        )
    return path


@cache
def install_extensions(directory: Path) -> None:
    """Copies the wheels' extensions into `directory` once (DuckDB loads them from there),
    one process at a time: another loading a half-copied file would fail."""
    directory.mkdir(parents=True, exist_ok=True)
    with (
        open(directory / ".install.lock", "w") as lock,
        duckdb.connect(":memory:", config=_extension_config(directory)) as conn,
    ):
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        installed = {
            row[0]
            for row in conn.execute(
                "SELECT extension_name FROM duckdb_extensions() WHERE installed"
            ).fetchall()
        }
        for name in EXTENSIONS:
            if name not in installed and f"{name}_scanner" not in installed:
                conn.execute(f"INSTALL {sql_literal(_wheel_extension(name))}")


def _extension_config(directory: Path) -> DuckDBConfig:
    return {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "extension_directory": str(directory),
    }


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def s3_secret_sql() -> str:
    """A DuckDB secret for the data path from the usual AWS environment (the credential chain
    boto3 resolves, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for another endpoint)."""
    session = boto3.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise LakeError(
            "METRICS_LAKE_DATA_PATH is on S3 but no AWS credentials were found (environment, "
            "profile, or the instance's role)."
        )
    frozen = credentials.get_frozen_credentials()
    options = {
        "TYPE": "s3",
        "KEY_ID": frozen.access_key,
        "SECRET": frozen.secret_key,
        "REGION": session.region_name or "us-east-1",
    }
    if frozen.token:
        options["SESSION_TOKEN"] = frozen.token
    endpoint = _endpoint()
    if endpoint:
        url = urlsplit(endpoint)
        options |= {"ENDPOINT": url.netloc, "URL_STYLE": "path"}
        options["USE_SSL"] = "true" if url.scheme == "https" else "false"
    body = ", ".join(
        f"{key} {value if key == 'TYPE' or key == 'USE_SSL' else sql_literal(value)}"
        for key, value in options.items()
    )
    return f"CREATE OR REPLACE SECRET metrics_lake_s3 ({body})"


def needed_extensions(lake: Lake) -> list[str]:
    """What the lake needs loaded, and nothing more: a reader's SQL gets what is loaded."""
    return [
        name
        for name in EXTENSIONS
        if name == "ducklake"
        or (name == "postgres" and lake.postgres_dsn)
        or (name == "httpfs" and lake.on_s3)
    ]


def open_lake(
    lake: Lake,
    *,
    read_only: bool,
    config: Mapping[str, DuckDBSetting] | None = None,
    catalog_copy: Path | None = None,
    data_folder: AbstractFileSystem | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached as `lake` and in use: its catalog, or
    `catalog_copy` of a catalog file; its data read through `data_folder` when given (see
    read_only_folder.py)."""
    directory = extension_directory()
    install_extensions(directory)
    conn = duckdb.connect(":memory:", config={**_extension_config(directory), **(config or {})})
    try:
        for name in needed_extensions(lake):
            conn.execute(f"LOAD {name}")
        if lake.on_s3:
            conn.execute(s3_secret_sql())
            for name, value in S3_UPLOADS.items():
                conn.execute(f"SET {name} = {sql_literal(value)}")
        # A reader takes the data path the catalog records: given again, DuckDB's sandbox
        # would not allow reading there.
        options = ["READ_ONLY"] if read_only else [f"DATA_PATH {sql_literal(lake.data_path)}"]
        if data_folder is not None:
            conn.register_filesystem(data_folder)
            options += [f"DATA_PATH {sql_literal(read_only_url(lake.data_path))}"]
            options += ["OVERRIDE_DATA_PATH true"]
        if lake.password is not None:
            conn.execute(
                f"CREATE SECRET {CATALOG_SECRET} "
                f"(TYPE postgres, PASSWORD {sql_literal(lake.password)})"
            )
            options.append(f"METADATA_PARAMETERS MAP {{'SECRET': {sql_literal(CATALOG_SECRET)}}}")
        catalog = f"{LAKE_PREFIX}{catalog_copy}" if catalog_copy else lake.attach_path
        conn.execute(f"ATTACH {sql_literal(catalog)} AS {LAKE_ALIAS} ({', '.join(options)})")
        conn.execute(f"USE {LAKE_ALIAS}")
    except duckdb.Error as error:
        conn.close()
        first_line = str(error).splitlines()[0]
        raise LakeError(
            f"Cannot open the DuckLake warehouse {lake.label} (METRICS_WAREHOUSE, "
            f"METRICS_LAKE_DATA_PATH): {first_line}"
        ) from None
    except BaseException:
        conn.close()
        raise
    return conn


class WriteLock:
    """One writer at a time across machines: the row of WRITE_LOCK_TABLE in the catalog's
    database, locked FOR UPDATE from a transaction's start to its commit. Locking a row needs
    the UPDATE privilege on its table, which the pipeline's role has and a read-only role does
    not (an advisory lock, which needs no privilege at all, let any reader lock every writer
    out). Waits as a DuckDB file's writer waits for the file (METRICS_LOCK_TIMEOUT_SECONDS),
    then fails naming the writer that holds it."""

    def __init__(self, lake: Lake, timeout_seconds: float) -> None:
        assert lake.postgres_dsn is not None
        self._lake = lake
        try:
            self._connection = psycopg2.connect(
                lake.postgres_dsn, application_name=writer_application_name()
            )
        except psycopg2.Error as error:
            raise LakeError(
                f"Cannot reach the DuckLake catalog {lake.label} (METRICS_WAREHOUSE): "
                f"{str(error).strip().splitlines()[0]}"
            ) from None
        self._timeout_seconds = timeout_seconds
        self.waited_seconds = 0.0
        self._create_table()

    def _create_table(self) -> None:
        """The lock's table and row, made by the first writer of a catalog."""
        self._connection.autocommit = True
        with self._connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [WRITE_LOCK_TABLE])
            exists = cursor.fetchone()
            if not (exists and exists[0]):
                # Another writer may create it at the same moment.
                with suppress(psycopg2.errors.UniqueViolation, psycopg2.errors.DuplicateTable):
                    cursor.execute(
                        f"CREATE TABLE IF NOT EXISTS {WRITE_LOCK_TABLE} "
                        "(id INTEGER PRIMARY KEY CHECK (id = 1))"
                    )
            # The row too, always: a first writer may have died between the two.
            cursor.execute(f"INSERT INTO {WRITE_LOCK_TABLE} VALUES (1) ON CONFLICT DO NOTHING")
        self._connection.autocommit = False

    @contextmanager
    def held(self) -> Iterator[None]:
        began = time.monotonic()
        delay = 0.02
        with self._connection.cursor() as cursor:
            while True:
                try:
                    cursor.execute(f"SELECT id FROM {WRITE_LOCK_TABLE} FOR UPDATE NOWAIT")
                    if cursor.fetchone() is None:
                        raise LakeError(
                            f"The writers' lock, the row of {WRITE_LOCK_TABLE} in the catalog "
                            f"{self._lake.label}, was deleted; nothing was written."
                        )
                    break
                except psycopg2.errors.LockNotAvailable:
                    self._connection.rollback()
                if time.monotonic() - began + delay > self._timeout_seconds:
                    raise LakeError(
                        f"Another writer held the lake for more than "
                        f"{self._timeout_seconds:g} s ({variable('lock_timeout_seconds')}): "
                        f"{self._holder(cursor)}; nothing was written."
                    )
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 1.0)
            self.waited_seconds += time.monotonic() - began
            try:
                yield
            finally:
                self._connection.rollback()  # ends the transaction, and with it the lock

    def _holder(self, cursor: Any) -> str:
        """Who holds the lock: the session whose transaction locked the row (its xmax)."""
        cursor.execute(
            "SELECT a.application_name, a.usename, a.client_addr, a.pid, "
            "extract(epoch FROM now() - a.xact_start)::INTEGER "
            f"FROM {WRITE_LOCK_TABLE} l JOIN pg_stat_activity a ON a.backend_xid = l.xmax"
        )
        row = cursor.fetchone()
        self._connection.rollback()
        if row is None:
            return "it let go just now"
        application, role, address, pid, seconds = row
        return (
            f"held by {application or 'a session without an application_name'} (role {role}, "
            f"from {address or 'a local socket'}, backend pid {pid}, for {seconds} s)"
        )

    def close(self) -> None:
        self._connection.close()


def writer_application_name() -> str:
    """How a writer shows in pg_stat_activity: the machine and process (at most the 63
    characters PostgreSQL keeps)."""
    return f"{WRITER_APPLICATION} {socket.gethostname()} pid {os.getpid()}"[:63]


def lake_bytes(conn: duckdb.DuckDBPyConnection) -> int:
    """The size of a DuckLake's current data and delete files."""
    lake = sql_literal(current_database(conn))
    [(total,)] = conn.execute(
        "SELECT coalesce(sum(file_size_bytes + delete_file_size_bytes), 0)::BIGINT "
        f"FROM ducklake_table_info({lake})"
    ).fetchall()
    return int(total)


def current_database(conn: duckdb.DuckDBPyConnection) -> str:
    [(name,)] = conn.execute("SELECT current_database()").fetchall()
    return str(name)
