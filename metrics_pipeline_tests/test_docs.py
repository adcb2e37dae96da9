"""The docs match the code: the configuration reference is the settings model's, every link
between the README and the docs pages leads somewhere, and the documented queries answer
right on a warehouse of two accounts."""

import ast
import grp
import importlib.util
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from dagster._core.instance.config import dagster_instance_config

from metrics_pipeline.analysts import query
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.settings import StorageSettings, load_settings
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.sql import in_transaction
from metrics_pipeline_tests.helpers import PROJECT_ROOT, settings_for_tests
from metrics_pipeline_tests.known_data import FIRST_HOUR, seed
from metrics_pipeline_tests.moto_fleet import ACCOUNT_ID

OTHER_ACCOUNT = "222222222222"

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_setting_is_in_the_configuration_reference() -> None:
    code = "".join(p.read_text() for p in (PROJECT_ROOT / "metrics_pipeline").rglob("*.py"))
    read = set(re.findall(r'"(METRICS_[A-Z_]+)"', code))
    reference = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(METRICS_[A-Z_]+)` \|", reference, re.M))
    assert read == documented


def test_the_configuration_reference_is_generated_from_the_settings_model() -> None:
    spec = importlib.util.spec_from_file_location(
        "update_settings_reference", PROJECT_ROOT / "scripts" / "update_settings_reference.py"
    )
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    page = script.PAGE.read_text()
    assert script.with_reference(page) == page, (
        "docs/operations.md differs from the settings model: run "
        "python scripts/update_settings_reference.py"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_lead_somewhere(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: no heading for {target}"


def documented_queries() -> list[str]:
    """The SQL the analysts' page and the README show: SQL blocks, `metrics-pipeline query`
    commands and `query.run_sql(...)` calls."""
    found = []
    for page in (PROJECT_ROOT / "docs" / "analysts.md", PROJECT_ROOT / "README.md"):
        text = page.read_text()
        found += re.findall(r"```sql\n(.*?)```", text, re.S)
        found += re.findall(r'metrics-pipeline query "([^"]+)"', text)
        for call in re.findall(r"run_sql\(((?:\s*\"[^\"]*\")+)\s*\)", text):
            found.append(ast.literal_eval(f"({call.strip()})"))
    return found


def test_the_documented_queries_keep_two_accounts_instances_apart(tmp_path: Path) -> None:
    """scripts/start.sh runs two accounts, each with an orders-db: every documented query
    about instances answers for each account what it answers with that account alone."""
    alone = WarehouseResource(database=str(tmp_path / "alone" / "metrics.duckdb"))
    both = WarehouseResource(database=str(tmp_path / "both" / "metrics.duckdb"))
    seed(alone)
    seed(both)
    with both.connect() as conn:  # another account's orders-db, with other values

        def add_account() -> None:
            for table, changed in (
                ("rds_instances", ""),
                ("rds_metrics", ", average * 3 + 11 AS average, maximum * 2 AS maximum"),
            ):
                conn.execute(
                    f"INSERT INTO {table} SELECT * REPLACE ('{OTHER_ACCOUNT}' AS account_id"
                    f"{changed}) FROM {table} WHERE instance_id = 'orders-db'"
                )

        in_transaction(conn, add_account)

    checked = 0
    for sql in documented_queries():
        if "instance_id" not in sql:
            continue
        try:
            expected = query.run_sql(sql, StorageSettings(duckdb_path=Path(alone.database)))
        except query.QueryError as error:
            assert "does not exist" in str(error)  # a report table the seed does not write
            continue
        got = query.run_sql(sql, StorageSettings(duckdb_path=Path(both.database)))
        assert "account_id" in got.columns, f"no account_id, accounts merged in:\n{sql}"
        mine = got[got["account_id"] == ACCOUNT_ID]
        pd.testing.assert_frame_equal(
            mine.sort_values(list(mine.columns)).reset_index(drop=True),
            expected.sort_values(list(expected.columns)).reset_index(drop=True),
            obj=sql,
        )
        checked += 1
    assert checked >= 6


# Every command and example the README and docs/ show runs in a test: the cheap ones below, in
# this process against a seeded warehouse; the others in the test named in COVERED, whose
# source holds the command (checked below); the rest are EXEMPT, each with the reason.


@dataclass(frozen=True)
class Command:
    page: str
    text: str  # as documented, continuation lines joined, comment dropped


# Where a doc writes an example value, the value the tests use instead.
PLACEHOLDERS = {
    "…": "the SQL of the example",
    "2026-11-25": "the seeded day",
    "2026-11-26": "the day after the seeded day",
    "2026-11-26-09:00": "an hour the test collects",
    "20261126T004000Z": "a backup the test made",
    "NAME": "a backup the test made",
    "N": "a fleet size",
    "analysts": "a group of this machine",
    "shop-aurora-1": "an instance of the local fleet",
}

# Program name → what the tests call it by, for COVERED's check.
PROGRAMS = {
    "metrics-pipeline": "CLI",
    "dagster": "DAGSTER",
    "dagster-daemon": "DAGSTER_DAEMON",
    "dagster-webserver": "DAGSTER_WEBSERVER",
    "python": "sys.executable",
}

# A command → the test (file::function, or a fixture or helper) that runs it, or the script
# that runs it (scripts/test.sh: what CI runs).
COVERED = {
    "ruff check": "scripts/test.sh",
    "ruff format --check": "scripts/test.sh",
    "dg check defs": "scripts/test.sh",
    "bash scripts/start.sh": "test_start_end_to_end.py::start",
    "bash scripts/start.sh --scale-out": "test_scale_out_end_to_end.py::stack",
    "python3 -m venv .venv": (
        "test_runtime_install.py::test_each_script_installs_its_extra_into_a_new_venv"
    ),
    "mkdir -p .dagster && ln -sf ../dagster.yaml .dagster/dagster.yaml": (
        "test_docs.py::test_the_documented_dagster_home_holds_the_projects_instance"
    ),
    '.venv/bin/python -m pip install -e ".[dev]"': (
        "test_runtime_install.py::test_each_script_installs_its_extra_into_a_new_venv"
    ),
    "metrics-pipeline migrate-to-lake": (
        "test_lake.py::test_a_duckdb_warehouse_moves_into_a_lake_with_every_row"
    ),
    "metrics-pipeline migrate-to-lake --warehouse data/metrics.duckdb": (
        "test_local_lake.py::test_an_earlier_duckdb_file_moves_into_the_default_lake"
    ),
    ".venv/bin/dagster asset materialize -m metrics_pipeline.definitions --select rds_instances": (
        "test_cli_end_to_end.py::test_materialize_from_the_command_line"
    ),
    ".venv/bin/dagster asset materialize -m metrics_pipeline.definitions --select rds_metrics "
    "--partition 2026-11-26-09:00": (
        "test_cli_end_to_end.py::test_materialize_from_the_command_line"
    ),
    "python -m metrics_pipeline.local_aws": (
        "test_iam_policy.py::test_the_policies_grant_exactly_what_the_pipeline_calls"
    ),
    "python -m metrics_pipeline.healing.progress": (
        "test_progress.py::test_the_watcher_stops_with_the_process_it_follows"
    ),
}

EXEMPT = {
    ".venv/bin/python -m metrics_pipeline.dashboard --port 8050": "serves until stopped: "
    "test_dashboard_browser.py starts it (metrics_pipeline_tests/dashboard_stack.py) and "
    "test_start_end_to_end.py reads the one start.sh starts",
    ".venv/bin/python scripts/dashboard_screenshots.py": "rewrites docs/images/dashboard-*.png "
    "from test_dashboard_browser.py's stack, which runs in CI",
    ".venv/bin/python -m benchmarks.dashboard_pages": "a benchmark of several minutes; "
    "test_benchmarks.py runs it at the ci size within the suite",
    ". .dagster/reader.env": "the banner's read command, which "
    "test_the_banners_read_command_reads_this_stacks_warehouse_from_any_shell runs from "
    "another shell with the stack's own DAGSTER_HOME",
    ". .dagster-scale-out/reader.env": "the scale-out banner's read command, which "
    "test_the_banners_read_command_reads_the_lake_from_any_shell runs from another shell",
    ".venv/bin/python scripts/update_settings_reference.py": "rewrites docs/operations.md: "
    "test_the_configuration_reference_is_generated_from_the_settings_model checks that its "
    "output is the page",
    ".venv/bin/python scripts/update_tables_reference.py": "rewrites the column reference of "
    "docs/analysts.md: test_the_column_reference_of_the_docs_is_generated_from_the_declarations "
    "(test_tables.py) checks that its output is the page",
    "bash scripts/test.sh": "the whole suite and its linters, this test among them: what CI runs",
    "bash scripts/test.sh -m scale_out": "the scale_out tests, this suite's own (the marker is "
    "checked below)",
    'bash scripts/test.sh -m "not e2e and not load"': "the quick subset of this suite (the "
    "markers are checked below)",
    "bash scripts/start.sh --real-aws": "needs a real AWS account",
    "docker build -f deploy/Dockerfile .": "no Docker here: test_deploy.py checks what the "
    "Dockerfile copies and runs, test_runtime_install.py what it installs",
    "DAGSTER_HOME=$PWD/.dagster .venv/bin/dagster dev": "long-running, on a real AWS account; "
    "start.sh runs the same `dagster dev` in test_start_end_to_end.py",
    "dagster dev": "names the command (long-running); start.sh runs it in test_start_end_to_end.py",
    "DAGSTER_PG_URL=postgresql+psycopg2://user:password@host:5432/dagster": "a placeholder for "
    "your PostgreSQL; test_deploy.py loads deploy/dagster.yaml with a real one",
    "dagster-webserver -w workspace.yaml -h 127.0.0.1 -p 3000": "a production service; "
    "test_definitions.py starts the webserver, the end-to-end tests the daemon",
    "dagster-daemon run -w workspace.yaml": "a production service; test_daemon_end_to_end.py "
    "runs the daemon on the same definitions",
    "export DAGSTER_HOME=/var/lib/metrics_pipeline/dagster": "a production machine's folder",
    "dagster schedule stop fresh_collection_schedule -w workspace.yaml": "needs a running "
    "Dagster instance; the schedule's name is checked by test_definitions.py",
    ".venv/bin/python -m benchmarks.suite --size full --output results.md": "about 20 minutes; "
    "test_benchmarks.py runs the suite's ci size",
    ".venv/bin/python -m benchmarks.suite --size small": "about 6 minutes; test_benchmarks.py "
    "runs the suite's ci size",
    ".venv/bin/python -m benchmarks.tiers": "two minutes; test_benchmarks.py runs it at a "
    "small size",
    ".venv/bin/python -m benchmarks.maintenance": "30 million rows; the bounds are tested in "
    "test_backups.py and test_lake.py",
    ".venv/bin/python -m benchmarks.maintenance --rows 3000000": "several minutes; the bounds "
    "are tested in test_backups.py and test_lake.py",
    ".venv/bin/python -m benchmarks.backends": "a measurement of minutes, on a PostgreSQL and S3",
    ".venv/bin/python -m benchmarks.tick_growth": "an hour at its size (filling the file takes "
    "most of it); its tick is the dagster CLI's, tested in test_cli_end_to_end.py",
    ".venv/bin/python -m benchmarks.tick_growth --storage local_lake": "half an hour; see above",
    ".venv/bin/python -m benchmarks.analyst_queries": "minutes at its size; test_benchmarks.py "
    "runs it at a small one",
    "python -m benchmarks.backends": "a measurement of minutes, on a PostgreSQL and S3",
    "python -m metrics_pipeline.local_aws --fleet-size N": "the benchmarks' and the load test's "
    "local AWS, started by them",
    "python -m metrics_pipeline.local_aws.lake_s3": "started by start.sh --scale-out "
    "(test_scale_out_end_to_end.py) and the scale-out fixtures",
    "duckdb -readonly data/metrics.snapshot.duckdb": "interactive; "
    "test_client_compatibility.py opens the snapshot with that client",
    "pip install 'metrics_pipeline[slack]'": "installs from PyPI; the dev extra includes it",
    "metrics-pipeline query": "names the command; its examples are run here",
}

# Blocks that are not commands: keyed by their first line.
EXEMPT_BLOCKS = {
    "CREATE ROLE metrics_reader LOGIN PASSWORD '…' CONNECTION LIMIT 64;  -- not superuser": (
        "PostgreSQL administration on your server; the local stack runs the same grants "
        "(local_postgres/server.py), which test_lake_readers.py tries to break"
    ),
}

COMMAND = re.compile(
    r"^(bash scripts/|\.venv/bin/[\w-]+ |python3? -m |python3? [\w/]+\.py|metrics-pipeline \w"
    r"|dagster[\w-]* \w|docker |pip |duckdb -|\. \S+\.env$|export |[A-Z_]+=|ruff \w|dg \w)"
)


def logical_lines(block: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", "", block)
    lines = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line:
            lines.append(line)
    return lines


def documented_commands() -> list[Command]:
    """Every line of every bash block, and every inline `code` that is a command."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in re.findall(r"^ *```bash\n(.*?)^ *```", text, re.S | re.M):
            found += [Command(page.name, line) for line in logical_lines(block)]
        prose = re.sub(r"^ *```.*?^ *```", "", text, flags=re.S | re.M)
        found += [
            Command(page.name, span)
            for span in (" ".join(s.split()) for s in re.findall(r"`([^`]+)`", prose))
            if COMMAND.match(span)
        ]
    return found


def runs_here(text: str) -> bool:
    if text in COVERED or text in EXEMPT:
        return False
    words = shlex.split(text)
    return (
        words[0].removeprefix(".venv/bin/") == "metrics-pipeline"
        or (words[:2] == ["python", "-m"] and words[3:] == ["--help"])
        or (words[:2] == [".venv/bin/python", "-c"])
        or bool(re.fullmatch(r"(export )?METRICS_\w+=.*", text))
    )


def command_id(command: Command) -> str:
    return f"{command.page}: {command.text}"


def test_every_documented_command_runs_in_a_test_or_says_why_not() -> None:
    commands = documented_commands()
    assert len(commands) > 40, "the docs' commands were found"
    texts = {c.text for c in commands}
    unaccounted = [
        command_id(c)
        for c in commands
        if not runs_here(c.text) and c.text not in COVERED and c.text not in EXEMPT
    ]
    assert not unaccounted, "run it in a test, or name the test that runs it, or say why not"
    stale = (set(COVERED) | set(EXEMPT)) - texts
    assert not stale, f"no longer documented: {sorted(stale)}"
    assert not set(COVERED) & set(EXEMPT)
    assert all(reason for reason in EXEMPT.values())


def string_constants_and_names(file: str, function: str) -> tuple[list[str], set[str]]:
    tree = ast.parse((PROJECT_ROOT / "metrics_pipeline_tests" / file).read_text())
    [node] = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function
    ]
    constants = [
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]
    names = {ast.unparse(n) for n in ast.walk(node) if isinstance(n, ast.Name | ast.Attribute)}
    # The program may be called by a helper of the same file (run_dagster).
    helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names}
    for helper in helpers.values():
        names |= {ast.unparse(n) for n in ast.walk(helper) if isinstance(n, ast.Name)}
    return constants, names


@pytest.mark.parametrize("command", sorted(COVERED))
def test_the_test_named_for_a_command_runs_it(command: str) -> None:
    """The test's (or its fixture's, or helper's) source holds each word of the command as a
    word of its strings; the program may be the name the tests call it by (PROGRAMS), an
    example value a placeholder."""
    words = shlex.split(command)
    if "::" not in COVERED[command]:
        script = (PROJECT_ROOT / COVERED[command]).read_text()
        lines = [line.replace(".venv/bin/", "").split() for line in script.splitlines()]
        # A line's command follows the environment it sets (NAME=value NAME=value command).
        commands = [[w for w in line if not re.fullmatch(r"[A-Z_]+=\S*", w)] for line in lines]
        assert any(line[: len(words)] == words for line in commands), command
        return
    file, function = COVERED[command].split("::")
    constants, names = string_constants_and_names(file, function)
    program = words[0].removeprefix(".venv/bin/").replace("python3", "python")
    if program in PROGRAMS and PROGRAMS[program] in names:
        words = words[1:]
    held = set(" ".join(constants).split())
    missing = [word for word in words if word not in held and word not in PLACEHOLDERS]
    assert not missing, f"{COVERED[command]} does not run {command!r}: no {missing}"


@pytest.fixture(scope="module")
def documented_warehouse(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The docs' fleet in small, in the default warehouse (a lake on this machine under
    `data/`): the known rows, another account's orders-db, one backup."""
    folder = tmp_path_factory.mktemp("documented")
    catalog = folder / "data" / "metrics.ducklake"
    warehouse = WarehouseResource(
        database=str(folder / "data" / "metrics.duckdb"),
        lake_catalog=f"ducklake:{catalog}",
        lake_data_path=f"{catalog}.files/",
    )
    seed(warehouse)
    with warehouse.connect() as conn:

        def add_account() -> None:
            for table in ("rds_instances", "rds_metrics"):
                conn.execute(
                    f"INSERT INTO {table} SELECT * REPLACE ('{OTHER_ACCOUNT}' AS account_id) "
                    f"FROM {table} WHERE instance_id = 'orders-db'"
                )

        in_transaction(conn, add_account)
    backups = folder / "data" / "backups"
    made = backup_on(warehouse, backups)
    day = FIRST_HOUR.replace(hour=0)
    return {
        "database": warehouse.database,
        "lake": str(warehouse.lake),
        "catalog": warehouse.lake_catalog,
        "data": warehouse.lake_data_path,
        "…": "SELECT count(*) AS n FROM rds_metrics",
        "2026-11-25": f"{day:%Y-%m-%d}",
        "2026-11-26": f"{day + timedelta(days=1):%Y-%m-%d}",
        "20261126T004000Z": made,
        "NAME": made,
        "analysts": grp.getgrgid(os.getgid()).gr_name,
        "shop-aurora-1": "orders-db",
    }


def backup_on(warehouse: WarehouseResource, folder: Path) -> str:
    from metrics_pipeline.analysts import cli

    environ = {
        "METRICS_WAREHOUSE": warehouse.lake_catalog,
        "METRICS_LAKE_DATA_PATH": warehouse.lake_data_path,
        "METRICS_BACKUP_DIR": str(folder),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        assert cli.main(["backup", "create"]) == 0
    [made] = [p.name for p in folder.iterdir()]
    return made


def with_placeholders(text: str, values: dict[str, str]) -> str:
    """The command with each example value (a whole word) replaced by the test's."""
    for example in sorted(PLACEHOLDERS, key=len, reverse=True):
        if example in values:
            text = re.sub(rf"(?<![\w-]){re.escape(example)}(?![\w-])", values[example], text)
    return text


@pytest.mark.parametrize(
    "command", [c for c in documented_commands() if runs_here(c.text)], ids=command_id
)
def test_the_documented_command_runs(
    command: Command,
    documented_warehouse: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In this process, on the seeded warehouse, from a folder of its own (where the default
    warehouse's relative path `data/…` leads to it): every reading command exits 0 and names
    the warehouse it read; a setting is one the settings model accepts."""
    from metrics_pipeline.analysts import cli

    for name in ("METRICS_WAREHOUSE", "METRICS_LAKE_DATA_PATH", "METRICS_DUCKDB_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    (tmp_path / "data").symlink_to(Path(documented_warehouse["database"]).parent)
    monkeypatch.chdir(tmp_path)
    text = with_placeholders(command.text, documented_warehouse)
    words = shlex.split(text)

    if re.fullmatch(r"(export )?METRICS_\w+=.*", text):
        # With the page's other settings: METRICS_WAREHOUSE goes with METRICS_LAKE_DATA_PATH.
        environ = {"METRICS_AWS_REGIONS": "us-east-1"}
        for other in documented_commands():
            if other.page == command.page and re.fullmatch(r"(export )?METRICS_\w+=.*", other.text):
                [assignment] = shlex.split(with_placeholders(other.text, documented_warehouse))[-1:]
                name, _, value = assignment.partition("=")
                environ[name] = value
        load_settings(environ)
        name, _, value = shlex.split(text)[-1].partition("=")
        assert environ[name] == value
        return
    if words[0] == ".venv/bin/python":
        exec(compile(words[2], command_id(command), "exec"), {})
        assert capsys.readouterr().out.strip()
        return
    if words[:2] == ["python", "-m"]:
        monkeypatch.setattr(sys, "argv", [words[2], *words[3:]])
        with pytest.raises(SystemExit) as stopped:
            runpy.run_module(words[2], run_name="__main__", alter_sys=True)
        assert stopped.value.code == 0
        assert "usage:" in capsys.readouterr().out
        return
    if words[1:2] == ["backup"] and words[2] in ("create", "restore"):
        monkeypatch.setenv("METRICS_BACKUP_DIR", str(tmp_path / "backups"))
        shutil.copytree(
            Path(documented_warehouse["database"]).parent / "backups", tmp_path / "backups"
        )
    code = cli.main(words[1:])
    out, err = capsys.readouterr()
    assert code == 0, err
    if words[1] in ("instances", "metrics", "extract", "health", "query"):
        assert err.strip().splitlines()[-1] == (
            f"metrics-pipeline: read the lake {documented_warehouse['lake']} (the default; "
            "METRICS_WAREHOUSE and METRICS_DUCKDB_PATH are not set)"
        )
        output = re.search(r"-o (\S+)", text)
        assert (tmp_path / output.group(1)).stat().st_size > 0 if output else out.strip()


@pytest.mark.e2e
def test_the_documented_dagster_home_holds_the_projects_instance(tmp_path: Path) -> None:
    """operations.md's set-up of DAGSTER_HOME, run by bash in a copy of the project: Dagster
    then reads the project's dagster.yaml there."""
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    subprocess.run(
        ["bash", "-c", "mkdir -p .dagster && ln -sf ../dagster.yaml .dagster/dagster.yaml"],
        cwd=tmp_path,
        check=True,
        timeout=30,
    )
    config, _ = dagster_instance_config(str(tmp_path / ".dagster"))
    assert (tmp_path / ".dagster" / "dagster.yaml").resolve() == tmp_path / "dagster.yaml"
    assert config["concurrency"]["pools"]["default_limit"] == 1


def fenced_blocks() -> list[tuple[str, str, str]]:
    """(page, language, text) of every fenced block of the README and docs/."""
    return [
        (page.name, language, textwrap.dedent(body))
        for page in PAGES
        for language, body in re.findall(r"^ *```(\w*)\n(.*?)^ *```", page.read_text(), re.S | re.M)
    ]


def test_every_block_is_a_command_an_example_or_an_output() -> None:
    """bash blocks are the commands above, python and sql blocks run below; an untyped block is
    an output or a diagram, with no command in it."""
    for page, language, body in fenced_blocks():
        first = body.strip().splitlines()[0] if body.strip() else ""
        assert language in ("bash", "python", "sql", ""), f"{page}: a {language} block"
        if language == "":
            commands = [line for line in body.splitlines() if COMMAND.match(line.strip())]
            assert not commands, f"{page}: commands in an untyped block: {commands}"
        if language == "sql" and first in EXEMPT_BLOCKS:
            assert EXEMPT_BLOCKS[first]


@pytest.mark.parametrize(
    "sql",
    [
        body
        for _, language, body in fenced_blocks()
        if language == "sql" and body.strip().splitlines()[0] not in EXEMPT_BLOCKS
    ],
    ids=lambda sql: sql.strip().splitlines()[0][:60],
)
def test_the_documented_sql_runs(sql: str, documented_warehouse: dict[str, str]) -> None:
    """On the seeded warehouse: the columns the query names exist and it answers."""
    storage = StorageSettings(
        duckdb_path=Path(documented_warehouse["database"]),
        warehouse=documented_warehouse["catalog"],
        lake_data_path=documented_warehouse["data"],
    )
    query.run_sql(sql, storage)


@pytest.mark.parametrize(
    "example",
    [body for _, language, body in fenced_blocks() if language == "python"],
    ids=lambda body: body.strip().splitlines()[0],
)
def test_the_documented_python_runs(
    example: str,
    documented_warehouse: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In this process, as in a notebook whose environment names the seeded warehouse."""
    monkeypatch.setenv("METRICS_WAREHOUSE", documented_warehouse["catalog"])
    monkeypatch.setenv("METRICS_LAKE_DATA_PATH", documented_warehouse["data"])
    monkeypatch.delenv("METRICS_DUCKDB_PATH", raising=False)
    names: dict[str, object] = {}
    exec(compile(example, "docs example", "exec"), names)
    assert capsys.readouterr().out.strip()
    # Every frame it makes holds rows, but those of the last hours: the seed is two days old.
    recent = set(re.findall(r"(\w+) = query\.\w+\(\"now-\d+h\"", example))
    frames = {name: v for name, v in names.items() if isinstance(v, pd.DataFrame)}
    assert frames
    empty = [name for name, frame in frames.items() if name not in recent and frame.empty]
    assert not empty


# What the docs name that is made at run time, or is not a path: each with what makes it.
NOT_IN_THE_PROJECT = {
    ".dagster/": "DAGSTER_HOME of start.sh",
    "reader.env": "written by start.sh into DAGSTER_HOME",
    ".dagster-scale-out/reader.env": "written by start.sh --scale-out",
    ".scale-out/": "start.sh --scale-out's PostgreSQL and keys",
    "data/metrics.duckdb": "the DuckDB file warehouse, of earlier versions",
    "data/metrics.ducklake": "the lake's catalog, made by the first write",
    "Europe/Berlin": "a time zone's name, not a path",
    "db.sql": "a Performance Insights dimension group, not a path",
    "data/metrics.ducklake.files/": "the lake's data folder, made by the first write",
    "data/metrics.snapshot.ducklake": "the readers' copy of the default lake's catalog",
    "metrics.snapshot.duckdb": "the readers' snapshot",
    "backups/": "made by the first backup",
    "schema.sql": "in each backup (DuckDB's EXPORT DATABASE)",
    "load.sql": "in each backup (DuckDB's EXPORT DATABASE)",
    "manifest.json": "in each backup",
    "test-artifacts/": "the browser test's screenshots",
    ".venv/bin/metrics-pipeline": "installed by scripts/install.sh",
    "pg_hba.conf": "PostgreSQL's own",
    "account_id/instance_id": "a name's form",
    "dagster/priority": "a Dagster tag",
}

FILE_SUFFIXES = (".py", ".md", ".json", ".yaml", ".yml", ".sh", ".toml", ".sql", ".env", ".conf")
FILE_SUFFIXES += (".duckdb", ".pgpass")
PROJECT_FOLDERS = ("metrics_pipeline", "metrics_pipeline_tests", "docs", "deploy", "scripts")
PROJECT_FOLDERS += ("benchmarks",)


def tracked_paths() -> set[Path]:
    """The project's files and folders, relative to its root: its top-level files and the
    folders it ships (not what running it makes: data/, .dagster/, .venv/)."""
    files = {path.relative_to(PROJECT_ROOT) for path in PROJECT_ROOT.iterdir() if path.is_file()}
    for folder in PROJECT_FOLDERS:
        files |= {
            path.relative_to(PROJECT_ROOT)
            for path in (PROJECT_ROOT / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
    return files | {folder for file in files for folder in file.parents}


def prose_spans(page: Path) -> list[str]:
    """The inline `code` of a page, outside its fenced blocks."""
    prose = re.sub(r"^ *```.*?^ *```", "", page.read_text(), flags=re.S | re.M)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def named_paths(page: Path) -> list[str]:
    return [
        span
        for span in prose_spans(page)
        if re.fullmatch(r"[\w.][\w./-]*", span) and ("/" in span or span.endswith(FILE_SUFFIXES))
    ]


def test_every_file_the_docs_name_exists() -> None:
    """A path is the project's (from its root, the package or the tests' folder), or a file
    name one of its files has, or made at run time (NOT_IN_THE_PROJECT)."""
    paths = tracked_paths()
    names = {path.name for path in paths}
    named = {span for page in PAGES for span in named_paths(page)}
    for span in named - set(NOT_IN_THE_PROJECT):
        path = Path(span.rstrip("/"))
        bases = (Path(), Path("metrics_pipeline"), Path("metrics_pipeline_tests"))
        found = any(base / path in paths for base in bases) or (
            len(path.parts) == 1 and path.name in names
        )
        assert found, f"the docs name {span}, which the project does not have"
    assert set(NOT_IN_THE_PROJECT) <= named, set(NOT_IN_THE_PROJECT) - named


def test_every_path_and_import_the_code_names_exists() -> None:
    """The code's docstrings and comments, the scripts and deploy/ name files that exist, and
    their examples' imports import."""
    paths = tracked_paths()
    for file in sorted(paths):
        if not (file.suffix in (".py", ".sh", ".yaml", ".toml") or file.name == "Dockerfile"):
            continue
        if file.parts[0] not in ("metrics_pipeline", "scripts", "deploy", "benchmarks"):
            continue
        text = (PROJECT_ROOT / file).read_text()
        folders = "deploy|docs|scripts|benchmarks|metrics_pipeline_tests|metrics_pipeline"
        for named in re.findall(rf"(?<![\w./$-])((?:{folders})/[\w./-]*[\w/])", text):
            assert Path(named.rstrip("/")) in paths, f"{file} names {named}, which does not exist"
        for line in re.findall(
            r"^\s+((?:from|import) metrics_pipeline[\w.]*(?: import [\w, ]+)?)\s*$", text, re.M
        ):
            exec(line, {})


def test_every_setting_the_docs_name_is_one() -> None:
    reference = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    settings = set(re.findall(r"^\| `(METRICS_[A-Z0-9_]+)` \|", reference, re.M))
    for page in PAGES:
        named = set(re.findall(r"\bMETRICS_[A-Z0-9_]*[A-Z0-9]\b", page.read_text()))
        assert named <= settings, f"{page.name}: no such setting {sorted(named - settings)}"


def test_every_marker_the_docs_name_is_one() -> None:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    markers = {line.split(":")[0] for line in pyproject["tool"]["pytest"]["ini_options"]["markers"]}
    named = set()
    for page in PAGES:
        text = page.read_text()
        for expression in re.findall(
            r"""(?:test\.sh|pytest)[^\n`]*? -m (?:"([^"]+)"|'([^']+)'|(\w+))""", text
        ):
            words = set(re.findall(r"\w+", " ".join(expression))) - {"and", "or", "not"}
            named |= words
        named |= set(re.findall(r"\b(?:marker|marked) `(\w+)`", text))
    assert {"e2e", "load", "scale_out"} <= named, "the docs' markers were found"
    assert named <= markers, sorted(named - markers)


def test_every_test_the_docs_name_exists() -> None:
    tests = PROJECT_ROOT / "metrics_pipeline_tests"
    defined = set()
    for file in tests.glob("test_*.py"):
        defined |= set(re.findall(r"^\s*def (test_\w+)", file.read_text(), re.M))
    named = {span for page in PAGES for span in prose_spans(page) if span.startswith("test_")}
    named |= {name for page in PAGES for name in re.findall(r"\b(test_\w+)`?", page.read_text())}
    assert len(named) > 30, "the docs' tests were found"
    for name in named:
        if name.endswith(".py"):
            assert (tests / name).exists(), name
        else:
            assert name.removesuffix("_py") in defined or (tests / f"{name}.py").exists(), name


README = (PROJECT_ROOT / "README.md").read_text()
NUMBERS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def test_the_tour_lists_every_schedule_and_sensor_and_says_how_many() -> None:
    """The README's step 2 names what the UI's Automation tab lists: every schedule and sensor
    of the definitions, each running from the start, and their number."""
    tour = re.search(r"^2\. \*\*Automation\*\* lists (\w+) entries(.*?)^3\. ", README, re.S | re.M)
    assert tour, "the README's tour has its Automation step"
    definitions = build_definitions(settings_for_tests())
    schedules = {s.name: s.default_status for s in definitions.schedules or []}
    sensors = {s.name: s.default_status for s in definitions.sensors or []}
    entries = schedules | sensors
    named = set(re.findall(r"`(\w+_(?:schedule|sensor|automation|alert|check))`", tour[2]))
    assert named == set(entries)
    assert NUMBERS.index(tour[1]) == len(entries)
    assert {status.value for status in entries.values()} == {"RUNNING"}
