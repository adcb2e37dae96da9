"""Analysts' SQL reads the snapshot and nothing else of the machine, whatever its text: on
the DuckDB file, and on a lake on this machine (a catalog file, whose published copy readers
open, and a data folder, which DuckDB's sandbox alone would let them overwrite).

Every hostile query is tried twice: through `metrics-pipeline query` (one line on stderr, a
non-zero exit), and straight on query.connect(), past the statement filter, where the
sandbox alone must refuse it. Either way the warehouse and the snapshot stay byte for byte
what they were, nothing appears next to them, and no secret reaches the output.
"""

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from metrics_pipeline.analysts import query
from metrics_pipeline.analysts.cli import USAGE_ERROR, main
from metrics_pipeline.settings import StorageSettings, snapshot_path_for
from metrics_pipeline.warehouse.read_only_folder import PREFIX
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.known_data import Period, seed
from metrics_pipeline_tests.test_cli import cli

SECRET = "hunter2-sandbox-secret"

# {warehouse}, {snapshot}: the files to protect (a lake's catalog file and its copy);
# {data_file}, {data}: a lake's live data file and folder (the snapshot and its folder on the
# DuckDB file); {secret}: a folder holding secret.csv, secret.parquet and secret.json; {out}:
# a folder that must never be created.
pytestmark = pytest.mark.storage_kinds(
    "duckdb",
    "local_lake",
    reason="sandboxes on this machine's files, checked byte for byte; a lake's on PostgreSQL "
    "and S3 is test_lake_readers.py",
)

ESCAPES = [
    pytest.param("SELECT * FROM read_text('{secret}/secret.csv')", id="read_text"),
    pytest.param("SELECT * FROM read_blob('{secret}/secret.csv')", id="read_blob"),
    pytest.param("SELECT * FROM read_csv('{secret}/secret.csv')", id="read_csv"),
    pytest.param("SELECT * FROM '{secret}/secret.csv'", id="file_as_table"),
    pytest.param("SELECT * FROM read_parquet('{secret}/secret.parquet')", id="read_parquet"),
    pytest.param("SELECT * FROM read_json('{secret}/secret.json')", id="read_json"),
    pytest.param("SELECT * FROM glob('{secret}/*')", id="glob"),
    pytest.param("SELECT * FROM read_text('http://127.0.0.1:9/secret')", id="http"),
    pytest.param("SELECT * FROM read_blob('{snapshot}')", id="read_snapshot_bytes"),
    pytest.param("ATTACH '{warehouse}' AS w", id="attach_warehouse"),
    pytest.param("ATTACH '{warehouse}' AS w (READ_WRITE)", id="attach_warehouse_read_write"),
    pytest.param("COPY (SELECT 'garbage' AS x) TO '{warehouse}' (FORMAT csv)", id="copy_to"),
    pytest.param(
        "COPY (SELECT 'garbage' AS x) TO '{snapshot}' (FORMAT csv, USE_TMP_FILE false)",
        id="copy_over_snapshot",
    ),
    pytest.param("COPY (SELECT 'garbage' AS x) TO '{snapshot}.wal'", id="copy_to_snapshot_wal"),
    pytest.param(
        "COPY (SELECT 'garbage' AS x) TO '{data_file}' (FORMAT parquet)", id="copy_over_data_file"
    ),
    pytest.param(
        "COPY (SELECT 'garbage' AS x) TO '{data_file}' (FORMAT parquet, USE_TMP_FILE false)",
        id="copy_over_data_file_in_place",
    ),
    pytest.param(
        "COPY (SELECT 'garbage' AS x) TO '{read_only_data}/x.parquet' (FORMAT parquet)",
        id="copy_into_data_folder",
    ),
    pytest.param(
        "COPY (SELECT 'garbage' AS x) TO '{read_only_data_file}' (FORMAT parquet, "
        "USE_TMP_FILE false)",
        id="copy_over_data_file_as_readers_name_it",
    ),
    pytest.param("SELECT * FROM read_blob('{read_only_data}/../*')", id="data_folder_parent"),
    pytest.param(
        "SELECT * FROM read_text('{read_only_data}/../../secret/secret.csv')",
        id="out_of_the_data_folder",
    ),
    pytest.param("SELECT * FROM sqlite_scan('{warehouse}', 'x')", id="sqlite_scan"),
    pytest.param(
        "EXPLAIN ANALYZE COPY (SELECT 'garbage' AS x) TO '{warehouse}' (FORMAT csv)",
        id="explain_analyze_copy_to_warehouse",
    ),
    pytest.param(
        "EXPLAIN ANALYZE COPY (SELECT 'garbage' AS x) TO '{snapshot}' "
        "(FORMAT csv, USE_TMP_FILE false)",
        id="explain_analyze_copy_to_snapshot",
    ),
    pytest.param("EXPLAIN ANALYZE DELETE FROM rds_metrics", id="explain_analyze_delete"),
    pytest.param("EXPORT DATABASE '{out}'", id="export_database"),
    pytest.param(
        "WITH d AS (DELETE FROM rds_metrics RETURNING *) SELECT * FROM d", id="writing_cte"
    ),
    pytest.param("DELETE FROM rds_metrics", id="delete"),
    pytest.param("INSTALL httpfs", id="install"),
    pytest.param("LOAD httpfs", id="load"),
    pytest.param("SET enable_external_access = true", id="set_external_access"),
    pytest.param("RESET enable_external_access", id="reset_external_access"),
    pytest.param("SET lock_configuration = false", id="unlock_configuration"),
    pytest.param("SET allowed_directories = ['/']", id="set_allowed_directories"),
    pytest.param("SET temp_directory = '{out}'", id="set_temp_directory"),
    pytest.param("SET profiling_output = '{out}/profile.txt'", id="set_profiling_output"),
    pytest.param("PRAGMA profiling_output = '{out}/profile.txt'", id="pragma_profiling_output"),
    pytest.param("PRAGMA threads = 1", id="pragma_threads"),
    pytest.param("SET memory_limit = '1TB'", id="set_memory_limit"),
    pytest.param("SELECT 1; -- only a select\nDELETE FROM rds_metrics", id="after_line_comment"),
    pytest.param(
        "/* a harmless select */ COPY rds_metrics TO '{warehouse}' (FORMAT csv)",
        id="after_block_comment",
    ),
    pytest.param("SELECT 'a;b' AS x; DELETE FROM rds_metrics", id="semicolon_in_string"),
    pytest.param("SELECT '--' AS x; ATTACH '{warehouse}' AS w", id="comment_in_string"),
    pytest.param(
        "SELECT 'it''s; /*' AS x; COPY (SELECT 1) TO '{snapshot}' (USE_TMP_FILE false)",
        id="escaped_quote_in_string",
    ),
]
# Refused by the CLI's statement filter; harmless in the sandbox, which lets them run.
FILTERED = [
    pytest.param("SELECT 1; SELECT 2", id="two_selects"),
    pytest.param("PRAGMA enable_profiling", id="pragma_enable_profiling"),
    pytest.param("CALL enable_logging(storage='file', storage_path='{out}')", id="call_logging"),
    pytest.param("ATTACH ':memory:' AS scratch", id="attach_memory"),
    pytest.param("CHECKPOINT", id="checkpoint"),
]


@pytest.fixture
def stored(warehouse: WarehouseResource) -> list[Period]:
    return seed(warehouse)


@pytest.fixture
def storage(warehouse: WarehouseResource) -> StorageSettings:
    lake = warehouse.lake
    return StorageSettings(
        duckdb_path=Path(warehouse.database),
        warehouse=lake.catalog if lake else None,
        lake_data_path=lake.data_path if lake else None,
    )


@pytest.fixture
def places(warehouse: WarehouseResource, stored: list[Period], tmp_path: Path) -> dict[str, str]:
    secret = tmp_path / "secret"
    secret.mkdir()
    rows = pd.DataFrame({"user": ["root"], "password": [SECRET]})
    rows.to_csv(secret / "secret.csv", index=False)
    rows.to_parquet(secret / "secret.parquet", index=False)
    rows.to_json(secret / "secret.json", orient="records")
    lake = warehouse.lake
    if lake and lake.catalog_file:
        data_file = str(min(Path(lake.data_path).rglob("*.parquet")))
        catalog, copy = str(lake.catalog_file), str(snapshot_path_for(lake.catalog_file))
        data = lake.data_path.rstrip("/")
    else:
        catalog, copy = warehouse.database, str(warehouse.snapshot_path)
        data_file, data = copy, str(warehouse.snapshot_path.parent)
    return {
        "warehouse": catalog,
        "snapshot": copy,
        "data_file": data_file,
        "data": data,
        "read_only_data": PREFIX + data,
        "read_only_data_file": PREFIX + data_file,
        "secret": str(secret),
        "out": str(tmp_path / "out"),
    }


def _state(warehouse: WarehouseResource) -> dict[str, str]:
    """Every file in the warehouse's folder (the snapshot and a lake's data among them), with
    its sha256."""
    folder = Path(warehouse.database).parent
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def _protected(places: dict[str, str], warehouse: WarehouseResource) -> set[str]:
    folder = Path(warehouse.database).parent
    return {
        str(Path(places[name]).relative_to(folder))
        for name in ("warehouse", "snapshot", "data_file")
    }


@pytest.fixture
def untouched(
    warehouse: WarehouseResource, stored: list[Period], places: dict[str, str]
) -> Iterator[None]:
    before = _state(warehouse)
    assert _protected(places, warehouse) <= set(before)
    yield
    assert _state(warehouse) == before
    assert not Path(places["out"]).exists()
    with warehouse.reader() as conn:  # and the snapshot still reads as it did
        assert conn.execute("SELECT count(*) FROM rds_metrics").fetchone() == (len(stored),)


@pytest.fixture
def chosen(warehouse: WarehouseResource, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The CLI's arguments that name the warehouse: --warehouse for the DuckDB file; a lake
    is named by its settings, set here."""
    if warehouse.lake:
        monkeypatch.setenv("METRICS_WAREHOUSE", warehouse.lake_catalog)
        monkeypatch.setenv("METRICS_LAKE_DATA_PATH", warehouse.lake_data_path)
        return []
    return ["--warehouse", warehouse.database]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("untouched")
@pytest.mark.parametrize("template", ESCAPES + FILTERED)
def test_the_cli_refuses_in_one_line(
    chosen: list[str],
    places: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    template: str,
) -> None:
    sql = template.format(**places)
    code, out, err = run_cli(capsys, *chosen, "query", sql)
    assert code == USAGE_ERROR
    assert err.startswith("metrics-pipeline: error: sql: ")
    assert err.count("\n") == 1 and err.endswith("\n")
    assert SECRET not in out + err
    assert "garbage" not in out


@pytest.mark.e2e
@pytest.mark.usefixtures("untouched")
@pytest.mark.parametrize(
    ("template", "message"),
    [
        pytest.param(
            "EXPLAIN ANALYZE COPY (SELECT 'garbage' AS x) TO '{warehouse}' (FORMAT csv)",
            "EXPLAIN of a SELECT only, not of COPY",
            id="explain_analyze_copy",
        ),
        pytest.param(
            "SELECT * FROM read_text('{secret}/secret.csv')",
            "queries see the warehouse snapshot only",
            id="read_text",
        ),
        pytest.param("SET enable_external_access = true", "not SET", id="set"),
    ],
)
def test_the_installed_command_refuses_in_one_line(
    warehouse: WarehouseResource, places: dict[str, str], template: str, message: str
) -> None:
    done = cli(warehouse, "query", template.format(**places))
    assert done.returncode == USAGE_ERROR
    [line] = done.stderr.splitlines()
    assert line.startswith("metrics-pipeline: error: sql: ") and message in line
    assert SECRET not in done.stdout + done.stderr
    assert done.stdout == ""


@pytest.mark.usefixtures("untouched")
@pytest.mark.parametrize("template", ESCAPES)
def test_the_sandbox_alone_refuses(
    storage: StorageSettings, places: dict[str, str], template: str
) -> None:
    with query.connect(storage) as conn:
        with pytest.raises(duckdb.Error) as refused:
            conn.execute(template.format(**places)).fetchall()
        assert SECRET not in str(refused.value)
        # The connection is still a working reader afterwards.
        assert conn.execute("SELECT count(DISTINCT instance_id) FROM rds_metrics").fetchone() == (
            2,
        )


@pytest.mark.parametrize("template", FILTERED)
def test_what_the_sandbox_lets_run_is_harmless(
    warehouse: WarehouseResource,
    storage: StorageSettings,
    stored: list[Period],
    places: dict[str, str],
    template: str,
) -> None:
    """What the sandbox does not refuse may run or fail, but changes no file, writes no output
    and leaves the snapshot reading as it did."""
    before = _state(warehouse)
    assert _protected(places, warehouse) <= set(before)

    with query.connect(storage) as conn, contextlib.suppress(duckdb.Error):
        conn.execute(template.format(**places)).fetchall()

    assert _state(warehouse) == before
    assert not Path(places["out"]).exists()
    with warehouse.reader() as conn:
        assert conn.execute("SELECT count(*) FROM rds_metrics").fetchone() == (len(stored),)


@pytest.mark.usefixtures("untouched")
def test_query_connect_reads_the_snapshot_and_nothing_else(
    storage: StorageSettings, stored: list[Period], places: dict[str, str]
) -> None:
    with query.connect(storage) as conn:
        with pytest.raises(duckdb.PermissionException):
            conn.execute(f"ATTACH '{places['warehouse']}' AS w (READ_WRITE)")
        with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
            conn.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.PermissionException):
            conn.execute(f"SELECT * FROM read_text('{places['secret']}/secret.csv')").fetchall()

        frame = conn.execute(
            "SELECT instance_id, metric, ts, average FROM rds_metrics ORDER BY ALL"
        ).df()
        got = {
            (r.instance_id, r.metric, r.ts.to_pydatetime()): r.average for r in frame.itertuples()
        }
        assert got == {(p.instance_id, p.metric, p.ts): p.average for p in stored}

        # A notebook's own DataFrame, registered, still joins with the warehouse.
        conn.register("wanted", pd.DataFrame({"instance_id": ["users-db"]}))
        [(rows,)] = conn.execute(
            "SELECT count(*) FROM rds_metrics JOIN wanted USING (instance_id)"
        ).fetchall()
        assert rows == sum(p.instance_id == "users-db" for p in stored)


@pytest.mark.usefixtures("untouched")
def test_explain_and_a_cte_still_answer(
    warehouse: WarehouseResource,
    chosen: list[str],
    stored: list[Period],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(
        capsys,
        *chosen,
        "query",
        "WITH per AS (SELECT instance_id, count(*) AS n FROM rds_metrics GROUP BY ALL) "
        "SELECT * FROM per ORDER BY instance_id",
        "-f",
        "csv",
    )
    lake = warehouse.lake
    read = "metrics-pipeline: " + (
        f"read the lake {lake.label} (METRICS_WAREHOUSE)\n"
        if lake
        else f"read the DuckDB file {warehouse.database} (--warehouse)\n"
    )
    assert (code, err) == (0, read)
    counts = {i: sum(p.instance_id == i for p in stored) for i in ("orders-db", "users-db")}
    assert out.splitlines() == ["instance_id,n", *(f"{i},{n}" for i, n in counts.items())]

    for explain in ("EXPLAIN", "EXPLAIN ANALYZE", "/* plan */ EXPLAIN (FORMAT json)"):
        code, out, err = run_cli(
            capsys,
            *chosen,
            "query",
            f"{explain} SELECT max(average) FROM rds_metrics WHERE instance_id = 'users-db'",
            "-f",
            "csv",
        )
        assert (code, err) == (0, read), explain
        assert out.startswith("explain_key,explain_value\n") and "rds_metrics" in out, explain
