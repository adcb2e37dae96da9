"""`metrics-pipeline` driven as a user drives it: a process, its exit code, its files."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from dagster import DagsterInstance, DagsterRun
from dagster import DagsterRunStatus as Status

from metrics_pipeline.analysts import query
from metrics_pipeline.dagster_runs import HEALING_RUN_TAGS
from metrics_pipeline.maintenance.backups import list_backups
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.lake import Lake
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import PROJECT_ROOT, hold_write_lock, peak_rss_mib
from metrics_pipeline_tests.known_data import FIRST_HOUR, Period, seed

CLI = str(Path(sys.executable).with_name("metrics-pipeline"))
START = f"{FIRST_HOUR:%Y-%m-%dT%H:%M}"
END = f"{FIRST_HOUR + timedelta(hours=6):%Y-%m-%dT%H:%M}"


@pytest.fixture
def stored(warehouse: WarehouseResource) -> list[Period]:
    return seed(warehouse)


def cli(
    warehouse: WarehouseResource, *args: str, **env_overrides: str
) -> subprocess.CompletedProcess[str]:
    # A wide terminal: help text wraps at COLUMNS, long paths included.
    env = {
        **os.environ,
        "METRICS_DUCKDB_PATH": warehouse.database,
        "COLUMNS": "400",
        **(
            {
                "METRICS_WAREHOUSE": warehouse.lake_catalog,
                "METRICS_LAKE_DATA_PATH": warehouse.lake_data_path,
            }
            if warehouse.lake
            else {}
        ),
        **env_overrides,
    }
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.e2e
def test_every_command_has_help(warehouse: WarehouseResource) -> None:
    for command in ([], ["extract"], ["health"], ["query"], ["backup"], ["backup", "restore"]):
        shown = cli(warehouse, *command, "--help")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"usage: metrics-pipeline {' '.join(command)}".rstrip())


@pytest.mark.e2e
def test_extract_to_each_format_reads_back_what_was_stored(
    warehouse: WarehouseResource, stored: list[Period], tmp_path: Path
) -> None:
    expected = {(p.instance_id, p.metric, p.ts): p.average for p in stored}

    def read_duckdb(path: Path) -> pd.DataFrame:
        with duckdb.connect(str(path), read_only=True) as conn:
            return conn.sql("SELECT * FROM rds_metrics").df()

    for suffix, read in (
        ("csv", pd.read_csv),
        ("parquet", pd.read_parquet),
        ("duckdb", read_duckdb),
    ):
        out = tmp_path / f"all.{suffix}"
        done = cli(warehouse, "extract", "--start", START, "--end", END, "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"Wrote {len(stored)} row(s) to {out}"
        frame = read(out)
        got = {
            (r.instance_id, r.metric, pd.Timestamp(r.ts).to_pydatetime()): r.average
            for r in frame.itertuples()
        }
        assert got == expected

    done = cli(
        warehouse,
        "extract",
        "--start",
        START,
        "--end",
        END,
        "-i",
        "users-db",
        "-m",
        "CPUUtilization",
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    users_cpu = [p for p in stored if p.instance_id == "users-db" and p.metric == "CPUUtilization"]
    assert [(r["ts"], r["average"]) for r in records] == [
        (p.ts.isoformat(), p.average) for p in users_cpu
    ]

    table = cli(warehouse, "instances")
    assert table.returncode == 0
    assert "orders-db" in table.stdout and "users-db" in table.stdout


@pytest.mark.e2e
def test_health_and_query_answer_on_the_terminal(
    warehouse: WarehouseResource, stored: list[Period]
) -> None:
    health = cli(warehouse, "health", "--start", START, "--end", END, "-f", "json")
    assert health.returncode == 0, health.stderr
    rows = {(r["instance_id"], r["metric"]): r for r in json.loads(health.stdout)}
    assert rows[("users-db", "CPUUtilization")]["hours_missing"] == 2
    assert rows[("orders-db", "CPUUtilization")]["hours_missing"] == 0
    orders_cpu = [p.average for p in stored if p.instance_id == "orders-db" and p.metric[0] == "C"]
    assert rows[("orders-db", "CPUUtilization")]["maximum"] == max(orders_cpu)

    counted = cli(
        warehouse,
        "query",
        "SELECT instance_id, count(*) AS n FROM rds_metrics GROUP BY 1 ORDER BY 1",
        "-f",
        "csv",
    )
    assert counted.returncode == 0, counted.stderr
    per_instance = {i: sum(p.instance_id == i for p in stored) for i in ("orders-db", "users-db")}
    assert counted.stdout.splitlines() == [
        "instance_id,n",
        *(f"{instance},{n}" for instance, n in per_instance.items()),
    ]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["extract", "-i", "nope-db"], "instance: unknown 'nope-db'"),
        (["extract", "--start", END, "--end", START], "must be after start"),
        (
            ["extract", "--tier", "raw", "--start", "2020-01-01", "--end", "2020-01-02"],
            "outside retention",
        ),
        (["extract", "--tier", "weekly"], "argument --tier: invalid choice: 'weekly'"),
        (["extract", "--start", "yesterday"], "start: 'yesterday' is not a time"),
        (["extract", "--start", "now-999999999d"], "start: 'now-999999999d' is too far back"),
        (["extract", "-o", "out.xlsx"], "output: cannot tell the format of 'out.xlsx'"),
        (["extract", "--format", "xml"], "argument -f/--format: invalid choice: 'xml'"),
        (["extract", "-f", "parquet"], "format: parquet is binary"),
        (["query", "DELETE FROM rds_metrics"], "only SELECT queries are allowed here, not DELETE"),
        (["backup", "restore", "20200101T000000Z", "--yes"], "no backup named"),
    ],
)
def test_bad_input_is_one_clear_line_and_a_non_zero_exit(
    warehouse: WarehouseResource, stored: list[Period], args: list[str], message: str
) -> None:
    done = cli(warehouse, *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("metrics-pipeline")


@pytest.mark.e2e
def test_backup_create_list_restore_from_the_command_line(
    warehouse: WarehouseResource, stored: list[Period]
) -> None:
    created = cli(warehouse, "backup", "create")
    assert created.returncode == 0, created.stderr
    # Besides the metrics: the two instances of the inventory and the schema version.
    assert created.stdout.startswith(f"Backed up {len(stored) + 3} row(s) to ")
    listed = cli(warehouse, "backup", "list", "-f", "json")
    [backup] = json.loads(listed.stdout)
    assert backup["rows"] == len(stored) + 3

    with warehouse.connect() as conn:
        conn.execute("DELETE FROM rds_metrics")
    refused = cli(warehouse, "backup", "restore", backup["name"])
    assert refused.returncode == 2
    assert "add --yes to confirm" in refused.stderr
    restored = cli(warehouse, "backup", "restore", backup["name"], "--yes")
    assert restored.returncode == 0, restored.stderr
    assert f"rds_metrics {len(stored)}" in restored.stdout
    counted = cli(warehouse, "query", "SELECT count(*) AS n FROM rds_metrics", "-f", "csv")
    assert counted.stdout.splitlines() == ["n", str(len(stored))]


@pytest.mark.e2e
def test_a_damaged_snapshot_is_one_line_and_exit_code_one(tmp_path: Path) -> None:
    warehouse = WarehouseResource(database=str(tmp_path / "metrics.duckdb"))
    warehouse.snapshot_path.write_text("not a database")
    done = cli(warehouse, "metrics")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f'metrics-pipeline: error: IO Error: The file "{warehouse.snapshot_path}" exists, '
        "but it is not a valid DuckDB database file!"
    ]
    moved = cli(warehouse, "metrics", "--warehouse", str(tmp_path))
    assert moved.returncode == 2
    assert "--warehouse: " in moved.stderr and "is a directory" in moved.stderr
    nowhere = tmp_path / "nonexistent.duckdb"
    absent = cli(warehouse, "instances", "--warehouse", str(nowhere))
    assert absent.returncode == 1
    assert absent.stderr.strip().splitlines() == [
        "metrics-pipeline: error: No warehouse snapshot at "
        f"{tmp_path / 'nonexistent.snapshot.duckdb'} yet: the pipeline publishes it after "
        "its first write (check METRICS_DUCKDB_PATH, or materialize rds_instances first)."
    ]


@pytest.mark.e2e
def test_help_names_the_warehouse_it_would_read(warehouse: WarehouseResource) -> None:
    shown = cli(warehouse, "instances", "--help")
    configured = warehouse.lake.label if warehouse.lake else warehouse.database
    assert f"instead of the configured one (here {configured})" in " ".join(shown.stdout.split())


@pytest.mark.e2e
def test_every_read_says_which_warehouse_it_read(
    warehouse: WarehouseResource, stored: list[Period], tmp_path: Path
) -> None:
    """On stderr, after the output: a shell that lacks the lake's settings reads the DuckDB
    file, and the user sees it."""
    if warehouse.lake:
        lake = Lake(warehouse.lake_catalog, warehouse.lake_data_path)
        read = f"metrics-pipeline: read the lake {lake.label} (METRICS_WAREHOUSE)"
    else:
        read = f"metrics-pipeline: read the DuckDB file {warehouse.database} (METRICS_DUCKDB_PATH)"
    for command in (["instances"], ["metrics"], ["health"], ["query", "SELECT 1 AS one"]):
        done = cli(warehouse, *command, "-f", "csv")
        assert done.returncode == 0, done.stderr
        # health's CSV goes with the look-back's progress on stderr, first.
        said = [line for line in done.stderr.splitlines() if not line.startswith("history: ")]
        assert said == [read], command
    extracted = cli(
        warehouse, "extract", "--start", START, "--end", END, "-o", str(tmp_path / "x.csv")
    )
    assert extracted.stderr.splitlines() == [
        "metrics-pipeline: extract read the raw tier (rds_metrics): the range is within its 7 days",
        read,
    ]

    elsewhere = tmp_path / "elsewhere.duckdb"
    elsewhere_warehouse = WarehouseResource(database=str(elsewhere))
    seed(elsewhere_warehouse)
    chosen = cli(warehouse, "--warehouse", str(elsewhere), "instances", "-f", "csv")
    assert chosen.stderr.splitlines() == [
        f"metrics-pipeline: read the DuckDB file {elsewhere} (--warehouse)"
    ]


@pytest.mark.e2e
@pytest.mark.storage_kinds(
    "duckdb",
    reason="holds the DuckDB file's write lock; a lake's writers wait on its catalog "
    "(test_lake.py)",
)
def test_a_restore_is_refused_while_a_writer_holds_the_warehouse(
    warehouse: WarehouseResource, stored: list[Period]
) -> None:
    assert cli(warehouse, "backup", "create").returncode == 0
    [backup] = list_backups(warehouse.backups_path)
    writer = hold_write_lock(warehouse.database, 60)
    try:
        refused = cli(warehouse, "backup", "restore", backup.name, "--yes")
    finally:
        writer.kill()
        writer.wait()
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"metrics-pipeline: error: restore: the warehouse {warehouse.database} is being written "
        "by another process (a collection in progress?); nothing was restored. Try again when "
        "it is done, or add --force to wait up to 120 s for it."
    )


@pytest.mark.e2e
def test_health_on_a_terminal_says_how_far_the_history_is_then_fits_100_columns(
    warehouse: WarehouseResource, stored: list[Period], tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        # With the tags the daemon gives a run of a healing job.
        instance.add_run(
            DagsterRun(
                job_name="healing_job",
                run_id=str(uuid.uuid4()),
                status=Status.STARTED,
                tags=HEALING_RUN_TAGS,
            )
        )

    health = cli(warehouse, "health", "--start", START, "--end", END, DAGSTER_HOME=str(home))

    assert health.returncode == 0, health.stderr
    lines = health.stdout.splitlines()
    # The seeded inventory last saw both instances at the end of the seeded hours, two days ago.
    assert re.fullmatch(
        r"history: \d+ of \d+ hours for 2 instances; a healing run is in progress", lines[0]
    ), lines[0]
    assert max(len(line) for line in lines) <= 100, health.stdout
    users = lines.index("users-db (123456789012, eu-west-1): 6 hours expected")
    header, cpu, storage, missing = lines[users + 1 : users + 5]
    assert header.split() == [
        "metric", "unit", "minimum", "average", "maximum", "p95", "periods", "missing", "empty"
    ]  # fmt: skip
    cpu_values = [p.average for p in stored if p.instance_id == "users-db" and p.metric[0] == "C"]
    assert cpu.split() == [
        "CPUUtilization", "Percent", f"{min(cpu_values):.2f}",
        f"{sum(cpu_values) / len(cpu_values):.2f}", f"{max(cpu_values):.2f}",
        cpu.split()[5], str(len(cpu_values)), "2", "0",
    ]  # fmt: skip
    free = [p.average for p in stored if p.instance_id == "users-db" and p.metric[0] == "F"]
    assert storage.split()[:5] == [
        "FreeStorageSpace", "GiB", f"{min(free) / 1024**3:.2f}",
        f"{sum(free) / len(free) / 1024**3:.2f}", f"{max(free) / 1024**3:.2f}",
    ]  # fmt: skip
    first, last = FIRST_HOUR + timedelta(hours=2), FIRST_HOUR + timedelta(hours=3)
    assert missing in (
        f"  missing hours: {first:%Y-%m-%d %H:%M}..{last:%H:%M}",
        f"  missing hours: {first:%Y-%m-%d %H:%M}..{last:%Y-%m-%d %H:%M}",  # across midnight
    )

    as_json = cli(warehouse, "health", "--start", START, "--end", END, "-f", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert len(json.loads(as_json.stdout)) == 4  # stdout stays JSON; the line went to stderr
    progress, read = as_json.stderr.splitlines()
    assert re.fullmatch(r"history: \d+ of \d+ hours for 2 instances; [a-z ]+", progress)
    assert read.startswith("metrics-pipeline: read the ")


@pytest.mark.e2e
def test_a_restore_is_refused_while_dagster_shows_runs_in_progress(
    warehouse: WarehouseResource, stored: list[Period], tmp_path: Path
) -> None:
    assert cli(warehouse, "backup", "create").returncode == 0
    [backup] = list_backups(warehouse.backups_path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        run = instance.add_run(
            DagsterRun(job_name="healing_job", run_id=str(uuid.uuid4()), status=Status.STARTED)
        )
    with warehouse.connect() as conn:
        conn.execute("DELETE FROM rds_metrics")

    refused = cli(warehouse, "backup", "restore", backup.name, "--yes", DAGSTER_HOME=str(home))
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"metrics-pipeline: error: restore: 1 run(s) in progress in Dagster (healing_job "
        f"{run.run_id[:8]}); a restore now would remove what they write. Try again when they "
        "finish, or add --force."
    )
    forced = cli(
        warehouse, "backup", "restore", backup.name, "--yes", "--force", DAGSTER_HOME=str(home)
    )
    assert forced.returncode == 0, forced.stderr
    with warehouse.reader() as conn:
        assert conn.execute("SELECT count(*) FROM rds_metrics").fetchone() == (len(stored),)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "METRICS_BACKUP_DIR",
            "/etc/hostname",
            "METRICS_BACKUP_DIR: '/etc/hostname' is a file, not a folder",
        ),
        (
            "METRICS_QUERY_MEMORY_LIMIT",
            "99999999999999TB",
            "METRICS_QUERY_MEMORY_LIMIT: '99999999999999TB' is more than DuckDB can take",
        ),
    ],
)
def test_a_setting_that_cannot_work_is_refused_at_the_start_naming_it(
    warehouse: WarehouseResource, stored: list[Period], variable: str, value: str, message: str
) -> None:
    for command in (["backup", "list"], ["backup", "create"], ["query", "SELECT 1"]):
        done = cli(warehouse, *command, **{variable: value})
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"metrics-pipeline: error: {message}")
        assert len(done.stderr.strip().splitlines()) == 1
        assert done.stdout == ""


@pytest.mark.e2e
@pytest.mark.storage_kinds(
    "duckdb", reason="the DuckDB file and its snapshot as output targets; a lake has neither"
)
def test_output_never_replaces_the_warehouse_its_snapshot_its_backups_or_a_database(
    warehouse: WarehouseResource, stored: list[Period], tmp_path: Path
) -> None:
    assert cli(warehouse, "backup", "create").returncode == 0
    [backup] = list_backups(Path(warehouse.database).parent / "backups")
    a_copy = tmp_path / "copy.duckdb"
    shutil.copyfile(warehouse.database, a_copy)
    kept = [Path(warehouse.database), warehouse.snapshot_path, backup.path / "x.csv", a_copy]
    before = {path: path.read_bytes() for path in kept if path.exists()}
    for target in kept:
        for command in (["extract", "--start", START], ["query", "SELECT 1"]):
            done = cli(warehouse, *command, "-f", "csv", "-o", str(target), "--force")
            assert done.returncode == 2, done.stderr
            assert done.stderr.strip().splitlines() == [
                f"metrics-pipeline: error: output: '{target}' is "
                + (
                    "a DuckDB database"
                    if target == a_copy
                    else "the warehouse's (its DuckDB file, snapshot or backups)"
                )
                + "; refusing to write over it, even with --force."
            ]
    assert {path: path.read_bytes() for path in kept if path.exists()} == before
    assert not (backup.path / "x.csv").exists()
    counted = cli(warehouse, "query", "SELECT count(*) AS n FROM rds_metrics", "-f", "csv")
    assert counted.stdout.splitlines() == ["n", str(len(stored))]


@pytest.mark.e2e
def test_output_replaces_an_existing_file_only_with_force_and_never_through_a_link(
    warehouse: WarehouseResource, stored: list[Period], tmp_path: Path
) -> None:
    existing = tmp_path / "existing.csv"
    existing.write_text("keep me\n")
    refused = cli(warehouse, "query", "SELECT 1 AS one", "-o", str(existing))
    assert refused.returncode == 2
    assert refused.stderr == (
        f"metrics-pipeline: error: output: '{existing}' exists; add --force to replace it.\n"
    )
    assert existing.read_text() == "keep me\n"
    replaced = cli(warehouse, "query", "SELECT 1 AS one", "-o", str(existing), "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert existing.read_text() == "one\n1\n"
    assert existing.stat().st_mode & 0o777 == 0o600

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "target.csv").write_text("not yours\n")
    links = {tmp_path / "to-a-file.csv": elsewhere / "target.csv"}
    links[tmp_path / "to-nothing.csv"] = elsewhere / "absent.csv"
    for link, target in links.items():
        link.symlink_to(target)
        for force in ([], ["--force"]):
            done = cli(warehouse, "extract", "--start", START, "-o", str(link), *force)
            assert done.returncode == 2
            assert done.stderr == (
                f"metrics-pipeline: error: output: '{link}' is a symbolic link; refusing to "
                "write through it, name a file instead.\n"
            )
        assert link.is_symlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["target.csv"]
    assert (elsewhere / "target.csv").read_text() == "not yours\n"


@pytest.mark.e2e
def test_output_goes_into_an_existing_folder_owner_only(
    warehouse: WarehouseResource, stored: list[Period], tmp_path: Path
) -> None:
    missing = tmp_path / "missing" / "dir"
    done = cli(warehouse, "extract", "--start", START, "-o", str(missing / "x.csv"))
    assert done.returncode == 2
    assert done.stderr == (
        f"metrics-pipeline: error: output: the folder '{missing}' does not exist; create it "
        "first, or name a file in an existing folder.\n"
    )
    assert not missing.parent.exists()
    usual = os.umask(0o022)  # the usual umask: files readable by all unless made otherwise
    try:
        for name, fmt in (
            ("a.csv", []),
            ("a.json", []),
            ("a.parquet", []),
            ("a.txt", ["-f", "table"]),
        ):
            for command in (["instances"], ["extract", "--start", START], ["query", "SELECT 1"]):
                out = tmp_path / f"{command[0]}-{name}"
                written = cli(warehouse, *command, "-o", str(out), *fmt)
                assert written.returncode == 0, written.stderr
                assert out.stat().st_mode & 0o777 == 0o600, out
    finally:
        os.umask(usual)


@pytest.mark.e2e
def test_a_query_stopped_midway_leaves_no_file(
    warehouse: WarehouseResource, stored: list[Period], tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    done = cli(
        warehouse,
        "query",
        "SELECT * FROM range(10000000000000)",
        "-o",
        str(folder / "rows.csv"),
        METRICS_QUERY_TIMEOUT_SECONDS="2",
    )
    assert done.returncode == 1
    assert "METRICS_QUERY_TIMEOUT_SECONDS" in done.stderr
    assert list(folder.iterdir()) == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM range(10000000000000)",
        "WITH RECURSIVE t(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM t) SELECT count(*) FROM t",
        "SELECT * FROM range(10000000000000)",
    ],
    ids=["count", "recursive", "streamed"],
)
def test_a_query_past_its_time_limit_stops_with_one_line(
    warehouse: WarehouseResource, stored: list[Period], sql: str
) -> None:
    done = cli(warehouse, "query", sql, "-f", "csv", METRICS_QUERY_TIMEOUT_SECONDS="1")
    assert done.returncode == 1
    assert done.stderr == (
        "metrics-pipeline: error: sql: stopped after 1 s, the time limit of "
        "METRICS_QUERY_TIMEOUT_SECONDS; narrow the query (a time range, a LIMIT) or raise "
        "the limit.\n"
    )


def run_measured(warehouse: WarehouseResource, *args: str, **env: str) -> tuple[int, str, int]:
    """The command's exit code, stderr and peak resident memory (bytes), of it alone: measured
    from a small launcher (peak_rss_mib), since wait4's maxrss of a child of this process would
    start from pytest's own peak."""
    code, peak_mib, stderr = peak_rss_mib(
        [CLI, *args], {**os.environ, "METRICS_DUCKDB_PATH": warehouse.database, **env}
    )
    return code, stderr, int(peak_mib * 2**20)


@pytest.mark.storage_kinds(
    "duckdb",
    reason="measures the command's process memory bound, which does not depend on the "
    "storage kind; one kind is enough for a measurement this heavy",
)
@pytest.mark.e2e
@pytest.mark.parametrize(
    "sql",
    [
        # One string outside DuckDB's buffer manager: 5.9 GB under a 1 GB memory_limit.
        "SELECT length(repeat('x', 3000000000))",
        "SELECT list(i) FROM range(200000000) t(i)",
    ],
    ids=["one-string", "one-list"],
)
def test_a_query_is_held_to_its_memory_bound(
    warehouse: WarehouseResource, stored: list[Period], sql: str
) -> None:
    limit = {"METRICS_QUERY_MEMORY_LIMIT": "300MB"}
    bound = query.process_memory_bound(StorageSettings.from_env(limit))
    code, stderr, peak = run_measured(warehouse, "query", sql, **limit)
    assert code == 1
    [line] = stderr.splitlines()
    assert line.startswith("metrics-pipeline: error: sql: Out of Memory Error")
    assert line.endswith(
        f"(a query may use METRICS_QUERY_MEMORY_LIMIT=300MB, the command {bound // 2**20} MiB "
        "in all; narrow the query or raise the limit)"
    )
    print(f"peak {peak / 2**20:.0f} MiB, bound {bound / 2**20:.0f} MiB")
    assert peak < bound


def holds_open(pid: int, path: Path) -> bool:
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            if os.readlink(fd) == str(path.resolve()):
                return True
    return False


@pytest.mark.e2e
@pytest.mark.storage_kinds(
    "duckdb", reason="waits until the command holds the DuckDB file's snapshot open"
)
def test_ctrl_c_stops_a_long_query_with_one_line_and_exit_code_130(
    warehouse: WarehouseResource, stored: list[Period]
) -> None:
    process = subprocess.Popen(
        [CLI, "query", "SELECT count(*) FROM range(10000000000000)"],
        env={**os.environ, "METRICS_DUCKDB_PATH": warehouse.database},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Once it holds the snapshot open, the query is about to run or running.
        while not holds_open(process.pid, warehouse.snapshot_path):
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert stderr == "metrics-pipeline: error: interrupted\n"
    assert stdout == ""
