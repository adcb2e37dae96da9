"""The scale-out stack's one command, `bash scripts/start.sh --scale-out`, as a team tries it
on one machine: a PostgreSQL, the local AWS with its S3, Dagster on PostgreSQL and the
warehouse a DuckLake. The real daemon runs the gap sensor and the fresh schedule; their runs
and event logs are found in PostgreSQL, the rows in the lake with the simulator's values."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from metrics_pipeline.local_aws.fleet import default_fleet, simulated_accounts
from metrics_pipeline.local_aws.signals import series
from metrics_pipeline.local_postgres.server import start as start_postgres
from metrics_pipeline.warehouse.lake import Lake
from metrics_pipeline_tests.helpers import PROJECT_ROOT, free_port, wait_for

# One stack a module, its tests in order: on one worker.
pytestmark = [pytest.mark.e2e, pytest.mark.scale_out, pytest.mark.xdist_group("scale_out_stack")]
CLI = str(Path(sys.executable).with_name("metrics-pipeline"))


@dataclass
class ScaleOutStack:
    output: Path
    env: dict[str, str]  # an analyst's, from the file the banner names
    postgres_port: int
    folder: Path
    process: subprocess.Popen[str]
    home: Path

    def dagster_rows(self, sql: str) -> list[tuple]:
        dsn = f"host=127.0.0.1 port={self.postgres_port} user=metrics_writer dbname=dagster"
        passfile = self.folder / "postgres" / "metrics_writer.pgpass"
        with psycopg2.connect(dsn, passfile=passfile) as conn, conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()

    def query(self, sql: str) -> list[str]:
        done = subprocess.run(
            [CLI, "query", sql, "-f", "csv"], env=self.env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[1:]


@pytest.fixture(scope="module")
def stack() -> Iterator[ScaleOutStack]:
    # PostgreSQL runs as another user when the tests run as root: its folder must be one that
    # user can reach, unlike pytest's private temporary folders.
    folder = Path(tempfile.mkdtemp(prefix="metrics-scale-out-"))
    folder.chmod(0o755)
    postgres_port, aws_port = free_port(), free_port()
    env = {
        **os.environ,
        "DAGSTER_PORT": str(free_port()),
        "DASHBOARD_PORT": str(free_port()),
        "LOCAL_AWS_PORT": str(aws_port),
        "POSTGRES_PORT": str(postgres_port),
        "LAKE_S3_PORT": str(free_port()),
        "SCALE_OUT_DIR": str(folder / "stack"),
        "DAGSTER_HOME": str(folder / "dagster_home"),
        "METRICS_FRESH_INTERVAL_MINUTES": "1",
        "LOCAL_AWS_ARGS": "--late-minutes 0",
    }
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "METRICS_AWS_REGIONS"):
        env.pop(name, None)
    output = folder / "start.log"
    process = subprocess.Popen(
        ["bash", "scripts/start.sh", "--scale-out"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=output.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        try:
            wait_for(lambda: "Press Ctrl-C to stop." in output.read_text(), 300, "the banner")
        except AssertionError:
            print(output.read_text()[-3000:])
            raise
        # What an analyst reading the lake needs, as the banner says: the file it names.
        reader_file = folder / "dagster_home" / "reader.env"
        assert f". {reader_file} && " in output.read_text()
        sourced = subprocess.run(
            ["bash", "-c", '. "$0" && env -0', str(reader_file)],
            env={"PATH": os.environ["PATH"]},
            capture_output=True,
            check=True,
        ).stdout.decode()
        reader_env = {
            **env,
            **dict(entry.split("=", 1) for entry in sourced.split("\0") if "=" in entry),
        }
        yield ScaleOutStack(
            output, reader_env, postgres_port, folder / "stack", process, folder / "dagster_home"
        )
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def test_banner_names_the_lake_and_dagster_on_postgresql(stack: ScaleOutStack) -> None:
    banner = stack.output.read_text()
    catalog = f"ducklake:postgres:host=127.0.0.1 port={stack.postgres_port} dbname=lake"
    assert f"Warehouse:   DuckLake {catalog} user=metrics_writer," in banner
    assert stack.env["METRICS_WAREHOUSE"] == f"{catalog} user=metrics_reader"
    assert "data in s3://metrics-lake/warehouse/" in banner
    assert (
        "runs and event logs in postgresql+psycopg2://metrics_writer@127.0.0.1:"
        f"{stack.postgres_port}"
        "/dagster" in banner
    )


def test_the_daemon_on_postgresql_heals_and_collects_fresh_hours_into_the_lake(
    stack: ScaleOutStack,
) -> None:
    def succeeded(tag: str, name: str) -> int:
        [(count,)] = stack.dagster_rows(
            "SELECT count(*) FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
            f"WHERE r.status = 'SUCCESS' AND t.key = '{tag}' AND t.value = '{name}'"
        )
        return int(count)

    wait_for(
        lambda: (
            succeeded("dagster/sensor_name", "gap_healing_sensor") >= 2
            and succeeded("dagster/schedule_name", "fresh_collection_schedule") >= 1
        ),
        600,  # about 2 minutes on an idle machine; far longer when other suites load it
        "the gap sensor's first collection and healing run, and a fresh run",
    )
    [(events,)] = stack.dagster_rows(
        "SELECT count(*) FROM event_logs e JOIN runs r ON r.run_id = e.run_id "
        "WHERE r.status = 'SUCCESS' AND e.dagster_event_type = 'ASSET_MATERIALIZATION'"
    )
    assert events >= 3

    # The three days of the look-back are in the lake, with the simulator's values.
    accounts = simulated_accounts(2)
    fleet = {
        (i.account_id, i.instance_id): i
        for i in default_fleet(datetime.now(UTC), ("us-east-1", "eu-west-1"), accounts)
    }
    [hours] = stack.query(
        "SELECT count(DISTINCT hour) FROM rds_metric_fetches WHERE instance_id = 'orders-db'"
    )
    assert int(hours) >= 72
    rows = stack.query(
        "SELECT account_id, epoch(ts)::BIGINT, average FROM rds_metrics "
        "WHERE instance_id = 'orders-db' AND metric = 'CPUUtilization' "
        "AND ts + INTERVAL 5 MINUTE <= collected_at AND ts >= now()::TIMESTAMP - INTERVAL 6 HOUR"
    )
    assert rows
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=8)
    for account in accounts:
        seconds, values = series(
            fleet[(account, "orders-db")].profile(7), "CPUUtilization", "Average", 300,
            start, now, now,
        )  # fmt: skip
        expected = dict(zip(seconds.tolist(), values.tolist(), strict=True))
        own = [line.split(",") for line in rows if line.startswith(account)]
        assert own
        for _, ts, average in own:
            assert float(average) == pytest.approx(expected[float(ts)])
    [(duplicates,)] = [
        tuple(map(int, line.split(",")))
        for line in stack.query(
            "SELECT count(*) - count(DISTINCT (account_id, region, instance_id, metric, ts)) "
            "FROM rds_metrics"
        )
    ]
    assert duplicates == 0


def test_the_banners_read_command_reads_the_lake_from_any_shell(
    stack: ScaleOutStack, tmp_path: Path
) -> None:
    """As printed, from a shell with none of the stack's settings: the lake, not a DuckDB file
    that happens to be the default."""
    [command] = [
        line.split("Read it:", 1)[1].strip()
        for line in stack.output.read_text().splitlines()
        if "Read it:" in line
    ]
    assert command.startswith(f". {stack.home / 'reader.env'} && ")

    def read() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command + " -f csv"],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            check=False,
        )

    wait_for(lambda: "orders-db" in read().stdout, 600, "the first collection in the lake")
    done = read()
    assert done.returncode == 0, done.stderr
    lake = Lake(stack.env["METRICS_WAREHOUSE"], stack.env["METRICS_LAKE_DATA_PATH"])
    assert done.stderr.splitlines() == [
        f"metrics-pipeline: read the lake {lake.label} (METRICS_WAREHOUSE)"
    ]
    assert "orders-db" in done.stdout


def test_the_dashboard_draws_the_lake_read_with_the_readers_role(stack: ScaleOutStack) -> None:
    """The banner's dashboard reads the lake as an analyst does (the read-only role and S3
    keys of reader.env) and draws every instance with data in the fleet's heatmap."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    from metrics_pipeline_tests.browser import (
        beyond_loopback,
        chromium,
        console_errors,
        requested_urls,
    )

    [url] = [
        line.split("Dashboard:", 1)[1].split()[0]
        for line in stack.output.read_text().splitlines()
        if "Dashboard:" in line
    ]

    def with_cpu() -> set[str]:
        """The instances with CPU data in the lake; none before its first write."""
        sql = "SELECT DISTINCT instance_id FROM rds_metrics WHERE metric = 'CPUUtilization'"
        done = subprocess.run(
            [CLI, "query", sql, "-f", "csv"], env=stack.env, capture_output=True, text=True
        )
        return set(done.stdout.splitlines()[1:]) if done.returncode == 0 else set()

    wait_for(lambda: bool(with_cpu()), 600, "the first data in the lake")
    collected = with_cpu()
    script = """
    const plot = document.querySelector('#fleet-heatmap .js-plotly-plot');
    return plot && plot._fullData && plot._fullData.length ? Array.from(plot._fullData[0].y) : null;
    """
    with chromium() as browser:
        # The dashboard's reader is at most 30 s old: it shows the first data within that.
        def drawn(b: Any) -> list[str] | None:
            b.get(url)
            labels = WebDriverWait(b, 30, poll_frequency=1).until(
                lambda d: d.execute_script(script)
            )
            return labels if collected <= {label.split(" (")[0] for label in labels} else None

        # A page drawn from a reader older than the first data shows no heatmap: load again.
        labels = WebDriverWait(
            browser, 180, poll_frequency=5, ignored_exceptions=(TimeoutException,)
        ).until(drawn)
        errors = console_errors(browser)
        leaving = beyond_loopback(requested_urls(browser))
    assert collected <= {label.split(" (")[0] for label in labels}
    assert errors == []
    assert leaving == []


def test_ctrl_c_stops_everything_postgresql_too(stack: ScaleOutStack) -> None:
    """The local PostgreSQL's postmaster is in its launcher's process group: stopping the
    stack stops it, and nothing of the session is left. It stops after Dagster: the runs
    Ctrl-C interrupts record how they ended in its run storage."""
    in_flight = "SELECT count(*) FROM runs WHERE status IN ('STARTING', 'STARTED')"
    wait_for(lambda: stack.dagster_rows(in_flight)[0][0] > 0, 300, "a run in flight")
    os.killpg(stack.process.pid, signal.SIGINT)
    stack.process.wait(timeout=120)
    left = subprocess.run(
        ["ps", "-s", str(stack.process.pid), "-o", "pid=,stat=,args="],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    assert [line for line in left if line.split()[1][0] != "Z"] == []
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(f"host=127.0.0.1 port={stack.postgres_port} user=metrics dbname=lake")
    postgres = start_postgres(stack.folder / "postgres", stack.postgres_port)
    try:
        assert stack.dagster_rows(in_flight) == [(0,)]
    finally:
        postgres.stop()
