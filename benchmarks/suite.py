"""The benchmark suite: what collection costs, measured in one run on one machine, every figure
beside its target or as a ratio to a baseline measured in the same run.

    .venv/bin/python -m benchmarks.suite --size small            # about 8 minutes
    .venv/bin/python -m benchmarks.suite --size full --output results.md

The local AWS runs in a process of its own (its CPU is not ours) and every collection in a
child process (`benchmarks/collect.py`), whose CPU time and peak memory come from wait4().
Nothing is asserted here; `metrics_pipeline_tests/test_benchmarks.py` runs the `ci` size and
checks request counts and the memory bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.analyst_queries import measure_queries
from benchmarks.collect import REGIONS
from benchmarks.dashboard_pages import TARGET_SECONDS as TARGET_DASHBOARD_SECONDS
from benchmarks.dashboard_pages import measure_pages
from benchmarks.local_fleet import PROJECT_ROOT, local_aws
from benchmarks.tick_growth import measure_storage
from metrics_pipeline.catalog import RDS_INSTANCE_DEFAULTS
from metrics_pipeline.collection.budget import OLDER_DATAPOINTS_PER_SECOND
from metrics_pipeline.insights.source import REQUESTS_PER_INSTANCE_HOUR
from metrics_pipeline.warehouse.schema import HOURLY_TABLE, METRICS_TABLE, schema_sql

# CloudWatch's quota for data older than three hours, per account and region.
TARGET_DATAPOINTS_PER_CPU_SECOND = 396_000
TARGET_PEAK_RSS_MIB = 1024
TARGET_FRESH_SECONDS = 60
# A tick on a warehouse holding the long history, against one on an empty warehouse.
TARGET_TICK_GROWTH = 1.5


@dataclass(frozen=True)
class HistorySize:
    """The long history's figures: the hourly tier's first backfill, a tick as the warehouse
    grows, and analysts' queries on the lake against the DuckDB file."""

    backfill_instances: int
    backfill_days: int
    tick_instances: int
    raw_days: int  # of the warehouse a tick is measured on
    hourly_days: int
    query_instances: int
    query_raw_days: int
    query_hourly_days: int
    repeats: int


@dataclass(frozen=True)
class Size:
    instances: int
    metrics: tuple[str, ...]
    windows: tuple[int, ...]  # hours
    baseline_hours: int
    history: HistorySize
    pi_window: tuple[int, int]  # (instances with PI on, hours) of Performance Insights' load
    dashboard: tuple[int, int]  # (instances, days of the raw tier) the dashboard's pages show
    extra_fleet: tuple[int, int] | None = None  # (instances, hours): memory at another shape


SIZES = {
    "ci": Size(
        6,
        ("CPUUtilization", "FreeStorageSpace"),
        (1, 6),
        2,
        HistorySize(4, 3, 4, 1, 3, 3, 1, 2, 1),
        pi_window=(4, 2),
        dashboard=(6, 1),
    ),
    "small": Size(
        100,
        RDS_INSTANCE_DEFAULTS,
        (1, 24, 72),
        6,
        HistorySize(100, 60, 50, 3, 60, 50, 3, 30, 3),
        pi_window=(100, 3),
        dashboard=(100, 7),
    ),
    "full": Size(
        500,
        RDS_INSTANCE_DEFAULTS,
        (1, 24, 72),
        6,
        HistorySize(500, 455, 200, 30, 455, 200, 7, 90, 3),
        pi_window=(500, 3),
        dashboard=(500, 7),
        extra_fleet=(2000, 24),
    ),
}
PI_FREE_RETENTION_DAYS = 7
# How much older than the backfill the generated fleet is: every day asked has data.
FLEET_OLDER_BY_DAYS = 30


@dataclass
class Measured:
    """One child process: its figures and what the kernel says it used."""

    figures: dict[str, Any]
    cpu_seconds: float
    peak_rss_mib: float
    wall_seconds: float


@dataclass
class Results:
    size: str
    runs: dict[str, Measured] = field(default_factory=dict)
    bare_insert_rows_per_second: float = 0.0
    tick_growth: dict[str, Any] = field(default_factory=dict)  # tick_growth.measure_storage
    queries: list[dict[str, Any]] = field(default_factory=list)  # analyst_queries
    history_server_cpu_seconds: float = 0.0  # the local AWS's, during the hourly backfill
    dashboard: dict[str, Any] = field(default_factory=dict)  # dashboard_pages.measure_pages


def measure(
    mode: str, endpoint: str, hours: int, metrics: tuple[str, ...], folder: Path
) -> Measured:
    """Runs benchmarks.collect in a child process and reads its rusage."""
    folder.mkdir(parents=True)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env["BENCHMARK_SPAWNED_AT"] = repr(time.time())
    began = time.perf_counter()
    with (folder / "child.log").open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.collect", mode, "--endpoint", endpoint,
             "--folder", str(folder), "--hours", str(hours), "--metrics", ",".join(metrics)],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=log,
        )  # fmt: skip
        output = child.stdout.read().decode() if child.stdout else ""
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{mode} failed: {(folder / 'child.log').read_text()[-3000:]}")
    figures = json.loads(output.strip().splitlines()[-1])
    # The child's own high-water mark (VmHWM): wait4's maxrss would include the peak of this
    # process, which the child's memory starts from across fork and exec.
    return Measured(figures, usage.ru_utime + usage.ru_stime, figures["peak_rss_mib"], wall)


def bare_insert_rows_per_second(database: Path, folder: Path) -> float:
    """A plain INSERT of the same rows into the same table (primary key included) in a new
    DuckDB file: the write's yardstick."""
    rows_file = folder / "rows.parquet"
    with duckdb.connect(str(database), read_only=True) as conn:
        conn.execute(f"COPY (SELECT * FROM {METRICS_TABLE}) TO '{rows_file}'")
    with duckdb.connect(str(folder / "bare.duckdb")) as conn:
        conn.execute(schema_sql(keys=True))
        began = time.perf_counter()
        [(rows,)] = conn.execute(
            f"INSERT INTO {METRICS_TABLE} SELECT * FROM read_parquet('{rows_file}')"
        ).fetchall()
        # Committed, not checkpointed: as the pipeline's write_seconds counts it.
        return rows / (time.perf_counter() - began)


def run_suite(size_name: str, folder: Path, log: Any = print) -> Results:
    size = SIZES[size_name]
    results = Results(size_name)
    with local_aws(size.instances, folder) as aws:
        endpoint = aws.endpoint
        for hours in size.windows:
            log(f"collecting a {hours} h window of {size.instances} instances")
            results.runs[f"window {hours}h"] = measure(
                "window", endpoint, hours, size.metrics, folder / f"window-{hours}"
            )
        largest = max(size.windows)
        results.bare_insert_rows_per_second = bare_insert_rows_per_second(
            folder / f"window-{largest}" / "metrics.duckdb", folder / f"window-{largest}"
        )
        log("a fresh tick")
        results.runs["fresh"] = measure("fresh", endpoint, 2, size.metrics, folder / "fresh")
        for mode in ("window", "partitions", "old-system"):
            log(f"baseline window ({size.baseline_hours} h): {mode}")
            results.runs[f"baseline {mode}"] = measure(
                mode, endpoint, size.baseline_hours, size.metrics, folder / f"baseline-{mode}"
            )
    instances, hours = size.pi_window
    with local_aws(instances, folder, pi_days=PI_FREE_RETENTION_DAYS) as aws:
        log(f"Performance Insights' load: {hours} h of {instances} instances")
        results.runs["pi"] = measure("pi", aws.endpoint, hours, size.metrics, folder / "pi")
    run_history(size, folder, results, log)
    instances, days = size.dashboard
    log(f"the dashboard's pages: {instances} instances, {days} days")
    (folder / "dashboard").mkdir()
    results.dashboard = measure_pages(folder / "dashboard", instances, days, repeats=5)
    if size.extra_fleet:
        instances, hours = size.extra_fleet
        with local_aws(instances, folder) as aws:
            log(f"collecting a {hours} h window of {instances} instances")
            results.runs[f"fleet {instances}"] = measure(
                "window", aws.endpoint, hours, size.metrics, folder / f"fleet-{instances}"
            )
    return results


def run_history(size: Size, folder: Path, results: Results, log: Any) -> None:
    history = size.history
    age = history.backfill_days + FLEET_OLDER_BY_DAYS
    with local_aws(history.backfill_instances, folder, age_days=age) as aws:
        log(f"the hourly tier's first backfill: {history.backfill_days} days")
        began = aws.cpu_seconds()
        results.runs["history backfill"] = measure(
            "history", aws.endpoint, history.backfill_days * 24, size.metrics, folder / "history"
        )
        results.history_server_cpu_seconds = aws.cpu_seconds() - began
    with local_aws(history.tick_instances, folder) as aws:
        log(f"a tick, empty and with {history.raw_days} + {history.hourly_days} days of history")
        tick_folder = folder / "tick-growth"
        tick_folder.mkdir()
        results.tick_growth = measure_storage(
            "local_lake", tick_folder, aws.endpoint, history.raw_days, history.hourly_days,
            history.repeats,
        )  # fmt: skip
    log("analysts' queries, the lake against the DuckDB file")
    queries_folder = folder / "queries"
    queries_folder.mkdir()
    results.queries = measure_queries(
        queries_folder, history.query_instances, history.query_raw_days,
        history.query_hourly_days, history.repeats,
    )  # fmt: skip


def backfill_floor_seconds(run: Measured, units: int) -> float:
    """The quota's floor: the datapoints of each account and region at 396,000 per second,
    the units side by side (the generated fleet spreads evenly over them)."""
    return run.figures["datapoints"] / units / OLDER_DATAPOINTS_PER_SECOND


def history_rows(results: Results) -> list[tuple[str, str, str, str]]:
    history = SIZES[results.size].history
    backfill = results.runs["history backfill"]
    figures = backfill.figures
    floor_seconds = backfill_floor_seconds(backfill, len(REGIONS.split(",")))
    seconds = figures["phases"]["collection"]
    requests = figures["cloudwatch_requests"]
    rows = [
        (
            f"hourly tier's first backfill, {history.backfill_days} days of "
            f"{history.backfill_instances} instances ({figures['datapoints']:,} datapoints)",
            f"{seconds:,.0f} s, {requests:,} requests (floor {figures['minimum_requests']:,}), "
            f"${figures['estimated_cost_usd']:,.2f} of GetMetricData",
            f"the quota's floor: {floor_seconds:,.0f} s",
            f"{seconds / max(floor_seconds, 1e-9):.1f}x the floor's time, "
            f"{requests / max(1, figures['minimum_requests']):.2f}x its requests",
        )
    ]
    process_rate = figures["datapoints"] / backfill.cpu_seconds
    step_rate = figures["datapoints"] / max(figures["cpu_seconds"], 1e-9)
    rows.append((
        "hourly tier's first backfill, datapoints per CPU-second of the pipeline's process "
        f"(the local AWS meanwhile: {results.history_server_cpu_seconds:,.0f} CPU-s of the "
        f"{seconds:,.0f} s)",
        f"{process_rate:,.0f} (collection step alone {step_rate:,.0f})",
        f">= {OLDER_DATAPOINTS_PER_SECOND:,} (the quota of one account and region)",
        "met" if process_rate >= OLDER_DATAPOINTS_PER_SECOND else "missed",
    ))  # fmt: skip
    tick = results.tick_growth
    grown = (
        f"{tick['rows'].get(METRICS_TABLE, 0):,} raw rows ({history.raw_days} d), "
        f"{tick['rows'].get(HOURLY_TABLE, 0):,} hourly ({history.hourly_days} d): "
        f"{tick['warehouse_mib']:,.0f} MiB"
    )
    for figure, empty, full, ratio, unit in (
        ("wall time", "tick_seconds_empty", "tick_seconds_full", "tick_seconds_ratio", "s"),
        ("bytes written", "tick_written_mib_empty", "tick_written_mib_full",
         "tick_written_ratio", "MiB"),
    ):  # fmt: skip
        rows.append((
            f"fresh tick's {figure}, {history.tick_instances} instances, as history grows "
            f"(lake on this machine, through the dagster CLI)",
            f"empty {tick[empty]:,.1f} {unit}; with {grown}: {tick[full]:,.1f} {unit}: "
            f"{tick[ratio]:.2f}x",
            f"<= {TARGET_TICK_GROWTH}x", "met" if tick[ratio] <= TARGET_TICK_GROWTH else "missed",
        ))  # fmt: skip
    for table_name, per_datapoint in tick["bytes_per_datapoint"].items():
        rows.append((
            f"bytes per stored datapoint, {table_name} (lake data files)",
            f"{per_datapoint:.1f}",
            "no target (the benchmark's values take 100,000 levels; real ones compress less)",
            "-",
        ))  # fmt: skip
    for query in results.queries:
        rows.append((
            f"analyst query on the lake: {query['query']}",
            f"{query['lake_ms']:,} ms ({query['rows']:,} rows"
            + ("" if query["same_rows"] else ", NOT the file's rows") + ")",
            f"the DuckDB file: {query['file_ms']:,} ms", f"{query['lake_to_file']:.2f}x the file",
        ))  # fmt: skip
    return rows


def table(results: Results) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target or baseline, verdict) rows."""
    size = SIZES[results.size]
    largest = results.runs[f"window {max(size.windows)}h"]
    figures = largest.figures
    rows = []
    ratio = figures["cloudwatch_requests"] / max(1, figures["minimum_requests"])
    rows.append((
        f"GetMetricData requests, {max(size.windows)} h of {size.instances} instances",
        f"{figures['cloudwatch_requests']:,} (floor {figures['minimum_requests']:,}): "
        f"{ratio:.3f}x", "<= 1.1x the floor", "met" if ratio <= 1.1 else "missed",
    ))  # fmt: skip
    process_rate = figures["datapoints"] / largest.cpu_seconds
    step_rate = figures["datapoints"] / max(figures["cpu_seconds"], 1e-9)
    rows.append(
        (
            "datapoints per CPU-second, the pipeline's process",
            f"{process_rate:,.0f} (collection step alone {step_rate:,.0f})",
            f">= {TARGET_DATAPOINTS_PER_CPU_SECOND:,}",
            "met" if process_rate >= TARGET_DATAPOINTS_PER_CPU_SECOND else "missed",
        )
    )
    write_rate = figures["rows_written"] / max(figures["write_seconds"], 1e-9)
    bare = results.bare_insert_rows_per_second
    rows.append(
        (
            "write, rows per second (beside the fetching threads)",
            f"{write_rate:,.0f}: {write_rate / bare:.2f}x the bare insert",
            f"bare INSERT of the same rows: {bare:,.0f} (>= 0.5x)",
            "met" if write_rate >= 0.5 * bare else "missed",
        )
    )
    memory = {
        name: run for name, run in results.runs.items() if name.startswith(("window", "fleet"))
    }
    for name, run in memory.items():
        shape = f"{run.figures['datapoints']:,} datapoints"
        rows.append((
            f"peak RSS, {name.replace('window ', '')} ({shape})", f"{run.peak_rss_mib:,.0f} MiB",
            f"<= {TARGET_PEAK_RSS_MIB:,} MiB", "met" if run.peak_rss_mib <= TARGET_PEAK_RSS_MIB
            else "missed",
        ))  # fmt: skip
    fresh = results.runs["fresh"]
    phases = fresh.figures["phases"]
    fetch_write = (
        f"fetch {fresh.figures['fetch_seconds']:.1f} s, write {fresh.figures['write_seconds']:.1f}"
        f" s, snapshot {phases.get('snapshot_publish', 0):.1f} s"
    )
    rows.append((
        f"fresh tick, {size.instances} instances (wall, process start to exit)",
        f"{fresh.wall_seconds:.1f} s: start-up {phases['start_up']:.1f} s, fresh job "
        f"{phases['collection']:.1f} s (inventory {phases['inventory']:.1f} s, metrics "
        f"{phases['metrics']:.1f} s: {fetch_write}; checks)",
        f"<= {TARGET_FRESH_SECONDS} s", "met" if fresh.wall_seconds <= TARGET_FRESH_SECONDS
        else "missed",
    ))  # fmt: skip
    ours = results.runs["baseline window"]
    baselines = (
        ("old-system", "the Go system's way (per-hour rounds, 100 ms apart; fetch only)"),
        ("partitions", "plain Dagster, one run per hour"),
    )
    for mode, label in baselines:
        other = results.runs[f"baseline {mode}"]
        theirs_seconds = other.figures["phases"]["collection"]
        ours_seconds = ours.figures["phases"]["collection"]
        rows.append((
            f"{size.baseline_hours} h of {size.instances} instances: {label}",
            f"{theirs_seconds:.1f} s, {other.figures['cloudwatch_requests']:,} requests",
            f"ours (one run): {ours_seconds:.1f} s, "
            f"{ours.figures['cloudwatch_requests']:,} requests",
            f"{theirs_seconds / ours_seconds:.1f}x our time, "
            f"{other.figures['cloudwatch_requests'] / ours.figures['cloudwatch_requests']:.1f}x "
            "our requests",
        ))  # fmt: skip
    return [*rows, pi_row(results), *history_rows(results), dashboard_row(results)]


def dashboard_row(results: Results) -> tuple[str, str, str, str]:
    """The fleet's and an instance's week drawn in Chromium, against the app's page without a
    chart measured beside them."""
    pages = results.dashboard
    slowest = max(pages["fleet_seconds"], pages["instance_seconds"])
    return (
        f"dashboard drawn in a browser, {pages['instances']} instances × {pages['days']} days "
        f"({pages['rows']:,} rows; median of 5 warm loads)",
        f"fleet {pages['fleet_seconds']:.2f} s ({pages['fleet_to_baseline']}x the chartless "
        f"page), an instance's week {pages['instance_seconds']:.2f} s "
        f"({pages['instance_to_baseline']}x)",
        f"<= {TARGET_DASHBOARD_SECONDS:g} s each",
        "met" if slowest <= TARGET_DASHBOARD_SECONDS else "missed",
    )


def pi_row(results: Results) -> tuple[str, str, str, str]:
    """Performance Insights' calls per instance-hour against the most its limits make of one:
    a request's pages of 25 entries for 5 groups of a total and 25 keys."""
    instances, hours = SIZES[results.size].pi_window
    run = results.runs["pi"]
    figures = run.figures
    per_instance_hour = figures["pi_requests"] / (instances * hours)
    rows_per_cpu_second = figures["rows_written"] / run.cpu_seconds
    return (
        f"Performance Insights calls per instance-hour, {hours} h of {instances} instances",
        f"{per_instance_hour:.2f} ({figures['pi_requests']:,} calls, "
        f"{figures['throttled_calls']} throttled, ${figures['estimated_cost_usd']:.4f}; "
        f"{figures['rows_written']:,} rows, {rows_per_cpu_second:,.0f} per CPU-second)",
        f"<= {REQUESTS_PER_INSTANCE_HOUR} (PI's limits: 25 keys a group, 25 entries a page)",
        "met" if per_instance_hour <= REQUESTS_PER_INSTANCE_HOUR else "missed",
    )


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor() or "unknown CPU",
    ) if Path("/proc/cpuinfo").exists() else platform.processor()  # fmt: skip
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
        f"dagster {version('dagster')}"
    )


def markdown(results: Results) -> str:
    lines = [
        f"Size `{results.size}`, measured on {machine()}.",
        "",
        "| figure | measured | target or baseline | verdict |",
        "|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in table(results)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--output", type=Path, help="also write the table (Markdown) here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="metrics-benchmark-") as folder:
        results = run_suite(args.size, Path(folder))
    text = markdown(results)
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
