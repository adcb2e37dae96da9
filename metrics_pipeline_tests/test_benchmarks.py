"""The benchmark suite's smallest size, so that it cannot rot: it runs end to end (the local
AWS and every collection in processes of their own) and its table has every row. Only
behaviour is checked (requests against their floor, the memory bound), never a time."""

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from benchmarks import analyst_queries, tiers
from benchmarks.collect import REGIONS
from benchmarks.suite import SIZES, TARGET_PEAK_RSS_MIB, markdown, run_suite, table
from metrics_pipeline.catalog import PI_GROUPS
from metrics_pipeline.local_aws.fleet import generated_fleet
from metrics_pipeline.local_aws.workload import split_keys


@pytest.mark.e2e
def test_the_ci_size_runs_and_meets_the_request_and_memory_bounds(tmp_path: Path) -> None:
    results = run_suite("ci", tmp_path, log=lambda _: None)

    size = SIZES["ci"]
    for hours in size.windows:
        run = results.runs[f"window {hours}h"]
        floor = run.figures["minimum_requests"]
        # Two regions: a request holds one, so the floor is one request each at this size.
        assert floor == 2
        assert floor <= run.figures["cloudwatch_requests"] <= 1.1 * floor
        series = size.instances * len(size.metrics) * 5
        assert run.figures["datapoints"] == series * 12 * hours
        assert run.peak_rss_mib <= TARGET_PEAK_RSS_MIB
    with duckdb.connect(str(tmp_path / "window-6" / "metrics.duckdb"), read_only=True) as conn:
        [(rows,)] = conn.execute("SELECT count(*) FROM rds_metrics").fetchall()
    assert rows == size.instances * len(size.metrics) * 12 * 6
    # One run per hour asks at least once per hour and region; the Go system's way too.
    per_partition = results.runs["baseline partitions"].figures
    assert per_partition["runs"] == size.baseline_hours
    assert per_partition["cloudwatch_requests"] == 2 * size.baseline_hours
    assert results.runs["baseline old-system"].figures["cloudwatch_requests"] == (
        2 * size.baseline_hours
    )
    assert results.runs["fresh"].figures["hours"] == 2

    # The long history: the hourly tier's backfill got every hour of every series, within
    # its request floor; the tick was measured twice, each tier's size per datapoint, and
    # each analyst query answered alike on both storages.
    history = size.history
    backfill = results.runs["history backfill"].figures
    assert backfill["datapoints"] == (
        history.backfill_instances * len(size.metrics) * 9 * 24 * history.backfill_days
    )
    assert backfill["minimum_requests"] <= backfill["cloudwatch_requests"]
    assert backfill["cloudwatch_requests"] <= 1.1 * backfill["minimum_requests"]
    assert results.history_server_cpu_seconds > 0  # the local AWS answered: its CPU counted
    tick = results.tick_growth
    assert tick["rows"]["rds_metrics"] == history.tick_instances * 14 * 288 * history.raw_days
    assert tick["rows"]["rds_metrics_hourly"] == (
        history.tick_instances * 14 * 24 * history.hourly_days
    )
    assert tick["rows"]["rds_metrics_daily"] == history.tick_instances * 14 * history.hourly_days
    assert set(tick["bytes_per_datapoint"]) == set(tick["rows"])
    assert [query["same_rows"] for query in results.queries] == [True] * len(
        analyst_queries.QUERIES
    )

    # Performance Insights: one request an instance-hour, in pages of 25 of its entries (each
    # group's total and keys, as the local AWS's workload has them for the instance's engine).
    pi_instances, pi_hours = size.pi_window
    fleet = generated_fleet(datetime.now(UTC), pi_instances, tuple(REGIONS.split(",")))
    entries = [
        len(PI_GROUPS) + sum(len(keys) for keys in split_keys(i.engine).values()) for i in fleet
    ]
    pi = results.runs["pi"].figures
    assert pi["pi_requests"] == pi_hours * sum(-(-n // 25) for n in entries)
    assert pi["rows_written"] == pi_hours * 60 * sum(n - len(PI_GROUPS) + 1 for n in entries)

    # The dashboard: the fleet of 6 instances with a day of 300 s periods, its pages drawn.
    dashboard = results.dashboard
    assert dashboard["rows"] == 6 * 14 * 288 and dashboard["metrics"] == 14
    assert all(dashboard[f"{page}_seconds"] > 0 for page in ("baseline", "fleet", "instance"))

    rows_of_table = table(results)
    history_rows = 2 + 2 + 3 + len(analyst_queries.QUERIES)
    assert len(rows_of_table) == 3 + len(size.windows) + 1 + 2 + 1 + history_rows + 1
    assert all(any(ch.isdigit() for ch in measured) for _, measured, _, _ in rows_of_table)
    assert markdown(results).count("\n| ") == len(rows_of_table) + 1


def test_the_tiers_benchmark_stores_every_datapoint_of_each_tier(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`benchmarks.tiers` at a small size: each tier's row counts the statistic values its
    writer stored (3 instances x 14 metrics), and a size for each."""
    tiers.main(["--instances", "3", "--days", "2", "--raw-days", "1"])

    rows = [
        line.split(" | ")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(("| raw", "| hourly", "| daily"))
    ]
    stored = {row[0].strip("| ").split(" ")[0]: int(row[1].replace(",", "")) for row in rows}
    series = 3 * 14
    assert stored == {
        "raw": series * 288 * 5,  # a day at 300 s, five statistics
        "hourly": series * 48 * 9,  # two days of hours, nine statistics
        "daily": series * 2 * 8,  # two days, eight values a row
    }
    assert all(int(row[2].replace(",", "")) > 0 for row in rows)


def test_the_analyst_queries_benchmark_times_each_query_on_both_storages(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`benchmarks.analyst_queries` at a small size: one line per query, each answered alike
    by the DuckDB file and the lake filled with the same rows, and rows to answer with."""
    analyst_queries.main(
        ["--instances", "3", "--raw-days", "1", "--hourly-days", "2", "--repeats", "1"]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["query"] for line in lines] == list(analyst_queries.QUERIES)
    assert [line["same_rows"] for line in lines] == [True] * len(lines)
    assert [line["rows"] > 0 for line in lines] == [True] * len(lines)
