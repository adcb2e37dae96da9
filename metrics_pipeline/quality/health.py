"""The pipeline's own health in one place: API calls and cost per day, failure rate, slowest
runs, and how long since fresh collection last succeeded."""

from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetExecutionContext,
    DagsterRunStatus,
    MaterializeResult,
    MetadataValue,
    RunsFilter,
    asset,
)

from metrics_pipeline.automation import on_cron_and_once_inputs_exist
from metrics_pipeline.collection.jobs import fresh_collection_job
from metrics_pipeline.collection.keys import RDS_METRICS
from metrics_pipeline.collection.resources import CollectionResource
from metrics_pipeline.metadata import GROUP, OWNERS, markdown_table
from metrics_pipeline.source_registry import SOURCES
from metrics_pipeline.warehouse.readers import SnapshotMissingError
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import METRICS_TABLE, RUN_PARTS_TABLE, RUNS_TABLE

LOOKBACK = timedelta(days=7)


def since_epoch(moment: datetime) -> float:
    """Seconds since the epoch of an aware time, or of a naive one in UTC (the warehouse's)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]


@asset(
    group_name=GROUP,
    kinds={"duckdb"},
    owners=OWNERS,
    # It reads pipeline_runs, which each rds_metrics run writes.
    deps=[RDS_METRICS],
    # Every hour even when nothing was collected: that is when its report matters most.
    automation_condition=on_cron_and_once_inputs_exist("5 * * * *", only_after_input_updates=False),
    description=(
        f"Hourly summary of the last {LOOKBACK.days} days from `{RUNS_TABLE}` and the run "
        "history: CloudWatch calls and estimated cost per day and tier (raw `rds_metrics`, "
        "hourly `rds_metrics_hourly`), failure rate of collection "
        "runs, the slowest runs, each account and region's runs and failures "
        f"(`{RUN_PARTS_TABLE}`), and minutes since the last successful fresh run. It writes "
        f"no table: its figures are this metadata, computed from `{RUNS_TABLE}`, "
        f"`{RUN_PARTS_TABLE}` and Dagster's run history."
    ),
)
def pipeline_health(
    context: AssetExecutionContext, collection: CollectionResource, warehouse: WarehouseResource
) -> MaterializeResult:
    now = datetime.now(UTC)
    since = (now - LOOKBACK).replace(tzinfo=None)
    per_day: list[Any] = []
    slowest: list[Any] = []
    per_account: list[Any] = []
    newest: datetime | None = None
    # Before the first write there is nothing to read: the empty tables below say so.
    with suppress(SnapshotMissingError), warehouse.reader() as conn:
        # Per tier: the hourly tier's backfill is a first-day cost, its daily fetch an ongoing one.
        per_day = conn.execute(
            f"""
            SELECT finished_at::DATE, asset, sum(cloudwatch_requests),
                   round(sum(estimated_cost_usd), 4)
            FROM {RUNS_TABLE} WHERE finished_at >= $since GROUP BY 1, 2 ORDER BY 1 DESC, 2
            """,
            {"since": since},
        ).fetchall()
        slowest = conn.execute(
            f"""
            SELECT run_id[:8], window_start, round(fetch_seconds + write_seconds, 1),
                   rows_written
            FROM {RUNS_TABLE} WHERE finished_at >= $since
            ORDER BY fetch_seconds + write_seconds DESC LIMIT 5
            """,
            {"since": since},
        ).fetchall()
        [(newest,)] = conn.execute(f"SELECT max(ts) FROM {METRICS_TABLE}").fetchall()
        per_account = conn.execute(
            f"""
            SELECT p.account_id, p.region, count(*),
                   count(*) FILTER (p.status <> 'collected'), sum(p.cloudwatch_requests),
                   sum(p.rows_written), arg_max(p.error, r.finished_at)
            FROM {RUN_PARTS_TABLE} p JOIN {RUNS_TABLE} r USING (run_id, asset)
            WHERE r.finished_at >= $since GROUP BY ALL ORDER BY 1, 2
            """,
            {"since": since},
        ).fetchall()
    jobs = [job.name for source in SOURCES for job in source.jobs]
    finished = [
        record
        for job in jobs
        for record in context.instance.get_run_records(
            RunsFilter(job_name=job, statuses=FINISHED, updated_after=now - LOOKBACK)
        )
    ]
    failed = sum(r.dagster_run.status == DagsterRunStatus.FAILURE for r in finished)
    last_fresh = context.instance.get_run_records(
        RunsFilter(job_name=fresh_collection_job.name, statuses=[DagsterRunStatus.SUCCESS]),
        limit=1,
    )
    ended = last_fresh[0].end_time if last_fresh else None
    minutes_since_fresh = round((now.timestamp() - ended) / 60, 1) if ended else None
    return MaterializeResult(
        metadata={
            # The coverage page shows what these figures sum up, hour by hour.
            "dashboard": MetadataValue.url(f"{collection.dashboard_url}/coverage"),
            "collection_runs": len(finished),
            # How far behind the clock the newest period held is: plotted over the hours, the
            # lag an outage leaves and how fast it heals.
            **(
                {
                    "newest_data_minutes_behind": round(
                        (since_epoch(now) - since_epoch(newest)) / 60, 1
                    )
                }
                if newest is not None
                else {}
            ),
            "failed_runs": failed,
            "failure_rate": round(failed / len(finished), 4) if finished else 0.0,
            "minutes_since_last_fresh_success": minutes_since_fresh
            if minutes_since_fresh is not None
            else "never",
            "calls_and_cost_per_day": MetadataValue.md(
                markdown_table(("day", "table", "GetMetricData calls", "estimated USD"), per_day)
            ),
            "slowest_runs": MetadataValue.md(
                markdown_table(("run", "window start", "seconds", "rows"), slowest)
            ),
            "by_account_and_region": MetadataValue.md(
                markdown_table(
                    (
                        "account",
                        "region",
                        "runs",
                        "not collected",
                        "GetMetricData calls",
                        "rows",
                        "latest error",
                    ),
                    per_account,
                )
            ),
        }
    )
