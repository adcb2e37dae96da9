"""The Performance Insights asset: rds_pi_load, one partition per UTC hour, of every instance
the inventory says has PI on. Each instance-hour is one GetResourceMetrics request (its pages
aside) and one transaction."""

import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import duckdb
from botocore.exceptions import ClientError
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    HourlyPartitionsDefinition,
    MaterializeResult,
    asset,
)

from metrics_pipeline.catalog import pi_groups
from metrics_pipeline.collection.assets import (
    CollectionConfig,
    aws_retry_policy,
    choose_targets,
    read_or_discover_inventory,
)
from metrics_pipeline.collection.cloudwatch import RequestStats
from metrics_pipeline.collection.keys import RDS_INSTANCES, RDS_PI_LOAD
from metrics_pipeline.collection.resources import AwsResource, CollectionResource, aws_errors
from metrics_pipeline.collection.store import record_run
from metrics_pipeline.hours import Clock, hour_starts, naive_utc, utc_now
from metrics_pipeline.insights.answers import Answer, SqlText, read_answer, sum_problems
from metrics_pipeline.insights.fetch import (
    HourRequest,
    PiInstance,
    cut_statements,
    estimated_pi_cost_usd,
    fetch_load,
    fetch_whole_text,
    plan_hours,
    read_pi_instances,
)
from metrics_pipeline.insights.store import replace_pi_hours
from metrics_pipeline.metadata import row_count_of_partition, table_asset
from metrics_pipeline.settings import Settings
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry, read_inventory
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.tables import PI_FETCHES, PI_LOAD, PI_SQL, PI_STATEMENTS

# What PI answers for an instance whose PI is off (or not this account's).
NOT_AUTHORIZED = "NotAuthorizedException"


def read_pi_inventory(
    conn: duckdb.DuckDBPyConnection, regions: Sequence[str] | None
) -> list[InventoryEntry]:
    """The instances with Performance Insights on."""
    return [e for e in read_inventory(conn, regions) if e.instance_kind.performance_insights]


def collect_pi_load(
    context: AssetExecutionContext,
    config: CollectionConfig,
    aws: AwsResource,
    collection: CollectionResource,
    warehouse: WarehouseResource,
    clock: Clock,
) -> MaterializeResult:
    warehouse.prepare()
    window = context.partition_time_window
    start, end = naive_utc(window.start), naive_utc(window.end)
    stats = RequestStats()
    accounts = {a.account_id: a for a in aws.accounts(stats)}
    inventory = read_or_discover_inventory(
        context, aws, warehouse, list(accounts.values()), stats, read_pi_inventory
    )
    targets, _ = choose_targets(context, config, inventory, start, end)
    if not targets:
        context.log.info(
            f"No instance with Performance Insights on existed from {start} to {end} UTC: "
            f"nothing to collect into {PI_LOAD.name}"
        )
        return MaterializeResult(metadata={"instances": 0, "rows_written": 0})
    started = time.monotonic()
    now = clock()
    hours = hour_starts(start, end)
    groups = pi_groups(collection.pi_full_sql_text)
    totals = {"rows_written": 0, "rows_replaced": 0, "settled_hours": 0, "digests": 0}
    without_pi: list[str] = []
    with warehouse.connect() as conn:
        lock_wait_seconds = time.monotonic() - started
        subjects = read_pi_instances(conn, targets)
        whole = whole_text_bytes(conn) if collection.pi_full_sql_text else {}
        clients = {
            (i.account_id, i.region): aws.client("pi", i.region, stats, accounts[i.account_id])
            for i in subjects
        }

        def fetch(subject: PiInstance) -> tuple[list[HourRequest], Answer | None]:
            """Its hours' requests and their answer; None when PI says it is off."""
            instance = subject.instance
            client = clients[(instance.account_id, instance.region)]
            planned = plan_hours(hours, now, subject.retention_days, collection.pi_period_seconds)
            answer = Answer()
            try:
                for request in planned:
                    if request.window is None:
                        continue
                    first, last = request.window
                    with pi_errors("GetResourceMetrics", instance.region):
                        entries = fetch_load(
                            client, subject.resource_id, first, last,
                            collection.pi_period_seconds, groups,
                        )  # fmt: skip
                    answer.add(read_answer(entries, first, last, groups))
                if collection.pi_full_sql_text:
                    answer.sql = with_whole_texts(
                        client, subject, answer.sql, whole.get(instance, {})
                    )
            except PiUnavailable:
                return planned, None
            return planned, answer

        # Fetched side by side (each account and region within its own request rate), written
        # here one instance at a time, each in its own transaction, as they come.
        with ThreadPoolExecutor(
            max_workers=max(1, collection.fetch_threads), thread_name_prefix="pi"
        ) as pool:
            futures = {pool.submit(fetch, subjects[i]): i for i in sorted(subjects)}
            try:
                for number, future in enumerate(as_completed(futures), start=1):
                    instance = futures[future]
                    planned, answer = future.result()
                    if answer is None:
                        without_pi.append(str(instance))
                        continue
                    problems = sum_problems(answer.rows)
                    if problems:
                        context.log.warning(
                            f"{instance}: Performance Insights' keys add up to more than the "
                            "total: " + "; ".join(problems[:5])
                        )
                    written = replace_pi_hours(
                        conn,
                        instance,
                        [request.hour for request in planned],
                        answer,
                        now,
                        collection.settle_delay,
                        context.run.run_id,
                    )
                    totals["rows_written"] += written.rows_written
                    totals["rows_replaced"] += written.rows_replaced
                    totals["settled_hours"] += written.settled_hours
                    totals["digests"] += written.digests
                    context.log.info(
                        f"{instance}: wrote {written.rows_written:,} row(s) of Performance "
                        f"Insights load, {written.digests} digest(s) ({number}/{len(subjects)})"
                    )
            except BaseException:
                for pending in futures:
                    pending.cancel()
                raise
        figures: dict[str, Any] = {
            "run_id": context.run.run_id,
            "asset": PI_LOAD.name,
            "window_start": start,
            "window_end": end,
            "finished_at": naive_utc(clock()),
            "instances": len(subjects),
            "rows_written": totals["rows_written"],
            "rows_replaced": totals["rows_replaced"],
            "datapoints": totals["rows_written"],
            "settled_hours": totals["settled_hours"],
            "pi_requests": pi_calls(stats),
            "estimated_cost_usd": estimated_pi_cost_usd(pi_calls(stats)),
            "throttled_calls": stats.throttled,
            "retried_calls": stats.retried,
            "lock_wait_seconds": round(lock_wait_seconds, 3),
        }
        record_run(conn, figures)
    if without_pi:
        context.log.warning(
            f"Performance Insights is off for {', '.join(without_pi)} (NotAuthorized): the "
            "next discovery updates the inventory; nothing was written for them"
        )
    requests = stats.by_operation.get("GetResourceMetrics", 0)
    context.log.info(
        f"Wrote {totals['rows_written']:,} row(s) of Performance Insights load for "
        f"{len(subjects) - len(without_pi)} instance(s) in {requests} request(s)"
    )
    return MaterializeResult(
        metadata={
            "instances": len(subjects),
            "instances_without_pi": len(without_pi),
            "rows_written": totals["rows_written"],
            "rows_replaced": totals["rows_replaced"],
            "digests": totals["digests"],
            "settled_hours": totals["settled_hours"],
            "pi_requests": requests,
            "pi_whole_text_requests": stats.by_operation.get("GetDimensionKeyDetails", 0),
            "throttled_calls": stats.throttled,
            "estimated_cost_usd": figures["estimated_cost_usd"],
            **row_count_of_partition(context, totals["rows_written"]),
        }
    )


def pi_calls(stats: RequestStats) -> int:
    """The calls of Performance Insights' API (pages included): what PI bills."""
    return sum(stats.by_operation.get(name, 0) for name in PI_OPERATIONS)


PI_OPERATIONS = ("GetResourceMetrics", "GetDimensionKeyDetails")


class PiUnavailable(Exception):
    """PI answers NotAuthorized for an instance the inventory says has it on."""


@contextmanager
def pi_errors(operation: str, region: str) -> Iterator[None]:
    """PiUnavailable for NotAuthorized; other errors as every AWS call's (aws_errors)."""
    with aws_errors(operation, region):
        try:
            yield
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == NOT_AUTHORIZED:
                raise PiUnavailable from None
            raise


def whole_text_bytes(conn: duckdb.DuckDBPyConnection) -> dict[Instance, dict[str, int]]:
    """The bytes of text stored of each instance's statements (rds_pi_sql)."""
    stored: dict[Instance, dict[str, int]] = {}
    for account_id, region, instance_id, sql_id, size in conn.execute(
        f"SELECT account_id, region, instance_id, sql_id, strlen(statement) FROM {PI_SQL.name} "
        "WHERE statement IS NOT NULL"
    ).fetchall():
        stored.setdefault(Instance(account_id, region, instance_id), {})[sql_id] = size
    return stored


def with_whole_texts(
    client: Any, subject: PiInstance, sql: list[SqlText], whole: Mapping[str, int]
) -> list[SqlText]:
    """`sql` with the whole text of each statement PI cut that the warehouse lacks (`whole`:
    the bytes stored of each)."""
    texts = {}
    for text in cut_statements(sql, whole):
        with pi_errors("GetDimensionKeyDetails", subject.instance.region):
            fetched = fetch_whole_text(client, subject.resource_id, text.sql_id)
        if fetched is not None:
            texts[text.sql_id] = fetched
    return [replace(t, statement=texts.get(t.sql_id, t.statement)) for t in sql]


def build_pi_assets(
    settings: Settings, hourly_partitions: HourlyPartitionsDefinition, clock: Clock = utc_now
) -> list[AssetsDefinition]:
    def rds_pi_load(
        context: AssetExecutionContext,
        config: CollectionConfig,
        aws: AwsResource,
        collection: CollectionResource,
        warehouse: WarehouseResource,
    ) -> MaterializeResult:
        return collect_pi_load(context, config, aws, collection, warehouse, clock)

    return [
        asset(
            key=RDS_PI_LOAD,
            **table_asset(PI_LOAD.name, reads_aws=True),
            partitions_def=hourly_partitions,
            backfill_policy=BackfillPolicy.single_run(),
            retry_policy=aws_retry_policy(settings),
            deps=[RDS_INSTANCES],
            description=(
                "Performance Insights' load (db.load.avg, average active sessions) of every "
                "instance with PI on, one partition per UTC hour at METRICS_PI_PERIOD_SECONDS: "
                "in total and by wait event, SQL digest and database (DuckDB table "
                f"`{PI_LOAD.name}`), by user and host (`rds_pi_load_personal`), the digests' "
                f"text once each (`{PI_STATEMENTS.name}`), fetch log `{PI_FETCHES.name}`. "
                "Healed by the gap sensor as far as each instance's PI retention goes."
            ),
        )(rds_pi_load)
    ]
