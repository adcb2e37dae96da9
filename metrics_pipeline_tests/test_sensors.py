"""The gap sensor, evaluated through Dagster against a real instance and a DuckDB with holes."""

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    SensorDefinition,
    SkipReason,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from metrics_pipeline.collection.source import CLOUDWATCH_RDS, FIRST_COLLECTION_RUN_KEY
from metrics_pipeline.collection.store import replace_metrics, upsert_instances
from metrics_pipeline.healing.gaps import HistoryProgress, history_progress
from metrics_pipeline.healing.sensors import (
    build_gap_healing_sensor,
    next_look,
)
from metrics_pipeline.hours import healing_hours
from metrics_pipeline.maintenance.backups import create_backup, restore_backup
from metrics_pipeline.settings import Settings
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import (
    TEST_PARTITIONS,
    TEST_SETTINGS,
    definitions_for_tests,
    hold_write_lock,
    make_aws,
    make_collection,
    rds_metrics,
)

pytestmark = pytest.mark.storage_neutral

defs = definitions_for_tests()
LOOK_INTERVAL = timedelta(minutes=TEST_SETTINGS.backfill_interval_minutes)

SETTLE = timedelta(minutes=15)
ACCOUNT = "123456789012"
A = Instance(ACCOUNT, "us-east-1", "orders-db")
B = Instance(ACCOUNT, "us-east-1", "users-db")
STOPPED = Instance(ACCOUNT, "eu-west-1", "stopped-db")
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def now() -> datetime:
    """The moment the sensor is evaluated at: it reads this clock, not the wall clock."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def sensor_at(moment: datetime, settings: Settings = TEST_SETTINGS) -> SensorDefinition:
    return build_gap_healing_sensor(
        settings, (CLOUDWATCH_RDS,), TEST_PARTITIONS, clock=lambda: moment
    )


@pytest.fixture
def gap_healing_sensor(now: datetime) -> SensorDefinition:
    return sensor_at(now)


@pytest.fixture
def hours(now: datetime) -> list[datetime]:
    return healing_hours(now, 3, SETTLE)  # the sensor's window with the default settings


def record(instance: Instance, created: datetime) -> dict:
    return {
        "account_id": instance.account_id,
        "region": instance.region,
        "instance_id": instance.instance_id,
        "engine": "postgres",
        "engine_version": "16.4",
        "instance_class": "db.t3.micro",
        "allocated_storage_gb": 20,
        "multi_az": False,
        "status": "available",
        "create_time": created,
        "tags": {},
    }


def prepare_warehouse(
    warehouse: WarehouseResource, now: datetime, hours: list[datetime], fetched: list[Instance]
) -> None:
    """Inventory of A, B and a stopped instance; every hour fetched settled, with nothing
    returned: CloudWatch had no data, which is final."""
    Path(warehouse.database).parent.mkdir(parents=True, exist_ok=True)
    with warehouse.connect() as conn:
        upsert_instances(conn, [record(i, now - timedelta(days=30)) for i in (A, B, STOPPED)], now)
        replace_metrics(
            conn,
            spool_files=[],
            targets=fetched,
            start=hours[0],
            end=hours[-1] + timedelta(hours=1),
            fetched_at=now,
            settle_delay=SETTLE,
            run_id="setup",
        )


def forget_fetches(warehouse: WarehouseResource, hour: datetime, *instances: Instance) -> None:
    with warehouse.connect() as conn:
        for i in instances:
            conn.execute(
                "DELETE FROM rds_metric_fetches WHERE instance_id = ? AND hour = ?",
                [i.instance_id, hour],
            )


def mark_materialized(instance: DagsterInstance, hours: list[datetime]) -> None:
    for hour in hours:
        instance.report_runless_asset_event(
            AssetMaterialization(asset_key="rds_metrics", partition=key(hour))
        )


def evaluate(instance: DagsterInstance, warehouse: WarehouseResource, sensor: SensorDefinition):
    context = build_sensor_context(
        instance=instance,
        resources={"warehouse": warehouse, "aws": make_aws(), "collection": make_collection()},
    )
    return sensor(context)


def test_requests_exactly_the_holes(
    instance: DagsterInstance,
    warehouse: WarehouseResource,
    now: datetime,
    hours: list[datetime],
    gap_healing_sensor: SensorDefinition,
) -> None:
    prepare_warehouse(warehouse, now, hours, [A, B, STOPPED])
    never = hours[20:23]
    mark_materialized(instance, [h for h in hours if h not in never])
    forget_fetches(warehouse, hours[10], B)  # one instance missing one hour
    for hour in never:  # never materialized, never fetched
        forget_fetches(warehouse, hour, A, B, STOPPED)
    forget_fetches(warehouse, hours[40], A, B, STOPPED)  # a queued fresh run covers it
    instance.create_run_for_job(
        job_def=defs.resolve_job_def("fresh_collection_job"),
        tags={"dagster/partition": key(hours[40])},
    )
    # hours[30]: fetched fine, but the latest materialization failed.
    failed = materialize(
        [rds_metrics],
        partition_key=key(hours[30]),
        instance=instance,
        resources={
            "aws": make_aws(),
            "collection": make_collection(),
            "warehouse": WarehouseResource(database=str(Path(warehouse.database).with_name("x"))),
        },
        raise_on_error=False,
    )
    assert not failed.success

    result = evaluate(instance, warehouse, gap_healing_sensor)
    requests = [
        (r.tags[RANGE_START], r.tags[RANGE_END], r.run_config.get("ops", {}))
        for r in result.run_requests
    ]
    assert requests == [
        (key(hours[30]), key(hours[30]), {}),
        (key(never[0]), key(never[-1]), {}),
        (key(hours[10]), key(hours[10]), {"rds_metrics": {"config": {"instances": ["users-db"]}}}),
    ]
    run_keys = [r.run_key for r in result.run_requests]
    assert run_keys[1].startswith(
        f"heal cloudwatch_rds {key(never[0])}..{key(never[-1])} [all instances] @"
    )
    assert run_keys[2].startswith(
        f"heal cloudwatch_rds {key(hours[10])}..{key(hours[10])} [users-db] @"
    )
    assert all(r.job_name == "healing_job" for r in result.run_requests)
    # Dagster itself accepts them (a sensor of two jobs must name the job of each request).
    resolved = gap_healing_sensor.evaluate_tick(
        build_sensor_context(
            instance=instance,
            resources={"warehouse": warehouse, "aws": make_aws(), "collection": make_collection()},
        )
    )
    assert len(resolved.run_requests) == 3


def test_nothing_to_heal_says_why(
    instance: DagsterInstance,
    warehouse: WarehouseResource,
    now: datetime,
    hours: list[datetime],
    gap_healing_sensor: SensorDefinition,
) -> None:
    prepare_warehouse(warehouse, now, hours, [A, B, STOPPED])
    mark_materialized(instance, hours)
    result = evaluate(instance, warehouse, gap_healing_sensor)
    assert isinstance(result, SkipReason)
    assert result.skip_message == (
        f"history: {len(hours)} of {len(hours)} hours for 3 instances; complete. "
        f"No gaps in the {len(hours)} settled hours since {key(hours[0])}."
    )


def test_new_instance_gets_its_whole_look_back_in_one_run(
    instance: DagsterInstance,
    warehouse: WarehouseResource,
    now: datetime,
    hours: list[datetime],
    gap_healing_sensor: SensorDefinition,
) -> None:
    prepare_warehouse(warehouse, now, hours, [A, STOPPED])  # users-db just discovered
    mark_materialized(instance, hours)
    [request] = evaluate(instance, warehouse, gap_healing_sensor).run_requests
    assert request.tags[RANGE_START] == key(hours[0])
    assert request.tags[RANGE_END] == key(hours[-1])
    assert request.run_config["ops"]["rds_metrics"]["config"]["instances"] == ["users-db"]


def test_a_long_history_comes_in_bounded_ticks_that_follow_each_other(
    instance: DagsterInstance,
    warehouse: WarehouseResource,
    now: datetime,
    hours: list[datetime],
) -> None:
    # The default settings ask a plain RDS instance 14 metrics x 5 statistics x 12 periods =
    # 840 datapoints per instance-hour: a budget of 20 instance-hours, for 3 x 72 hours.
    plain = [InventoryEntry(i, None, now, now) for i in (A, B, STOPPED)]
    per_instance_hour = CLOUDWATCH_RDS.datapoints_per_subject_hour(TEST_SETTINGS, plain)
    assert per_instance_hour == 840
    budget = dataclasses.replace(
        TEST_SETTINGS, backfill_max_datapoints_per_tick=20 * per_instance_hour
    )
    sensor = sensor_at(now, budget)
    prepare_warehouse(warehouse, now, hours[:1], [A, B, STOPPED])  # only the oldest hour
    mark_materialized(instance, hours[:1])
    resources = {"warehouse": warehouse, "aws": make_aws(), "collection": make_collection()}

    first = build_sensor_context(instance=instance, resources=resources)
    [request] = sensor(first).run_requests
    # Whole hours fetch the three instances: 6 hours are 18 instance-hours, 7 would be 21.
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (key(hours[-6]), key(hours[-1]))
    # Work is left: the next look is due at the next wake, not an interval later.
    assert next_look(first.cursor, now) is None

    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def("healing_job"), tags=dict(request.tags)
    )
    queued = build_sensor_context(instance=instance, resources=resources, cursor=first.cursor)
    waiting = sensor(queued)
    assert isinstance(waiting, SkipReason)
    assert waiting.skip_message == (
        f"history: 1 of {len(hours)} hours for 3 instances; a healing run is in progress. "
        "Looking for gaps again when the healing runs finish."
    )

    instance.report_run_failed(run)  # finished (its hours are looked at again)
    prepare_warehouse(warehouse, now, hours[-6:], [A, B, STOPPED])  # what the run fetched
    mark_materialized(instance, hours[-6:])
    after = build_sensor_context(instance=instance, resources=resources, cursor=first.cursor)
    [following] = sensor(after).run_requests
    assert (following.tags[RANGE_START], following.tags[RANGE_END]) == (
        key(hours[-12]),
        key(hours[-7]),
    )


def test_by_default_a_tick_asks_for_what_the_quota_serves_per_account_and_region(
    warehouse: WarehouseResource,
    now: datetime,
    hours: list[datetime],
    gap_healing_sensor: SensorDefinition,
) -> None:
    """Two accounts and two regions are four quotas: four times the datapoints per tick."""
    other = Instance("222222222222", "us-east-1", "orders-db")
    inventory = [
        InventoryEntry(i, now - timedelta(days=30), now - timedelta(days=30), now)
        for i in (A, B, STOPPED, other)
    ]
    assert TEST_SETTINGS.backfill_max_datapoints_per_tick is None
    assert CLOUDWATCH_RDS.datapoints_per_tick(TEST_SETTINGS, inventory) == 3 * 396_000 * 120
    assert CLOUDWATCH_RDS.datapoints_per_tick(TEST_SETTINGS, inventory[:2]) == 396_000 * 120
    assert (
        CLOUDWATCH_RDS.datapoints_per_tick(
            dataclasses.replace(TEST_SETTINGS, backfill_max_datapoints_per_tick=5), inventory
        )
        == 5
    )

    # A 1,000-instance first history of three days is one tick's work at the quota's pace.
    prepare_warehouse(warehouse, now, hours[:1], [A, B, STOPPED])
    many = [Instance(ACCOUNT, "us-east-1", f"db-{n:04d}") for n in range(1000)]
    with warehouse.connect() as conn:
        upsert_instances(conn, [record(i, now - timedelta(days=30)) for i in many], now)
    with instance_for_test() as dagster_instance:
        mark_materialized(dagster_instance, hours[:1])
        context = build_sensor_context(
            instance=dagster_instance,
            resources={"warehouse": warehouse, "aws": make_aws(), "collection": make_collection()},
        )
        requests = gap_healing_sensor(context).run_requests
    asked_hours = sum(
        1 + (datetime.strptime(r.tags[RANGE_END], "%Y-%m-%d-%H:%M")
             - datetime.strptime(r.tags[RANGE_START], "%Y-%m-%d-%H:%M")) // timedelta(hours=1)
        for r in requests
    )  # fmt: skip
    # 1,003 instances x 840 datapoints per hour; two quotas (us-east-1, eu-west-1) of 47.5M.
    assert asked_hours == min(len(hours), (2 * 396_000 * 120) // (1003 * 840)) == len(hours)


def test_a_new_deployment_starts_its_first_collection_at_once(
    instance: DagsterInstance,
    warehouse: WarehouseResource,
    now: datetime,
    hours: list[datetime],
    gap_healing_sensor: SensorDefinition,
) -> None:
    context = build_sensor_context(
        instance=instance,
        resources={"warehouse": warehouse, "aws": make_aws(), "collection": make_collection()},
    )
    [request] = gap_healing_sensor(context).run_requests
    assert request.job_name == "fresh_collection_job"
    assert request.run_key == FIRST_COLLECTION_RUN_KEY
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    assert request.tags[RANGE_END] == key(this_hour)
    assert context.cursor is None  # the next wake, a minute later, looks for gaps


@pytest.mark.e2e
def test_a_writer_does_not_block_the_sensor(
    instance: DagsterInstance,
    warehouse: WarehouseResource,
    now: datetime,
    hours: list[datetime],
    gap_healing_sensor: SensorDefinition,
) -> None:
    prepare_warehouse(warehouse, now, hours, [A, B, STOPPED])
    mark_materialized(instance, hours[:-3])
    writer = hold_write_lock(warehouse.database, 60)
    try:
        while_writing = evaluate(instance, warehouse, gap_healing_sensor)
    finally:
        writer.kill()
        writer.wait()
    # The sensor reads the published snapshot, so a process holding the file changes nothing.
    [request] = while_writing.run_requests
    assert request.tags[RANGE_START] == key(hours[-3])


def test_next_look_is_due_at_the_time_in_the_cursor() -> None:
    due = datetime(2026, 11, 26, 9, 0)
    assert next_look(None, due) is None
    assert next_look(due.isoformat(), due - timedelta(minutes=30)) == due
    assert next_look(due.isoformat(), due) is None


def test_a_complete_window_is_looked_at_again_an_interval_later(
    instance: DagsterInstance,
    warehouse: WarehouseResource,
    now: datetime,
    hours: list[datetime],
    gap_healing_sensor: SensorDefinition,
) -> None:
    resources = {"warehouse": warehouse, "aws": make_aws(), "collection": make_collection()}
    prepare_warehouse(warehouse, now, hours, [A, B, STOPPED])
    mark_materialized(instance, hours)
    context = build_sensor_context(instance=instance, resources=resources)
    assert isinstance(gap_healing_sensor(context), SkipReason)
    due = datetime.fromisoformat(context.cursor)
    assert due == now + LOOK_INTERVAL

    soon = build_sensor_context(instance=instance, resources=resources, cursor=context.cursor)
    waiting = gap_healing_sensor(soon)
    assert isinstance(waiting, SkipReason)
    assert waiting.skip_message == f"Next look for gaps at {due:%H:%M} UTC."
    forget_fetches(warehouse, hours[-2], A)
    overdue = (due - LOOK_INTERVAL).isoformat()
    later = build_sensor_context(instance=instance, resources=resources, cursor=overdue)
    [request] = gap_healing_sensor(later).run_requests
    assert request.tags[RANGE_START] == key(hours[-2])


@pytest.mark.storage_kinds(
    "duckdb", reason="restores a backup of the DuckDB file's snapshot, which a lake has not"
)
def test_hours_a_restore_took_back_are_healed(
    instance: DagsterInstance,
    warehouse: WarehouseResource,
    now: datetime,
    hours: list[datetime],
    gap_healing_sensor: SensorDefinition,
) -> None:
    """A backup holds the fetch log of its time: after restoring it, the hours collected since
    lack a settled fetch again, so the gap sensor collects them although Dagster still shows
    them as materialized."""
    prepare_warehouse(warehouse, now, hours[:-3], [A, B, STOPPED])
    backup = create_backup(warehouse.snapshot_path, warehouse.backups_path, now)
    prepare_warehouse(warehouse, now, hours, [A, B, STOPPED])
    mark_materialized(instance, hours)
    assert isinstance(evaluate(instance, warehouse, gap_healing_sensor), SkipReason)

    with warehouse.connect() as conn:
        restore_backup(conn, backup)
    [request] = evaluate(instance, warehouse, gap_healing_sensor).run_requests
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (key(hours[-3]), key(hours[-1]))
    assert request.run_config == {}  # every instance lacks those hours


@pytest.mark.parametrize("settle_minutes", [15, 40])
def test_an_hour_is_asked_for_from_the_moment_its_settle_delay_has_passed(
    instance: DagsterInstance, warehouse: WarehouseResource, now: datetime, settle_minutes: int
) -> None:
    """The sensor decides by its clock: a second before an hour settles it is not a gap, at
    that moment it is, whatever the wall clock says when the test runs. The settle delay is
    METRICS_SETTLE_MINUTES of the settings, the one the fresh schedule reads (the collection
    resource here keeps its default of 15)."""
    settings = dataclasses.replace(TEST_SETTINGS, settle_minutes=settle_minutes)
    settle = settings.settle_delay
    settles = now.replace(minute=0, second=0) + settle  # when the previous hour settles
    previous_hour = settles - settle - timedelta(hours=1)
    hours = healing_hours(settles, 3, settle)
    assert hours[-1] == previous_hour
    prepare_warehouse(warehouse, now, hours[:-1], [A, B, STOPPED])
    mark_materialized(instance, hours[:-1])

    before = evaluate(instance, warehouse, sensor_at(settles - timedelta(seconds=1), settings))
    assert isinstance(before, SkipReason)
    assert (before.skip_message or "").startswith(
        f"history: {len(hours) - 1} of {len(hours) - 1} hours for 3 instances; complete. No gaps"
    )
    [request] = evaluate(instance, warehouse, sensor_at(settles, settings)).run_requests
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (
        key(previous_hour),
        key(previous_hour),
    )


def test_each_tick_says_how_much_of_the_history_has_arrived(
    instance: DagsterInstance,
    warehouse: WarehouseResource,
    now: datetime,
    hours: list[datetime],
    gap_healing_sensor: SensorDefinition,
    capfd: pytest.CaptureFixture[str],
) -> None:
    prepare_warehouse(warehouse, now, hours[:41], [A, B, STOPPED])
    prepare_warehouse(warehouse, now, hours[41:45], [A])  # B and the stopped one lack these
    mark_materialized(instance, hours[:45])
    assert evaluate(instance, warehouse, gap_healing_sensor).run_requests
    # The tick's log, which the UI shows with the tick.
    logged = capfd.readouterr().err
    assert f" - INFO - history: 41 of {len(hours)} hours for 3 instances; waiting for the gap " in (
        logged
    )


def test_history_progress_counts_hours_every_existing_instance_has() -> None:
    hours = [datetime(2026, 11, 26, h) for h in range(4)]
    created_late = InventoryEntry(B, hours[2], hours[2], hours[3])
    inventory = [InventoryEntry(A, hours[0] - timedelta(days=30), hours[0], hours[3]), created_late]
    settled = {(A, h) for h in hours} | {(B, hours[3])}
    # Hours 0 and 1 only A existed: complete; hour 2 lacks B; hour 3 has both.
    progress = history_progress(hours, inventory, settled, healing_runs=2)
    assert progress == HistoryProgress(3, 4, 2, 2)
    assert (
        progress.line()
        == "history: 3 of 4 hours for 2 instances; 2 healing runs are queued or running"
    )
    assert HistoryProgress(4, 4, 1, 0).line() == "history: 4 of 4 hours for 1 instance; complete"
    # The last healing run has written every hour but not yet ended.
    assert HistoryProgress(4, 4, 1, 1).line() == "history: 4 of 4 hours for 1 instance; complete"
    assert HistoryProgress(0, 0, 0, 0).complete is False
