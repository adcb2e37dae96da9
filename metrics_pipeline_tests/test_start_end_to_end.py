"""The README's one command, driven as a new user would: start, see data arrive, look at the
UI in a real browser, stop with Ctrl-C, nothing left running."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from metrics_pipeline.local_aws.fleet import default_fleet, simulated_accounts
from metrics_pipeline.local_aws.signals import series
from metrics_pipeline.settings import snapshot_path_for
from metrics_pipeline_tests.helpers import PROJECT_ROOT, free_port, wait_for

pytestmark = pytest.mark.e2e

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
AUTOMATION = (
    "fresh_collection_schedule",
    "retention_schedule",
    "backup_schedule",
    "gap_healing_sensor",
    "derived_assets_automation",
    "run_failure_alert",
)


@dataclass
class Stack:
    process: subprocess.Popen[str]
    ui: str
    database: Path
    home: Path
    output: Path

    @property
    def snapshot(self) -> Path:
        """What readers open while the pipeline runs (see snapshot.py)."""
        return snapshot_path_for(self.database)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("stack")
    ui_port = free_port()
    env = {
        **os.environ,
        "DAGSTER_PORT": str(ui_port),
        "LOCAL_AWS_PORT": str(free_port()),
        "DAGSTER_HOME": str(folder / "dagster_home"),
        "METRICS_DUCKDB_PATH": str(folder / "metrics.duckdb"),
        "METRICS_FRESH_INTERVAL_MINUTES": "1",
        "LOCAL_AWS_ARGS": "--late-minutes 0",
    }
    for name in ("AWS_ENDPOINT_URL", "METRICS_AWS_REGIONS"):
        env.pop(name, None)
    output = folder / "start.log"
    process = subprocess.Popen(
        ["bash", "scripts/start.sh"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=output.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    stack = Stack(
        process,
        f"http://127.0.0.1:{ui_port}",
        folder / "metrics.duckdb",
        folder / "dagster_home",
        output,
    )
    try:
        wait_for(lambda: "Press Ctrl-C to stop." in output.read_text(), 300, "the start banner")
        yield stack
    finally:
        if process.poll() is None:  # a test failed before Ctrl-C: stop as a user would
            os.killpg(process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        # The services run in process groups of their own, all in the script's session.
        subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)


def test_banner_says_where_everything_is(stack: Stack) -> None:
    banner = stack.output.read_text()
    assert f"Dagster UI:  {stack.ui}" in banner
    assert f"DuckDB file: {stack.database}" in banner
    assert "Press Ctrl-C to stop." in banner
    assert "local AWS on http://127.0.0.1:" in banner
    assert (
        "then the fresh schedule collects every minute." in banner
    )  # METRICS_FRESH_INTERVAL_...=1


def test_first_fresh_run_collects_the_simulated_fleet(stack: Stack) -> None:
    instance = DagsterInstance.from_config(str(stack.home))
    wait_for(
        lambda: bool(
            instance.get_runs(
                RunsFilter(job_name="fresh_collection_job", statuses=[DagsterRunStatus.SUCCESS])
            )
        ),
        150,
        "the first fresh run",
    )
    with duckdb.connect(str(stack.snapshot), read_only=True) as conn:
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
        env={**os.environ, "METRICS_DUCKDB_PATH": str(stack.database)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert {
        (row["account_id"], row["instance_id"]): row["status"] for row in json.loads(listed.stdout)
    } == instances


def test_ui_shows_the_asset_and_its_partition_in_a_browser(stack: Stack) -> None:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        if os.environ.get("CI"):
            pytest.fail(
                "Debian's chromium and chromium-driver are required (scripts/test.sh installs them)"
            )
        pytest.skip("chromium/chromedriver not installed (scripts/test.sh installs them as root)")
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1400,900",
    ):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)

    def page_text(path: str, showing: str, screenshot: str, unless: str = "\0") -> str:
        """The page's text once it shows `showing` (and not `unless`); a screenshot of it in
        test-artifacts/."""
        browser.get(f"{stack.ui}{path}")

        def shown(b: webdriver.Chrome) -> str:
            body = b.find_element(By.TAG_NAME, "body").text
            if showing in body and unless in body:
                b.get(f"{stack.ui}{path}")  # loaded, with what it has to wait for: look again
                return ""
            return body if showing in body else ""

        text = WebDriverWait(browser, 120, poll_frequency=3).until(shown)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / screenshot))
        return text

    try:
        # The snapshot is published as the run writes, a moment before Dagster records the
        # materialization: wait for the UI to count it.
        page = page_text(
            "/assets/rds_metrics?view=partitions",
            "Materialized",
            "rds_metrics_partitions.png",
            unless="Materialized (0)",
        )
        # Everything that runs on its own is listed and on, with no click needed.
        automation = page_text("/automation", "run_failure_alert", "automation.png")

        def switched_on(b: webdriver.Chrome) -> int:
            """Each row has a selection box (unticked) and its on/off switch, also a checkbox;
            the switches render after the names."""
            return sum(box.is_selected() for box in b.find_elements(By.CSS_SELECTOR, "input"))

        with contextlib.suppress(TimeoutException):
            WebDriverWait(browser, 30).until(lambda b: switched_on(b) >= len(AUTOMATION))
        ticked = switched_on(browser)
        browser.save_screenshot(str(ARTIFACTS / "automation.png"))
    finally:
        browser.quit()
    for name in AUTOMATION:
        assert name in automation
    assert ticked == len(AUTOMATION)
    assert "rds_metrics" in page
    with duckdb.connect(str(stack.snapshot), read_only=True) as conn:
        [(hour,)] = conn.execute("SELECT max(hour) FROM rds_metric_fetches").fetchall()
    assert hour.strftime("%Y-%m-%d-%H:00") in page
    assert "Materialized (0)" not in page


def test_the_terminal_says_how_far_the_look_back_has_come(stack: Stack) -> None:
    """start.sh's terminal follows the history while it fills (that it ends with a line once
    complete is tested with the daemon in test_daemon_end_to_end.py)."""
    filling = re.compile(r"history: (\d+) of (\d+) hours for (\d+) instances; .*")

    def progress() -> list[re.Match[str]]:
        lines = stack.output.read_text().splitlines()
        return [match for line in lines if (match := filling.fullmatch(line))]

    wait_for(lambda: bool(progress()), 300, "a progress line once the inventory is collected")
    with duckdb.connect(str(stack.snapshot), read_only=True) as conn:
        [(instances,)] = conn.execute("SELECT count(*) FROM rds_instances").fetchall()
    first = progress()[0]
    assert int(first.group(1)) < int(first.group(2))
    assert int(first.group(3)) == instances
    assert stack.output.read_text().count("history: waiting for the first collection") <= 1


def test_ctrl_c_stops_everything(stack: Stack) -> None:
    os.killpg(stack.process.pid, signal.SIGINT)
    stack.process.wait(timeout=60)
    assert "Stopped." in stack.output.read_text()
    time.sleep(1)
    # Everything start.sh started (the local AWS, dagster dev and its webserver, daemon and
    # code servers) ran in the script's session: none of it may be left.
    leftovers = subprocess.run(
        ["pgrep", "-s", str(stack.process.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftovers == []
