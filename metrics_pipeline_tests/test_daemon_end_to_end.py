"""The real dagster daemon with the project's dagster.yaml and nothing switched on by hand: the
gap sensor starts the first collection at once and heals the look-back window in bounded
ticks that follow each other, then the hourly tier's days; the fresh schedule fires, the
automation sensor materializes the daily tier and the reports, and the warehouse ends up with
exactly what CloudWatch (a moto server) holds."""

import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from statistics import mean

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.definitions.run_request import InstigatorType

from metrics_pipeline.healing.progress import WAITING_LINE
from metrics_pipeline.history.window import settled_days
from metrics_pipeline.hours import floor_hour, healing_hours, utc_now
from metrics_pipeline.warehouse.readers import open_reader
from metrics_pipeline_tests.helpers import DAGSTER_DAEMON, pipeline_env, wait_for
from metrics_pipeline_tests.moto_fleet import create_instance, put_metrics, raw_values

pytestmark = pytest.mark.e2e

# One instance, one metric, five statistics, 12 periods: 60 datapoints per hour. A budget of
# 720 per tick makes the 24-hour look-back (less the hours the first collection took) take
# two healing runs, the second launched once the first has finished.
DATAPOINTS_PER_HOUR = 60
BUDGET_HOURS = 12
HOURLY_TIER_DAYS = 2


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the daemon's whole group and check that nothing of it is left behind."""
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)

    def group_gone() -> bool:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        wait_for(group_gone, 30, "the daemon's processes to exit")
    finally:
        if not group_gone():
            os.killpg(process.pid, signal.SIGKILL)


def sensor_ticks_with_runs(instance: DagsterInstance, name: str) -> int:
    [state] = [
        state
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if state.instigator_name == name
    ]
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1000)
    return sum(1 for tick in ticks if tick.run_ids)


def test_a_new_deployment_fills_its_look_back_window_and_everything_runs(
    moto_server: str, tmp_path: Path
) -> None:
    this_hour = floor_hour(utc_now())
    create_instance("us-east-1", "orders-db")
    first = this_hour - timedelta(days=1, hours=2)
    expected = put_metrics(
        "us-east-1", ["orders-db"], ["CPUUtilization"], first, this_hour + timedelta(hours=2)
    )
    env = pipeline_env(
        tmp_path,
        moto_server,
        METRICS_CLOUDWATCH_METRICS="CPUUtilization",
        # Every 5 minutes: a tick or two while it runs, not a run (and its rollups) a minute
        # competing with the look-back on a machine the rest of the suite keeps busy.
        METRICS_FRESH_INTERVAL_MINUTES="5",
        METRICS_BACKFILL_DAYS="1",
        METRICS_BACKFILL_INTERVAL_MINUTES="1",
        METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK=str(BUDGET_HOURS * DATAPOINTS_PER_HOUR),
        # The hourly tier's backfill of two days, not 455: the same code, a test's length.
        METRICS_HOURLY_RETENTION_DAYS=str(HOURLY_TIER_DAYS),
    )
    # The last settled day of the hourly tier, and CloudWatch's samples of each of its hours.
    tier_day = settled_days(utc_now(), timedelta(minutes=15), HOURLY_TIER_DAYS)[-1]
    samples: dict[datetime, list[float]] = {}
    for _, _, ts, column in expected:
        if column == "average" and ts.date() == tier_day.date():
            samples.setdefault(ts.replace(minute=0), []).extend(
                raw_values("orders-db", "CPUUtilization", ts)
            )
    snapshot = Path(env["METRICS_DUCKDB_PATH"]).with_name("metrics.snapshot.duckdb")
    # The instance's storage is created once, before the processes that share it start (as
    # `dagster dev` does): SQLite storage created by two processes at once can collide.
    instance = DagsterInstance.from_config(env["DAGSTER_HOME"])
    daemon = subprocess.Popen(
        [DAGSTER_DAEMON, "run", "-m", "metrics_pipeline.definitions"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "daemon.log").open("wb"),
        start_new_session=True,
    )
    # What start.sh runs beside dagster dev: the look-back's progress, until complete.
    progress_log = tmp_path / "progress.log"
    watch = ["-m", "metrics_pipeline.healing.progress", "--every", "2"]
    watcher = subprocess.Popen(
        [sys.executable, "-u", *watch, "--while-pid", str(daemon.pid)],
        env=env,
        cwd=tmp_path,
        stdout=progress_log.open("w"),
        stderr=subprocess.STDOUT,
    )

    def read(sql: str) -> list[tuple]:
        if not snapshot.exists():
            return []
        with open_reader(snapshot) as conn:
            return conn.execute(sql).fetchall()

    def look_back_collected() -> bool:
        wanted = set(healing_hours(utc_now(), 1, timedelta(minutes=15)))
        settled = {h for (h,) in read("SELECT hour FROM rds_metric_fetches WHERE settled")}
        return wanted <= settled

    def derived_assets_caught_up() -> bool:
        names = ("rds_metrics_hourly", "rds_metrics_daily", "pipeline_health", "rightsizing_report")
        if not all(instance.get_latest_materialization_event(AssetKey(n)) for n in names):
            return False
        tiers = read(
            f"""
            SELECT (SELECT count(*) FROM rds_metrics_hourly WHERE hour::DATE = '{tier_day.date()}'),
                   (SELECT max(hours) FROM rds_metrics_daily WHERE day = '{tier_day}')
            """
        )
        return bool(tiers) and tiers[0] == (len(samples), len(samples))

    def reports_follow_the_last_healing_run() -> bool:
        healing = instance.get_run_records(RunsFilter(job_name="healing_job"))
        if not healing or any(record.end_time is None for record in healing):
            return False
        last_healed = max(record.end_time for record in healing)
        return all(
            (event := instance.get_latest_materialization_event(AssetKey(report)))
            and event.timestamp > last_healed
            for report in ("pipeline_health", "rightsizing_report")
        )

    try:
        wait_for(look_back_collected, 420, "every look-back hour collected settled")
        watcher.wait(timeout=60)  # it looks every 2 s and ends once the look-back is complete
        wait_for(derived_assets_caught_up, 240, "the long tiers and reports to catch up")
        # The automation sensor evaluates again after the last healing run; the whole suite
        # keeps the machine busy meanwhile.
        wait_for(reports_follow_the_last_healing_run, 300, "the reports after the history")
        # Before stopping: a run that stopping the daemon interrupts is not the pipeline's fault.
        failed = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
    finally:
        watcher.kill()
        stop_process_group(daemon)
    assert failed == [], (tmp_path / "daemon.log").read_text()[-3000:]

    # The progress said how far the history was while it filled, then that it was complete.
    progress = progress_log.read_text().splitlines()
    assert watcher.returncode == 0, progress
    filling = [
        re.fullmatch(r"history: (\d+) of (\d+) hours for 1 instance; (.*)", line)
        for line in progress[:-2]
    ]
    assert (progress[0] == WAITING_LINE or filling[0]) and all(filling[1:]), progress
    assert any(m and int(m.group(1)) < int(m.group(2)) for m in filling), progress
    [complete] = re.findall(r"history: (\d+) of \1 hours for 1 instance; complete", progress[-2])
    assert progress[-1] == (
        f"The look-back window is complete: {complete} settled hours for 1 instance. The "
        "reports are computed again on it within minutes."
    )

    # The first collection came from the gap sensor at start, not from the cron.
    runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    first_run = min(runs, key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp)
    assert first_run.job_name == "fresh_collection_job"
    assert first_run.tags["dagster/run_key"] == "first collection"

    # The look-back came in bounded healing runs, each launched by its own sensor tick.
    healing = instance.get_runs(RunsFilter(job_name="healing_job"))
    assert len(healing) >= 2
    for run in healing:
        assert run.tags["dagster/priority"] == "-10"
        first_key = run.tags["dagster/asset_partition_range_start"]
        last_key = run.tags["dagster/asset_partition_range_end"]
        assert 1 <= hours_between(first_key, last_key) <= BUDGET_HOURS
    assert sensor_ticks_with_runs(instance, "gap_healing_sensor") >= 1 + len(healing)

    # The data is what CloudWatch was given, for every hour fetched.
    fetched = {h for (h,) in read("SELECT DISTINCT hour FROM rds_metric_fetches")}
    rows = read("SELECT ts, average, minimum, maximum, sum, sample_count FROM rds_metrics")
    columns = ("average", "minimum", "maximum", "sum", "sample_count")
    got = {
        ("orders-db", "CPUUtilization", r[0], c): v
        for r in rows
        for c, v in zip(columns, r[1:], strict=True)
    }
    want = {k: v for k, v in expected.items() if k[2].replace(minute=0) in fetched}
    assert got == pytest.approx(want)

    # The hourly tier holds CloudWatch's statistics of each hour's samples, percentiles
    # included; the daily tier is made of them.
    hourly = {
        row[0]: row[1:]
        for row in read(
            "SELECT hour, average, minimum, maximum, sample_count, p50, p95, p99 "
            f"FROM rds_metrics_hourly WHERE hour::DATE = '{tier_day.date()}'"
        )
    }
    assert hourly == {
        hour: pytest.approx(
            (
                mean(values), min(values), max(values), len(values),
                *(np.percentile(values, p) for p in (50, 95, 99)),
            )
        )
        for hour, values in samples.items()
    }  # fmt: skip
    every_sample = [value for values in samples.values() for value in values]
    [daily] = read(
        "SELECT average, minimum, maximum, sample_count, max_hourly_p99, hours "
        f"FROM rds_metrics_daily WHERE day = '{tier_day}'"
    )
    assert daily == pytest.approx(
        (
            mean(every_sample), min(every_sample), max(every_sample), len(every_sample),
            max(np.percentile(values, 99) for values in samples.values()), len(samples),
        )
    )  # fmt: skip
    tier_runs = instance.get_runs(RunsFilter(job_name="hourly_history_job"))
    assert tier_runs and all(run.tags["dagster/priority"] == "-20" for run in tier_runs)
    assert read("SELECT instance_id FROM rds_rightsizing") == [("orders-db",)]
    health = instance.get_latest_materialization_event(AssetKey("pipeline_health"))
    assert health.asset_materialization.metadata["collection_runs"].value >= 1


def hours_between(first_key: str, last_key: str) -> int:
    """The hours of a partition range, both ends included."""
    first = datetime.strptime(first_key, "%Y-%m-%d-%H:%M")
    last = datetime.strptime(last_key, "%Y-%m-%d-%H:%M")
    return int((last - first) / timedelta(hours=1)) + 1
