"""The hourly tier (metrics_pipeline/history/): which days and hours can be fetched, a day's
hourly statistics and percentiles fetched from the local AWS exactly as its generator makes
them, a day CloudWatch has forgotten refused without touching what is stored, and the gap
sensor filling the tier newest day first within its budget, back to the oldest day CloudWatch
keeps and no further.

Time is fixed: the pipeline's clock and the local AWS's are both NOW, so what CloudWatch keeps
(455 days of hourly data) and which days have settled do not depend on when the test runs.
"""

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dagster import (
    AssetsDefinition,
    DagsterInstance,
    RunRequest,
    SensorDefinition,
    SensorResult,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from metrics_pipeline.collection.assets import build_collection_assets
from metrics_pipeline.collection.source import CLOUDWATCH_RDS
from metrics_pipeline.dagster_runs import RANGE_END_TAG, RANGE_START_TAG
from metrics_pipeline.healing.sensors import build_gap_healing_sensor
from metrics_pipeline.history.assets import build_history_assets
from metrics_pipeline.history.source import CLOUDWATCH_RDS_HOURLY
from metrics_pipeline.history.window import (
    complete_days,
    hours_required,
    oldest_fetchable_hour,
    settled_days,
)
from metrics_pipeline.local_aws.fleet import ACCOUNT_ID, SimulatedInstance, default_fleet
from metrics_pipeline.local_aws.server import LocalAws, start
from metrics_pipeline.local_aws.signals import series
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.quality.alerts import root_cause
from metrics_pipeline.settings import Settings
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.sql import in_transaction
from metrics_pipeline_tests.helpers import (
    TEST_SETTINGS,
    make_aws,
    make_collection,
    rds_instances,
    settings_for_tests,
)

pytestmark = pytest.mark.storage_neutral

# A Wednesday morning, naive UTC as the pipeline keeps time; the local AWS's clock is the same.
NOW = datetime(2026, 6, 17, 10, 37)
NOW_UTC = NOW.replace(tzinfo=UTC)
TODAY = datetime(2026, 6, 17)
YESTERDAY = datetime(2026, 6, 16)  # settled at 00:15 (METRICS_SETTLE_MINUTES=15)
SETTLE = timedelta(minutes=15)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
# NOW - 455 days = 2025-03-19 10:37, rounded up to the whole hour.
OLDEST_HOUR = datetime(2025, 3, 19, 11)
OLDEST_DAY = datetime(2025, 3, 19)
# The days of the tier, from before the oldest CloudWatch keeps (a refused day must be a
# partition), as of NOW rather than of the wall clock.
PARTITIONS = Partitions.starting(datetime(2025, 3, 1), now=NOW)

# The nine statistics of an hourly row: CloudWatch statistic -> column.
HOURLY_COLUMNS = {
    "Average": "average",
    "Minimum": "minimum",
    "Maximum": "maximum",
    "Sum": "sum",
    "SampleCount": "sample_count",
    "p50": "p50",
    "p90": "p90",
    "p95": "p95",
    "p99": "p99",
}


def key(day: datetime) -> str:
    return f"{day:%Y-%m-%d}"


def hourly_asset(settings: Settings = TEST_SETTINGS) -> AssetsDefinition:
    [asset] = build_history_assets(settings, PARTITIONS.days, clock=lambda: NOW)
    return asset


def days(first: datetime, last: datetime) -> list[datetime]:
    return [first + n * DAY for n in range((last - first) // DAY + 1)]


# --- 1. Which days and hours can be fetched (history/window.py) -------------------------------


@pytest.mark.parametrize(
    ("now", "kept_days", "oldest"),
    [
        # At a whole hour the 455-day edge is itself a whole hour: kept as it is.
        (datetime(2026, 6, 17, 10), None, datetime(2025, 3, 19, 10)),
        # A microsecond later that hour is partly forgotten: the next one is the oldest.
        (datetime(2026, 6, 17, 10, 0, 0, 1), None, datetime(2025, 3, 19, 11)),
        (NOW, None, OLDEST_HOUR),
        (NOW, 455, OLDEST_HOUR),
        # A longer retention cannot bring back what CloudWatch no longer has.
        (NOW, 1000, OLDEST_HOUR),
        # METRICS_HOURLY_RETENTION_DAYS=30: 2026-05-18 10:37, rounded up.
        (NOW, 30, datetime(2026, 5, 18, 11)),
        (datetime(2026, 6, 17, 23, 30), 1, datetime(2026, 6, 17, 0)),
    ],
)
def test_oldest_fetchable_hour(now: datetime, kept_days: int | None, oldest: datetime) -> None:
    assert oldest_fetchable_hour(now, kept_days) == oldest


@pytest.mark.parametrize(
    ("now", "settle", "kept_days", "first", "last"),
    [
        (NOW, SETTLE, None, OLDEST_DAY, YESTERDAY),
        # Yesterday's last hour ends at midnight and settles at 00:15.
        (datetime(2026, 6, 17, 0, 14), SETTLE, None, OLDEST_DAY, datetime(2026, 6, 15)),
        (datetime(2026, 6, 17, 0, 15), SETTLE, None, OLDEST_DAY, YESTERDAY),
        (datetime(2026, 6, 17), timedelta(0), None, OLDEST_DAY, YESTERDAY),
        # The oldest fetchable hour is 2025-03-20 00:00: the 19th is wholly forgotten.
        (datetime(2026, 6, 17, 23, 30), SETTLE, None, datetime(2025, 3, 20), YESTERDAY),
        (NOW, SETTLE, 30, datetime(2026, 5, 18), YESTERDAY),
    ],
)
def test_settled_days_run_from_the_oldest_fetchable_hour_to_the_last_settled_day(
    now: datetime, settle: timedelta, kept_days: int | None, first: datetime, last: datetime
) -> None:
    assert settled_days(now, settle, kept_days) == days(first, last)


def test_the_settled_days_are_the_455_days_before_today() -> None:
    window = settled_days(NOW, SETTLE, None)
    assert len(window) == 455
    assert TODAY not in window  # in progress
    assert settled_days(datetime(2026, 6, 17, 0, 14), SETTLE, None)[-1] == datetime(2026, 6, 15)


def test_hours_required_are_24_but_for_the_oldest_day() -> None:
    window = settled_days(NOW, SETTLE, None)
    required = hours_required(window, NOW, None)
    assert required[OLDEST_DAY] == 13  # 11:00 to 23:00
    assert {day: hours for day, hours in required.items() if day != OLDEST_DAY} == {
        day: 24 for day in window[1:]
    }
    # The day in progress: its ten hours that ended; a day CloudWatch forgot: none.
    assert hours_required([TODAY, datetime(2025, 3, 18)], NOW, None) == {
        TODAY: 10,
        datetime(2025, 3, 18): 0,
    }
    assert hours_required([datetime(2026, 5, 18), datetime(2026, 5, 19)], NOW, 30) == {
        datetime(2026, 5, 18): 13,
        datetime(2026, 5, 19): 24,
    }
    # At 23:30 the oldest hour is midnight: the oldest day is whole.
    late = datetime(2026, 6, 17, 23, 30)
    assert hours_required([datetime(2025, 3, 20)], late, None) == {datetime(2025, 3, 20): 24}


def test_complete_days_need_every_fetchable_hour() -> None:
    second = OLDEST_DAY + DAY
    required = {OLDEST_DAY: 13, second: 24}
    rows = [
        ("a", OLDEST_DAY, 13),
        ("b", OLDEST_DAY, 12),
        ("a", second, 24),
        ("b", second, 23),
        ("a", OLDEST_DAY - DAY, 24),  # a day outside the window
    ]
    assert complete_days(rows, required) == {("a", OLDEST_DAY), ("a", second)}
    assert complete_days([], required) == set()


# --- 2. A settled day fetched from the local AWS ----------------------------------------------

# The default fleet started 80 days before NOW: its instances exist since 110 days ago, but
# reports-db (created 80 days and 90 minutes ago); legacy-db is stopped since two days ago.
FLEET = default_fleet(NOW_UTC - timedelta(days=80))
HISTORY_METRICS = ["CPUUtilization", "FreeStorageSpace"]
AURORA = {"shop-aurora-1", "shop-aurora-2", "events-aurora-1"}
EVERYONE = {
    "orders-db", "catalog-db", "analytics-db", "users-db", "legacy-db", "reports-db", *AURORA
}  # fmt: skip


def history_metrics(instance_id: str) -> list[str]:
    """What each instance is asked for: Aurora's instances have no storage of their own."""
    return ["CPUUtilization"] if instance_id in AURORA else HISTORY_METRICS


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def fleet_aws() -> Iterator[LocalAws]:
    local = start(FLEET, clock=lambda: NOW_UTC)
    yield local
    local.stop()


def expected_hours(
    simulated: SimulatedInstance, metric: str, start: datetime, end: datetime
) -> dict[datetime, dict[str, float]]:
    """Per hour of [start, end), each statistic column as the simulator's generator makes it
    (its default seed, 7)."""
    expected: dict[datetime, dict[str, float]] = {}
    for statistic, column in HOURLY_COLUMNS.items():
        seconds, values = series(
            simulated.profile(7),
            metric,
            statistic,
            3600,
            start.replace(tzinfo=UTC),
            end.replace(tzinfo=UTC),
            NOW_UTC,
        )
        for second, value in zip(seconds.tolist(), values.tolist(), strict=True):
            hour = datetime.fromtimestamp(second, UTC).replace(tzinfo=None)
            expected.setdefault(hour, {})[column] = value
    return expected


@pytest.mark.parametrize(
    ("days_ago", "existing"),
    [
        (20, EVERYONE),  # CloudWatch keeps 5-minute data then: an hour is a multiple
        (100, EVERYONE - {"reports-db"}),  # only hourly data: nothing but 3600-multiples
    ],
    ids=["20-days-ago", "100-days-ago"],
)
def test_a_settled_day_holds_cloudwatchs_hourly_statistics(
    warehouse: WarehouseResource,
    fleet_aws: LocalAws,
    instance: DagsterInstance,
    days_ago: int,
    existing: set[str],
) -> None:
    day = datetime(2026, 6, 17) - timedelta(days=days_ago)
    resources = {
        "aws": make_aws(endpoint_url=fleet_aws.url),
        "collection": make_collection(metrics=HISTORY_METRICS),
        "warehouse": warehouse,
    }
    assert materialize([rds_instances], instance=instance, resources=resources).success

    result = materialize(
        [hourly_asset()], partition_key=key(day), instance=instance, resources=resources
    )

    assert result.success
    with warehouse.reader() as conn:
        rows = conn.execute(
            "SELECT instance_id, metric, count(*), count(DISTINCT hour), min(hour), max(hour) "
            "FROM rds_metrics_hourly GROUP BY ALL"
        ).fetchall()
        columns = ", ".join(HOURLY_COLUMNS.values())
        stored = conn.execute(
            f"SELECT hour, {columns} FROM rds_metrics_hourly "
            "WHERE instance_id = 'orders-db' AND metric = 'CPUUtilization' ORDER BY hour"
        ).fetchall()
        fetches = conn.execute(
            "SELECT instance_id, count(*), count(*) FILTER (WHERE settled), sum(datapoints), "
            "min(hour), max(hour) FROM rds_metric_hourly_fetches GROUP BY ALL"
        ).fetchall()
        runs = conn.execute(
            "SELECT asset, window_start, window_end, instances, rows_written, datapoints, "
            "settled_hours FROM pipeline_runs"
        ).fetchall()
    last_hour = day + timedelta(hours=23)
    assert sorted(rows) == sorted(
        (instance_id, metric, 24, 24, day, last_hour)
        for instance_id in existing
        for metric in history_metrics(instance_id)
    )
    orders = next(i for i in FLEET if i.instance_id == "orders-db")
    expected = expected_hours(orders, "CPUUtilization", day, day + DAY)
    assert [row[0] for row in stored] == [day + n * HOUR for n in range(24)]
    for hour, *values in stored:
        assert dict(zip(HOURLY_COLUMNS.values(), values, strict=True)) == pytest.approx(
            expected[hour]
        ), hour
        assert values[4] == 60  # SampleCount: an hour of one-minute samples
    # Every hour settled, each with its metrics x 9 statistics.
    assert sorted(fetches) == sorted(
        (instance_id, 24, 24, 24 * len(history_metrics(instance_id)) * 9, day, last_hour)
        for instance_id in existing
    )
    rows_written = sum(len(history_metrics(i)) for i in existing) * 24
    assert runs == [
        ("rds_metrics_hourly", day, day + DAY, len(existing), rows_written, rows_written * 9, 24)
    ]


# --- 3. A day CloudWatch no longer keeps ------------------------------------------------------


def store_by_hand(warehouse: WarehouseResource, day: datetime) -> list[tuple[Any, ...]]:
    """Three hours of orders-db's CPU, and their fetch log, on `day`; what the tables hold."""
    with warehouse.connect() as conn:

        def insert() -> None:
            for n in range(3):
                hour = day + n * HOUR
                conn.execute(
                    "INSERT INTO rds_metrics_hourly (hour, account_id, region, instance_id, "
                    "metric, unit, average, minimum, maximum, sum, sample_count, p50, p90, p95, "
                    "p99, collected_at) VALUES (?, ?, 'us-east-1', 'orders-db', "
                    "'CPUUtilization', 'Percent', ?, 1, 90, ?, 60, 40, 70, 80, 85, ?)",
                    [hour, ACCOUNT_ID, 40.0 + n, 60 * (40.0 + n), day + DAY],
                )
                conn.execute(
                    "INSERT INTO rds_metric_hourly_fetches VALUES "
                    "(?, ?, 'us-east-1', 'orders-db', ?, 9, true, 'by-hand')",
                    [hour, ACCOUNT_ID, day + DAY],
                )

        in_transaction(conn, insert)
    return stored_tables(warehouse)


def stored_tables(warehouse: WarehouseResource) -> list[tuple[Any, ...]]:
    with warehouse.reader() as conn:
        return [
            *conn.execute("SELECT * FROM rds_metrics_hourly ORDER BY hour").fetchall(),
            *conn.execute("SELECT * FROM rds_metric_hourly_fetches ORDER BY hour").fetchall(),
        ]


@pytest.mark.parametrize(
    ("env", "day", "limit"),
    [
        # Wholly before 2025-03-19 11:00, the oldest hour CloudWatch keeps.
        (
            {},
            datetime(2025, 3, 14),
            "2025-03-19 11:00 UTC (CloudWatch keeps hourly data for 455 days)",
        ),
        # Within CloudWatch's 455 days, but older than the tier keeps.
        (
            {"METRICS_HOURLY_RETENTION_DAYS": "30"},
            datetime(2026, 5, 7),
            "2026-05-18 11:00 UTC "
            "(CloudWatch keeps hourly data for 455 days; METRICS_HOURLY_RETENTION_DAYS=30)",
        ),
    ],
    ids=["older-than-cloudwatch-keeps", "older-than-the-tier-keeps"],
)
def test_a_day_too_old_to_fetch_is_refused_and_its_stored_rows_kept(
    warehouse: WarehouseResource, env: dict[str, str], day: datetime, limit: str
) -> None:
    before = store_by_hand(warehouse, day)
    assert len(before) == 6
    resources = {
        # Nothing may be asked of AWS: an endpoint where nobody listens.
        "aws": make_aws(endpoint_url="http://127.0.0.1:9", max_attempts=1),
        "collection": make_collection(metrics=["CPUUtilization"]),
        "warehouse": warehouse,
    }

    result = materialize(
        [hourly_asset(settings_for_tests(**env))],
        partition_key=key(day),
        resources=resources,
        raise_on_error=False,
    )

    assert not result.success
    [failure] = result.get_step_failure_events()
    assert failure.step_failure_data.error is not None
    error = root_cause(failure.step_failure_data.error)
    assert error.message == (
        "dagster._core.definitions.events.Failure: rds_metrics_hourly: no hour of "
        f"{key(day)} to {key(day + DAY)} can be fetched now: the hours must have ended and "
        f"start at or after {limit}. What is stored of older days is kept as it is.\n"
    )
    assert stored_tables(warehouse) == before
    with warehouse.reader() as conn:
        assert conn.execute("SELECT count(*) FROM pipeline_runs").fetchall() == [(0,)]


# --- 4. The gap sensor fills the tier newest day first ----------------------------------------

# Two instances older than CloudWatch's memory, in one of the two regions; one stopped two days
# before NOW (the simulator stops it then), so yesterday it sent nothing.
SENSOR_FLEET = [
    SimulatedInstance(
        "orders-db", "us-east-1", "postgres", "db.r6g.large", 500, NOW_UTC - timedelta(days=600)
    ),
    SimulatedInstance(
        "legacy-db",
        "us-east-1",
        "mysql",
        "db.t3.medium",
        100,
        NOW_UTC - timedelta(days=600),
        stopped=True,
    ),
]
# What the sensor counts per instance and day: 1 metric x 9 statistics x 24 hours.
PER_INSTANCE_DAY = 1 * 9 * 24
THREE_DAYS = str(2 * 3 * PER_INSTANCE_DAY)
EVERYTHING = str(10**9)


@pytest.fixture
def sensor_aws() -> Iterator[LocalAws]:
    local = start(SENSOR_FLEET, clock=lambda: NOW_UTC)
    yield local
    local.stop()


def sensor_settings(**env: str) -> Settings:
    return settings_for_tests(METRICS_CLOUDWATCH_METRICS="CPUUtilization", **env)


def hourly_sensor(settings: Settings, now: datetime = NOW) -> SensorDefinition:
    return build_gap_healing_sensor(
        settings, (CLOUDWATCH_RDS_HOURLY,), PARTITIONS, clock=lambda: now
    )


def tick(
    sensor: SensorDefinition, instance: DagsterInstance, warehouse: WarehouseResource
) -> list[RunRequest]:
    result = sensor(build_sensor_context(instance=instance, resources={"warehouse": warehouse}))
    assert isinstance(result, SensorResult), result
    return list(result.run_requests or [])


def described(requests: Sequence[RunRequest]) -> list[tuple[str | None, str, str, Any]]:
    return [
        (r.job_name, r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG], r.run_config) for r in requests
    ]


def run_all(
    requests: Sequence[RunRequest],
    asset: AssetsDefinition,
    instance: DagsterInstance,
    resources: dict[str, Any],
) -> None:
    for request in requests:
        assert materialize(
            [asset],
            instance=instance,
            resources=resources,
            tags=request.tags,
            run_config=request.run_config,
        ).success


@pytest.fixture
def discovered(
    warehouse: WarehouseResource, sensor_aws: LocalAws, instance: DagsterInstance
) -> dict[str, Any]:
    """The resources of a warehouse that holds the inventory and nothing of the tier."""
    resources = {
        "aws": make_aws(endpoint_url=sensor_aws.url),
        "collection": make_collection(metrics=["CPUUtilization"]),
        "warehouse": warehouse,
    }
    assert materialize([rds_instances], instance=instance, resources=resources).success
    return resources


def test_the_gap_sensor_fetches_the_newest_settled_days_first_within_its_budget(
    warehouse: WarehouseResource, discovered: dict[str, Any], instance: DagsterInstance
) -> None:
    settings = sensor_settings(METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK=THREE_DAYS)
    asset = hourly_asset(settings)
    sensor = hourly_sensor(settings)

    # At 00:14 yesterday has not settled (its last hour settles at 00:15): the day before ends.
    early = hourly_sensor(settings, datetime(2026, 6, 17, 0, 14))
    assert described(tick(early, instance, warehouse)) == [
        ("hourly_history_job", "2026-06-13", "2026-06-15", {})
    ]

    first = tick(sensor, instance, warehouse)

    assert described(first) == [("hourly_history_job", "2026-06-14", "2026-06-16", {})]
    run_all(first, asset, instance, discovered)
    with warehouse.reader() as conn:
        fetched = conn.execute(
            "SELECT instance_id, date_trunc('day', hour), count(*), count(*) FILTER (settled), "
            "sum(datapoints) FROM rds_metric_hourly_fetches GROUP BY ALL"
        ).fetchall()
    # legacy-db stopped on the 15th at 10:37: yesterday it sent nothing, and that is settled.
    assert sorted(fetched) == [
        ("legacy-db", datetime(2026, 6, 14), 24, 24, 24 * 9),
        ("legacy-db", datetime(2026, 6, 15), 24, 24, 11 * 9),
        ("legacy-db", YESTERDAY, 24, 24, 0),
        ("orders-db", datetime(2026, 6, 14), 24, 24, 24 * 9),
        ("orders-db", datetime(2026, 6, 15), 24, 24, 24 * 9),
        ("orders-db", YESTERDAY, 24, 24, 24 * 9),
    ]

    second = tick(sensor, instance, warehouse)

    # The next older days; yesterday, empty for legacy-db but settled, is no gap.
    assert described(second) == [("hourly_history_job", "2026-06-11", "2026-06-13", {})]
    run_all(second, asset, instance, discovered)

    # With budget for everything, the rest in one run, from the oldest day CloudWatch keeps.
    everything = sensor_settings(METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK=EVERYTHING)
    assert described(tick(hourly_sensor(everything), instance, warehouse)) == [
        ("hourly_history_job", key(OLDEST_DAY), "2026-06-10", {})
    ]
    # A tier kept 30 days asks for nothing older: 2026-05-18 11:00 is its oldest hour.
    kept = sensor_settings(
        METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK=EVERYTHING, METRICS_HOURLY_RETENTION_DAYS="30"
    )
    assert described(tick(hourly_sensor(kept), instance, warehouse)) == [
        ("hourly_history_job", "2026-05-18", "2026-06-10", {})
    ]


def test_the_oldest_day_is_fetched_from_its_oldest_hour_and_then_complete(
    warehouse: WarehouseResource, discovered: dict[str, Any], instance: DagsterInstance
) -> None:
    settings = sensor_settings(METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK=EVERYTHING)

    assert materialize(
        [hourly_asset(settings)],
        partition_key=key(OLDEST_DAY),
        instance=instance,
        resources=discovered,
    ).success

    with warehouse.reader() as conn:
        fetched = conn.execute(
            "SELECT instance_id, count(*), count(*) FILTER (settled), min(hour), max(hour) "
            "FROM rds_metric_hourly_fetches GROUP BY ALL"
        ).fetchall()
        stored = conn.execute(
            "SELECT hour, average, p99 FROM rds_metrics_hourly "
            "WHERE instance_id = 'orders-db' ORDER BY hour"
        ).fetchall()
    last = OLDEST_DAY + timedelta(hours=23)
    assert sorted(fetched) == [
        ("legacy-db", 13, 13, OLDEST_HOUR, last),
        ("orders-db", 13, 13, OLDEST_HOUR, last),
    ]
    # CloudWatch keeps nothing older than 455 days: its series starts at the oldest hour.
    expected = expected_hours(SENSOR_FLEET[0], "CPUUtilization", OLDEST_HOUR, OLDEST_DAY + DAY)
    assert stored == [
        (hour, pytest.approx(expected[hour]["average"]), pytest.approx(expected[hour]["p99"]))
        for hour in sorted(expected)
    ]
    # Its 13 hours are all the day has to fetch: the next tick starts the day after.
    assert described(tick(hourly_sensor(settings), instance, warehouse)) == [
        ("hourly_history_job", key(OLDEST_DAY + DAY), key(YESTERDAY), {})
    ]


# The raw tier's collection, reading the same fixed clock.
_, rds_metrics_as_of_now = build_collection_assets(TEST_SETTINGS, PARTITIONS.hourly, lambda: NOW)


def test_the_tier_waits_while_the_raw_look_back_is_being_healed(
    warehouse: WarehouseResource, discovered: dict[str, Any], instance: DagsterInstance
) -> None:
    """Both sources registered, as deployed: the first tick heals the raw look-back only; the
    tier's days are asked for once the raw tier launches nothing and has nothing running."""
    settings = sensor_settings(METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK=EVERYTHING)
    both = build_gap_healing_sensor(
        settings, (CLOUDWATCH_RDS, CLOUDWATCH_RDS_HOURLY), PARTITIONS, clock=lambda: NOW
    )

    first = both(build_sensor_context(instance=instance, resources={"warehouse": warehouse}))

    assert isinstance(first, SensorResult)
    assert [r.job_name for r in first.run_requests or []] == ["healing_job"]
    [raw_run] = first.run_requests or []
    assert materialize(
        [rds_metrics_as_of_now],
        instance=instance,
        resources=discovered,
        tags=raw_run.tags,
        run_config=raw_run.run_config,
    ).success

    second = both(build_sensor_context(instance=instance, resources={"warehouse": warehouse}))

    assert isinstance(second, SensorResult)
    assert described(second.run_requests or []) == [
        ("hourly_history_job", key(OLDEST_DAY), key(YESTERDAY), {})
    ]
