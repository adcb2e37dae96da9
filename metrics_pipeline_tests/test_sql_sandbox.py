"""Analysts' SQL reads the snapshot and nothing else of the machine, whatever its text.

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
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.known_data import Period, seed
from metrics_pipeline_tests.test_cli import cli

SECRET = "hunter2-sandbox-secret"

# {warehouse}, {snapshot}: the files to protect; {secret}: a folder holding secret.csv,
# secret.parquet and secret.json; {out}: a folder that must never be created.
pytestmark = pytest.mark.storage_kinds(
    "duckdb",
    reason="the DuckDB file's sandbox, checked byte for byte on its files; the lake's reader "
    "sandbox is test_lake_readers.py",
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
    return StorageSettings(duckdb_path=Path(warehouse.database))


@pytest.fixture
def places(warehouse: WarehouseResource, tmp_path: Path) -> dict[str, str]:
    secret = tmp_path / "secret"
    secret.mkdir()
    rows = pd.DataFrame({"user": ["root"], "password": [SECRET]})
    rows.to_csv(secret / "secret.csv", index=False)
    rows.to_parquet(secret / "secret.parquet", index=False)
    rows.to_json(secret / "secret.json", orient="records")
    return {
        "warehouse": warehouse.database,
        "snapshot": str(warehouse.snapshot_path),
        "secret": str(secret),
        "out": str(tmp_path / "out"),
    }


def _state(warehouse: WarehouseResource) -> dict[str, str]:
    """Every file next to the warehouse (the snapshot among them), with its sha256."""
    folder = Path(warehouse.database).parent
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.fixture
def untouched(
    warehouse: WarehouseResource, stored: list[Period], places: dict[str, str]
) -> Iterator[None]:
    before = _state(warehouse)
    assert {Path(warehouse.database).name, warehouse.snapshot_path.name} <= set(before)
    yield
    assert _state(warehouse) == before
    assert not Path(places["out"]).exists()
    with warehouse.reader() as conn:  # and the snapshot still reads as it did
        assert conn.execute("SELECT count(*) FROM rds_metrics").fetchone() == (len(stored),)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("untouched")
@pytest.mark.parametrize("template", ESCAPES + FILTERED)
def test_the_cli_refuses_in_one_line(
    warehouse: WarehouseResource,
    places: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    template: str,
) -> None:
    sql = template.format(**places)
    code, out, err = run_cli(capsys, "--warehouse", warehouse.database, "query", sql)
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
    assert {Path(warehouse.database).name, warehouse.snapshot_path.name} <= set(before)

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
    warehouse: WarehouseResource, stored: list[Period], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys,
        "--warehouse",
        warehouse.database,
        "query",
        "WITH per AS (SELECT instance_id, count(*) AS n FROM rds_metrics GROUP BY ALL) "
        "SELECT * FROM per ORDER BY instance_id",
        "-f",
        "csv",
    )
    read = f"metrics-pipeline: read the DuckDB file {warehouse.database} (--warehouse)\n"
    assert (code, err) == (0, read)
    counts = {i: sum(p.instance_id == i for p in stored) for i in ("orders-db", "users-db")}
    assert out.splitlines() == ["instance_id,n", *(f"{i},{n}" for i, n in counts.items())]

    for explain in ("EXPLAIN", "EXPLAIN ANALYZE", "/* plan */ EXPLAIN (FORMAT json)"):
        code, out, err = run_cli(
            capsys,
            "--warehouse",
            warehouse.database,
            "query",
            f"{explain} SELECT max(average) FROM rds_metrics WHERE instance_id = 'users-db'",
            "-f",
            "csv",
        )
        assert (code, err) == (0, read), explain
        assert out.startswith("explain_key,explain_value\n") and "rds_metrics" in out, explain
