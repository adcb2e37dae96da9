"""The README's one command, driven as a new user would: start, see data arrive, look at the
UI in a real browser, stop with Ctrl-C, nothing left running."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from metrics_pipeline.catalog import HOURLY_STATISTIC_COLUMNS
from metrics_pipeline.dagster_runs import RANGE_END_TAG, RANGE_START_TAG, UNFINISHED
from metrics_pipeline.history.window import oldest_fetchable_hour, settled_days
from metrics_pipeline.hours import DAY, HOUR, floor_hour, healing_hours, naive_utc
from metrics_pipeline.lake_catalog import Lake
from metrics_pipeline.local_aws.fleet import SimulatedInstance, default_fleet, simulated_accounts
from metrics_pipeline.local_aws.signals import series
from metrics_pipeline.local_aws.simulator import STOPPED_DAYS_AGO
from metrics_pipeline.settings import load_settings, snapshot_path_for
from metrics_pipeline.warehouse.readers import open_reader
from metrics_pipeline_tests.browser import ARTIFACTS, chromium
from metrics_pipeline_tests.helpers import PROJECT_ROOT, free_port, wait_for

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

# One stack a module, its tests in order (a restart follows a Ctrl-C): on one worker.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("start_stack")]

AUTOMATION = (
    "fresh_collection_schedule",
    "retention_schedule",
    "backup_schedule",
    "gap_healing_sensor",
    "derived_assets_automation",
    "run_failure_alert",
    "run_liveness_check",
)


@dataclass
class Stack:
    process: subprocess.Popen[str]
    ui: str
    catalog: Path  # the lake's catalog file: the default warehouse is a lake on this machine
    home: Path
    output: Path
    dashboard: str = ""
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    started_at: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))
    tests: list[str] = dataclasses.field(default_factory=list)  # that ran on it, in order

    @property
    def snapshot(self) -> Path:
        """The copy of the catalog readers open while the pipeline runs (see snapshot.py)."""
        return snapshot_path_for(self.catalog)

    @property
    def lake(self) -> Lake:
        """The lake with its data folder as the settings derive it: next to the catalog."""
        return Lake(f"ducklake:{self.catalog}", f"{self.catalog}.files/")


def start(env: dict[str, str], output: Path) -> subprocess.Popen[str]:
    """start.sh as a user runs it with its output piped through tee (in a terminal's
    foreground group of its own: Ctrl-C signals start.sh and tee alike)."""
    output.touch()
    return subprocess.Popen(
        ["bash", "-c", 'bash scripts/start.sh 2>&1 | tee "$0" >/dev/null', str(output)],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def session_processes(session: int) -> list[str]:
    listed = subprocess.run(
        ["ps", "-s", str(session), "-o", "pid=,stat=,args="],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    return [line for line in listed if line.split()[1][0] != "Z"]


def ctrl_c_under_load(process: subprocess.Popen[str]) -> list[str]:
    """Ctrl-C while four processes keep both cores busy; what is left of the session after
    the pipeline has exited (none of it may be)."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(4)
    ]
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=120)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    return session_processes(process.pid)


def stop_whatever_is_left(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:  # a test failed before Ctrl-C: stop as a user would
        os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=120)
    subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("stack")
    ui_port, dashboard_port = free_port(), free_port()
    # As an earlier start.sh left it: readable by everyone.
    (folder / "dagster_home").mkdir(mode=0o755)
    (folder / "dagster_home" / "dagster.log").touch(mode=0o644)
    env = {
        **os.environ,
        "DAGSTER_PORT": str(ui_port),
        "DASHBOARD_PORT": str(dashboard_port),
        "LOCAL_AWS_PORT": str(free_port()),
        "DAGSTER_HOME": str(folder / "dagster_home"),
        "METRICS_WAREHOUSE": f"ducklake:{folder / 'metrics.ducklake'}",
        "METRICS_FRESH_INTERVAL_MINUTES": "1",
        "LOCAL_AWS_ARGS": "--late-minutes 0",
    }
    for name in ("AWS_ENDPOINT_URL", "METRICS_AWS_REGIONS", "METRICS_DUCKDB_PATH"):
        env.pop(name, None)
    output = folder / "start.log"
    process = start(env, output)
    stack = Stack(
        process,
        f"http://127.0.0.1:{ui_port}",
        folder / "metrics.ducklake",
        folder / "dagster_home",
        output,
    )
    stack.env = env
    stack.dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        wait_for(lambda: "Press Ctrl-C to stop." in output.read_text(), 300, "the start banner")
        yield stack
    finally:
        # The services run in process groups of their own, all in the script's session.
        stop_whatever_is_left(stack.process)


@pytest.fixture(autouse=True)
def _name_the_test_on_the_stack(stack: Stack, request: pytest.FixtureRequest) -> None:
    stack.tests.append(request.node.name)


def test_banner_says_where_everything_is(stack: Stack) -> None:
    banner = stack.output.read_text()
    assert f"Dagster UI:  {stack.ui}" in banner
    assert f"Dashboard:   {stack.dashboard} (charts; this machine only, no login)" in banner
    assert (
        f"Warehouse:   DuckLake catalog {stack.catalog}, data in {stack.catalog}.files/" in banner
    )
    assert "Press Ctrl-C to stop." in banner
    assert "local AWS on http://127.0.0.1:" in banner
    assert (
        "then the fresh schedule collects every minute." in banner
    )  # METRICS_FRESH_INTERVAL_...=1
    assert "The first collection starts now" in banner  # a new warehouse


def test_nothing_it_writes_is_readable_by_others(stack: Stack) -> None:
    """Dagster's run databases and logs name the accounts: the user's own, also what an
    earlier start left readable (the fixture's 0755 folder and 0644 log)."""
    wait_for(lambda: (stack.home / "history" / "runs.db").exists(), 120, "the run database")
    exposed = [
        f"{path} {path.stat().st_mode & 0o777:o}"
        for path in [stack.home, *stack.home.rglob("*")]
        if not path.is_symlink() and path.exists() and path.stat().st_mode & 0o077
    ]
    assert exposed == []


def test_the_banners_read_command_reads_this_stacks_warehouse_from_any_shell(
    stack: Stack, tmp_path: Path
) -> None:
    """As printed, from a shell with none of the stack's settings and another folder."""
    banner = stack.output.read_text()
    [command] = [
        line.split("Read it:", 1)[1].strip() for line in banner.splitlines() if "Read it:" in line
    ]
    reader_env = stack.home / "reader.env"
    assert command == f". {reader_env} && {PROJECT_ROOT}/.venv/bin/metrics-pipeline instances"
    assert reader_env.stat().st_mode & 0o777 == 0o600
    wait_for(stack.snapshot.exists, 150, "the first snapshot")
    reads: list[subprocess.CompletedProcess[str]] = []

    def read_lists_the_fleet() -> bool:
        """The first copy of the catalog is published before the inventory is collected."""
        reads.append(
            subprocess.run(
                ["bash", "-c", command + " -f csv"],
                cwd=tmp_path,
                env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
                capture_output=True,
                text=True,
                check=False,
            )
        )
        return reads[-1].returncode != 0 or "orders-db" in reads[-1].stdout

    wait_for(read_lists_the_fleet, 300, "the read command to list the inventory")
    done = reads[-1]
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"metrics-pipeline: read the lake {stack.lake.label} (METRICS_WAREHOUSE)"
    ]
    assert "orders-db" in done.stdout


def test_first_fresh_run_collects_the_simulated_fleet(stack: Stack) -> None:
    instance = DagsterInstance.from_config(str(stack.home))
    wait_for(
        lambda: bool(
            instance.get_runs(
                RunsFilter(job_name="fresh_collection_job", statuses=[DagsterRunStatus.SUCCESS])
            )
        ),
        300,  # about 40 s on an idle machine; several minutes when other suites load it
        "the first fresh run",
    )
    with open_reader(stack.lake) as conn:
        instances = {
            (account, instance_id): status
            for account, instance_id, status in conn.execute(
                "SELECT account_id, instance_id, status FROM rds_instances"
            ).fetchall()
        }
        [(fetched_hour,)] = conn.execute("SELECT max(hour) FROM rds_metric_fetches").fetchall()
        rows = conn.execute(
            "SELECT account_id, ts, average FROM rds_metrics WHERE instance_id = 'orders-db' "
            "AND metric = 'CPUUtilization' AND ts + INTERVAL 5 MINUTE <= collected_at ORDER BY ts"
        ).fetchall()
        stopped_rows = conn.execute(
            "SELECT count(*) FROM rds_metrics WHERE instance_id = 'legacy-db' AND ts >= ?",
            [fetched_hour],
        ).fetchone()
    # start.sh simulates two accounts and assumes the second one's role.
    accounts = simulated_accounts(2)
    fleet = {
        (i.account_id, i.instance_id): i
        for i in default_fleet(datetime.now(UTC), ("us-east-1", "eu-west-1"), accounts)
    }
    assert set(instances) == set(fleet)  # newcomer-db is created 20 minutes in
    assert instances[(accounts[0], "legacy-db")] == "stopped"
    assert stopped_rows == (0,)
    # The values are the simulator's, deterministic for its seed (7) and the time: every
    # period complete when it was collected matches, for each account's own orders-db.
    hour = fetched_hour.replace(tzinfo=UTC)
    for account in accounts:
        seconds, values = series(
            fleet[(account, "orders-db")].profile(7), "CPUUtilization", "Average", 300,
            hour - timedelta(hours=2), hour + timedelta(hours=1), datetime.now(UTC),
        )  # fmt: skip
        expected = dict(zip(seconds.tolist(), values.tolist(), strict=True))
        own_rows = [(ts, average) for row_account, ts, average in rows if row_account == account]
        assert len(own_rows) >= 1
        for ts, average in own_rows:
            assert average == pytest.approx(expected[ts.replace(tzinfo=UTC).timestamp()])

    listed = subprocess.run(
        [str(Path(sys.executable).with_name("metrics-pipeline")), "instances", "-f", "json"],
        env={**os.environ, "METRICS_WAREHOUSE": f"ducklake:{stack.catalog}"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert {
        (row["account_id"], row["instance_id"]): row["status"] for row in json.loads(listed.stdout)
    } == instances


def test_the_gap_sensor_collects_performance_insights_load_once_settled(stack: Stack) -> None:
    """Of the instances with PI on, and of no other; every settled hour of the look-back."""
    instance = DagsterInstance.from_config(str(stack.home))
    done = RunsFilter(job_name="pi_healing_job", statuses=[DagsterRunStatus.SUCCESS])
    wait_for(lambda: bool(instance.get_runs(done)), 600, "the first Performance Insights run")
    first_run = instance.get_runs(done)[-1]
    first, last = (
        datetime.strptime(first_run.tags[tag], "%Y-%m-%d-%H:%M")
        for tag in (RANGE_START_TAG, RANGE_END_TAG)
    )
    with open_reader(stack.lake) as conn:
        loaded = conn.execute(
            "SELECT DISTINCT account_id, instance_id FROM rds_pi_load ORDER BY ALL"
        ).fetchall()
        pi_on = conn.execute(
            "SELECT account_id, instance_id FROM rds_instances "
            "WHERE performance_insights_enabled ORDER BY ALL"
        ).fetchall()
        [(hours,)] = conn.execute(
            "SELECT count(DISTINCT hour) FROM rds_pi_fetches "
            "WHERE settled AND hour >= ? AND hour <= ?",
            [first, last],
        ).fetchall()
    own_account = simulated_accounts(2)[0]
    assert loaded == pi_on == [(own_account, "shop-aurora-1")]
    # The look-back: every hour of the first run's range settled.
    assert (last - first) // HOUR + 1 >= 3 * 24 - 1
    assert hours == (last - first) // HOUR + 1


def test_ui_shows_the_asset_and_its_partition_in_a_browser(stack: Stack) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def page_text(
        browser: Chrome, path: str, showing: str, screenshot: str, unless: str = "\0"
    ) -> str:
        """The page's text once it shows `showing` (and not `unless`); a screenshot of it in
        test-artifacts/."""
        browser.get(f"{stack.ui}{path}")

        def shown(b: Chrome) -> str:
            body = b.find_element(By.TAG_NAME, "body").text
            if showing in body and unless in body:
                b.get(f"{stack.ui}{path}")  # loaded, with what it has to wait for: look again
                return ""
            return body if showing in body else ""

        text = WebDriverWait(browser, 120, poll_frequency=3).until(shown)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / screenshot))
        return text

    def switched_on(b: Chrome) -> int:
        """Each row has a selection box (unticked) and its on/off switch, also a checkbox; the
        switches render after the names."""
        return sum(box.is_selected() for box in b.find_elements(By.CSS_SELECTOR, "input"))

    with chromium() as browser:
        # The snapshot is published as the run writes, a moment before Dagster records the
        # materialization: wait for the UI to count it.
        page = page_text(
            browser,
            "/assets/rds_metrics?view=partitions",
            "Materialized",
            "rds_metrics_partitions.png",
            unless="Materialized (0)",
        )
        # Everything that runs on its own is listed and on, with no click needed.
        automation = page_text(browser, "/automation", "run_failure_alert", "automation.png")
        with contextlib.suppress(TimeoutException):
            WebDriverWait(browser, 30).until(lambda b: switched_on(b) >= len(AUTOMATION))
        ticked = switched_on(browser)
        browser.save_screenshot(str(ARTIFACTS / "automation.png"))
    for name in AUTOMATION:
        assert name in automation
    assert ticked == len(AUTOMATION)
    assert "rds_metrics" in page
    with open_reader(stack.lake) as conn:
        [(hour,)] = conn.execute("SELECT max(hour) FROM rds_metric_fetches").fetchall()
    assert hour.strftime("%Y-%m-%d-%H:00") in page
    assert "Materialized (0)" not in page


def test_the_dashboard_draws_the_fleet_within_a_minute_of_the_first_data(stack: Stack) -> None:
    """The newcomer's first look: once the first collection is in, the banner's dashboard
    draws every instance of the inventory in the fleet's heatmap (its process reading with
    the stack's reader settings), with no request beyond loopback."""
    from selenium.webdriver.support.ui import WebDriverWait

    from metrics_pipeline_tests.browser import beyond_loopback, console_errors, requested_urls

    wait_for(stack.snapshot.exists, 300, "the first snapshot")

    def with_cpu() -> set[str]:
        with open_reader(stack.lake) as conn:
            rows = conn.execute(
                "SELECT DISTINCT instance_id FROM rds_metrics WHERE metric = 'CPUUtilization'"
            ).fetchall()
        return {instance_id for (instance_id,) in rows}

    wait_for(lambda: bool(with_cpu()), 300, "the first data")
    collected = with_cpu()  # the data only grows from here
    with open_reader(stack.lake) as conn:
        inventory = {i for (i,) in conn.execute("SELECT instance_id FROM rds_instances").fetchall()}
    script = """
    const plot = document.querySelector('#fleet-heatmap .js-plotly-plot');
    return plot && plot._fullData && plot._fullData.length ? Array.from(plot._fullData[0].y) : null;
    """
    with chromium() as browser:
        browser.get(stack.dashboard)
        drawn = WebDriverWait(browser, 60, poll_frequency=1).until(
            lambda b: b.execute_script(script)
        )
        browser.save_screenshot(str(ARTIFACTS / "dashboard_on_the_stack.png"))
        errors = console_errors(browser)
        leaving = beyond_loopback(requested_urls(browser))
    # The heatmap labels an instance by its id, with its account and region where it repeats.
    assert collected <= {label.split(" (")[0] for label in drawn} <= inventory
    assert errors == []
    assert leaving == []


def test_the_terminal_says_how_far_the_look_back_has_come(stack: Stack) -> None:
    """start.sh's terminal follows the history while it fills (that it ends with a line once
    complete is tested with the daemon in test_daemon_end_to_end.py)."""
    filling = re.compile(r"history: (\d+) of (\d+) hours for (\d+) instances; .*")

    def progress() -> list[re.Match[str]]:
        lines = stack.output.read_text().splitlines()
        return [match for line in lines if (match := filling.fullmatch(line))]

    wait_for(lambda: bool(progress()), 300, "a progress line once the inventory is collected")
    with open_reader(stack.lake) as conn:
        [(instances,)] = conn.execute("SELECT count(*) FROM rds_instances").fetchall()
    first = progress()[0]
    assert int(first.group(1)) < int(first.group(2))
    assert int(first.group(3)) == instances
    assert stack.output.read_text().count("history: waiting for the first collection") <= 1


CHECKED_METRICS = ("CPUUtilization", "FreeStorageSpace")


def served(
    simulated: SimulatedInstance, metric: str, statistic: str, period: int, start: datetime,
    end: datetime,
) -> dict[datetime, float]:  # fmt: skip
    """What the local AWS serves for [start, end) (naive UTC): its generator, seed 7."""
    seconds, values = series(
        simulated.profile(7), metric, statistic, period, start.replace(tzinfo=UTC),
        end.replace(tzinfo=UTC), datetime.now(UTC),
    )  # fmt: skip
    return {
        naive_utc(datetime.fromtimestamp(second, UTC)): value
        for second, value in zip(seconds.tolist(), values.tolist(), strict=True)
    }


def test_a_new_machine_gets_cloudwatchs_hourly_history_and_three_days_raw(stack: Stack) -> None:
    """With default settings, the first start fills, for every instance, the hourly tier from
    its creation or from the oldest hour CloudWatch keeps (455 days), whichever is later, and
    the raw tier's look-back (METRICS_BACKFILL_DAYS): every hour settled in the fetch logs and
    the values those of the local AWS. analytics-db is older than CloudWatch's history."""
    settings = load_settings(stack.env)

    def inventory(conn: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], tuple[Any, ...]]:
        """The default fleet as discovered: (region, create_time, status) by (account,
        instance); newcomer-db, created 20 minutes in, has no settled day yet."""
        rows = conn.execute(
            "SELECT account_id, instance_id, region, create_time, status FROM rds_instances "
            "WHERE instance_id <> 'newcomer-db'"
        ).fetchall()
        return {(row[0], row[1]): row[2:] for row in rows}

    def hours_lacking(
        conn: duckdb.DuckDBPyConnection,
        table: str,
        first_of: dict[tuple[str, str], datetime],
        end: datetime,
    ) -> int:
        """Hours from each instance's first to `end` without a settled fetch in `table`."""
        [(lacking,)] = conn.execute(
            f"""
            WITH wanted AS (
                SELECT account_id, instance_id, unnest(range(first, $end, INTERVAL 1 HOUR)) AS hour
                FROM (SELECT unnest($accounts) AS account_id, unnest($ids) AS instance_id,
                             unnest($firsts) AS first)
            )
            SELECT count(*) FROM wanted ANTI JOIN (SELECT * FROM {table} WHERE settled)
            USING (account_id, instance_id, hour)
            """,
            {
                "accounts": [account for account, _ in first_of],
                "ids": [instance_id for _, instance_id in first_of],
                "firsts": list(first_of.values()),
                "end": end,
            },
        ).fetchall()
        return int(lacking)

    def history_complete() -> bool:
        now = naive_utc(datetime.now(UTC))
        end = settled_days(now, settings.settle_delay, None)[-1] + DAY
        edge = oldest_fetchable_hour(now, None)
        raw = healing_hours(now, settings.backfill_days, settings.settle_delay)
        if not stack.snapshot.exists():  # the pipeline's first write has not been published
            return False
        with open_reader(stack.lake) as conn:
            created = {key: row[1] for key, row in inventory(conn).items()}
            hourly_firsts = {
                key: max(floor_hour(when), edge)
                for key, when in created.items()
                if max(floor_hour(when), edge) < end
            }
            raw_firsts = {key: max(floor_hour(when), raw[0]) for key, when in created.items()}
            return (
                bool(hourly_firsts)
                and hours_lacking(conn, "rds_metric_hourly_fetches", hourly_firsts, end) == 0
                and hours_lacking(conn, "rds_metric_fetches", raw_firsts, raw[-1] + HOUR) == 0
            )

    wait_for(history_complete, 900, "15 months of hourly data and the raw look-back")
    now = naive_utc(datetime.now(UTC))
    hourly_end = settled_days(now, settings.settle_delay, None)[-1] + DAY
    raw_hours = healing_hours(now, settings.backfill_days, settings.settle_delay)
    fleet = {
        (i.account_id, i.instance_id): i
        for i in default_fleet(stack.started_at, ("us-east-1", "eu-west-1"), simulated_accounts(2))
    }
    with open_reader(stack.lake) as conn:
        listed = inventory(conn)
    assert set(listed) == set(fleet)
    oldest_when_started = oldest_fetchable_hour(naive_utc(stack.started_at), None)
    with open_reader(stack.lake) as conn:
        stored = {
            (account, instance_id, metric): rows
            for account, instance_id, metric, rows in conn.execute(
                f"""
                SELECT account_id, instance_id, metric,
                       list((hour, {", ".join(HOURLY_STATISTIC_COLUMNS.values())}) ORDER BY hour)
                FROM rds_metrics_hourly WHERE hour < $end GROUP BY ALL
                """,
                {"end": hourly_end},
            ).fetchall()
        }
        raw_rows = {
            (account, instance_id): dict(rows)
            for account, instance_id, rows in conn.execute(
                """
                SELECT account_id, instance_id, list((ts, average) ORDER BY ts)
                FROM rds_metrics WHERE metric = 'CPUUtilization' AND ts >= $first AND ts < $end
                GROUP BY ALL
                """,
                {"first": raw_hours[0], "end": raw_hours[-1] + HOUR},
            ).fetchall()
        }
    for key, (_, created, status) in listed.items():
        metrics_stored = {metric for (a, i, metric) in stored if (a, i) == key}
        oldest = max(floor_hour(created), oldest_when_started)
        if status == "stopped":
            stopped = naive_utc(stack.started_at) - timedelta(days=STOPPED_DAYS_AGO)
            hours = [row[0] for row in stored[(*key, "CPUUtilization")]]
            assert hours[0] == floor_hour(created)
            assert stopped - HOUR <= hours[-1] <= stopped + HOUR
            assert max(raw_rows[key]) <= stopped
            continue
        # The local AWS's own instance, with the creation time it served.
        simulated = dataclasses.replace(fleet[key], created_at=created.replace(tzinfo=UTC))
        raw_expected = served(
            simulated, "CPUUtilization", "Average", settings.period_seconds, raw_hours[0],
            raw_hours[-1] + HOUR,
        )  # fmt: skip
        assert raw_rows[key] == pytest.approx(raw_expected), key
        if oldest >= hourly_end:  # created today: no settled day yet
            assert metrics_stored == set()
            continue
        # What the local AWS served of the metrics asked: each kind publishes its own (an
        # Aurora instance no FreeStorageSpace; a reader its replica lag; DB load with PI on).
        served_metrics = {
            metric
            for metric in settings.metrics
            if served(simulated, metric, "SampleCount", 3600, oldest, hourly_end)
        }
        assert metrics_stored == served_metrics, key
        for metric in (m for m in CHECKED_METRICS if m in served_metrics):
            rows = stored[(*key, metric)]
            first = rows[0][0]
            if created < oldest_when_started:  # older than CloudWatch's history
                assert oldest_when_started <= first <= oldest_fetchable_hour(now, None)
            else:
                assert first == floor_hour(created)
            expected = {
                statistic: served(simulated, metric, statistic, 3600, first, hourly_end)
                for statistic in HOURLY_STATISTIC_COLUMNS
            }
            assert [row[0] for row in rows] == sorted(expected["Average"])
            for hour, *values in rows:
                assert values == pytest.approx(
                    [expected[statistic][hour] for statistic in HOURLY_STATISTIC_COLUMNS]
                ), (key, metric, hour)


def test_fresh_collection_keeps_its_pace_while_the_history_is_fetched(stack: Stack) -> None:
    """Every fresh run until the hourly tier's backfill ended (those beside it included)
    succeeds, and the freshness check passes every time it is evaluated."""
    instance = DagsterInstance.from_config(str(stack.home))

    def runs(job: str, statuses: list[DagsterRunStatus] | None = None) -> list[Any]:
        return list(instance.get_run_records(RunsFilter(job_name=job, statuses=statuses)))

    wait_for(
        lambda: (
            bool(runs("hourly_history_job", [DagsterRunStatus.SUCCESS]))
            and not runs("hourly_history_job", UNFINISHED)
        ),
        900,
        "the hourly tier's backfill runs to finish",
    )
    ended = max(record.end_time for record in runs("hourly_history_job"))

    def fresh_until_the_backfill_ended() -> list[Any]:
        return [r for r in runs("fresh_collection_job") if r.create_timestamp.timestamp() <= ended]

    wait_for(
        lambda: all(r.dagster_run.is_finished for r in fresh_until_the_backfill_ended()),
        300,
        "the fresh runs beside the backfill to finish",
    )
    statuses = [r.dagster_run.status for r in fresh_until_the_backfill_ended()]
    assert statuses and set(statuses) == {DagsterRunStatus.SUCCESS}
    evaluations = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey("rds_metrics"), "rds_metrics_freshness"), limit=1_000
    )
    assert AssetCheckExecutionRecordStatus.SUCCEEDED in {e.status for e in evaluations}
    failed = [e for e in evaluations if e.status == AssetCheckExecutionRecordStatus.FAILED]
    assert failed == []


def test_ctrl_c_stops_everything(stack: Stack) -> None:
    """With the output piped through tee, which Ctrl-C stops too (start.sh's writes then
    fail), and under load. Everything start.sh started (the local AWS, dagster dev and its
    webserver, daemon, code servers and runs) ran in the script's session: none of it may be
    left once the pipeline has exited. A stack of its own (the module's other tests ran
    elsewhere) is stopped once it has written, so that a restart has a warehouse to resume."""
    wait_for(stack.catalog.exists, 300, "the first write")
    assert ctrl_c_under_load(stack.process) == []


def test_a_restart_resumes_and_stops_again(stack: Stack) -> None:
    """Started again on the same warehouse: the banner says collection resumes, not that the
    first collection starts; Ctrl-C stops it all again."""
    if stack.process.poll() is None:  # a new stack: another module's tests ran in between
        wait_for(stack.catalog.exists, 300, "the first write")
        assert ctrl_c_under_load(stack.process) == []
    kept = sorted(path.name for path in stack.catalog.parent.iterdir())
    assert stack.catalog.exists(), (
        f"the first start left no lake catalog, only {kept}, after {stack.tests}; "
        f"its output: {stack.output.read_text()[-2000:]}"
    )
    output = stack.output.with_name("restart.log")
    stack.process = start(stack.env, output)  # the fixture stops this one if the test fails
    wait_for(lambda: "Press Ctrl-C to stop." in output.read_text(), 300, "the restart banner")
    banner = output.read_text()
    assert "The first collection starts now" not in banner
    assert "Collection resumes now: the gap sensor collects the hours missed" in banner
    assert ctrl_c_under_load(stack.process) == []
