"""Performance Insights' load: what an answer becomes (the total once, a group's remainder
beyond PI's limit as `other`, digests once), which hours are asked within PI's retention, and
a collection against the local AWS whose stored load equals what it served."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dagster import DagsterInstance, build_sensor_context, instance_for_test, materialize

from metrics_pipeline.analysts.query import list_instances
from metrics_pipeline.catalog import PI_GROUPS, PI_OTHER, PI_TOTAL
from metrics_pipeline.collection.source import CLOUDWATCH_RDS
from metrics_pipeline.dagster_runs import HEALING_RUN_TAGS, RANGE_END_TAG, RANGE_START_TAG
from metrics_pipeline.healing.sensors import build_gap_healing_sensor
from metrics_pipeline.hours import HOUR, floor_hour, healing_hours, partition_key, utc_now
from metrics_pipeline.insights.answers import (
    GROUP_LIMIT,
    Answer,
    Digest,
    read_answer,
    sum_problems,
)
from metrics_pipeline.insights.checks import unbalanced_groups
from metrics_pipeline.insights.fetch import plan_hours
from metrics_pipeline.insights.source import PERFORMANCE_INSIGHTS_LOAD
from metrics_pipeline.local_aws.fleet import SimulatedInstance, aurora_clusters
from metrics_pipeline.local_aws.server import LocalAws, start
from metrics_pipeline.local_aws.signals import MINUTE
from metrics_pipeline.local_aws.workload import load, split_keys, workload
from metrics_pipeline.quality.checks import build_checks
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import (
    TEST_PARTITIONS,
    TEST_SETTINGS,
    busy_hour,
    make_aws,
    make_collection,
    rds_instances,
    rds_pi_load,
    rds_pi_load_balance,
)
from metrics_pipeline_tests.moto_fleet import ACCOUNT_ID

pytestmark = pytest.mark.storage_neutral

HOUR_START = datetime(2026, 11, 30, 14)


def entry(points: dict[int, float], dimension: str = "", value: str = "") -> dict[str, Any]:
    """A MetricList entry: values by minute of HOUR_START, of a key when `dimension`."""
    key: dict[str, Any] = {"Metric": "db.load.avg"}
    if dimension:
        key["Dimensions"] = {dimension: value}
    return {
        "Key": key,
        "DataPoints": [
            {"Timestamp": (HOUR_START + timedelta(minutes=m)).replace(tzinfo=UTC), "Value": v}
            for m, v in points.items()
        ],
    }


def test_an_answer_keeps_the_total_once_and_the_remainder_beyond_the_limit_as_other() -> None:
    total = {0: 30.0, 1: 28.0}
    waits = [entry({0: 1.0, 1: 1.0}, "db.wait_event.name", f"w{n}") for n in range(GROUP_LIMIT)]
    users = [
        entry({0: 20.0, 1: 10.0}, "db.user.name", "app"),
        entry({0: 10.0}, "db.user.name", "ro"),
    ]
    # Each query answers with the total first; a period PI has no value for is left out.
    entries = [
        entry(total), *waits, entry(total), *users,
        {"Key": {"Metric": "db.load.avg", "Dimensions": {"db.user.name": "x"}},
         "DataPoints": [{"Timestamp": HOUR_START.replace(tzinfo=UTC)}]},
    ]  # fmt: skip
    answer = read_answer(entries, HOUR_START, HOUR_START + HOUR)
    by_group: dict[str, list[tuple[str, int, float]]] = {}
    for row in answer.rows:
        minute = (row.ts - HOUR_START) // timedelta(minutes=1)
        by_group.setdefault(row.group, []).append((row.key, minute, row.active_sessions))
    assert by_group[PI_TOTAL] == [("", 0, 30.0), ("", 1, 28.0)]
    # The wait events returned the limit: what the total holds beyond them is `other`.
    assert sorted(k for k in by_group["db.wait_event"] if k[0] == PI_OTHER) == [
        (PI_OTHER, 0, 5.0),
        (PI_OTHER, 1, 3.0),
    ]
    assert len(by_group["db.wait_event"]) == 2 * GROUP_LIMIT + 2
    # The users returned fewer than the limit: they are the whole load, no `other`; the
    # period without a value is not stored.
    assert by_group["db.user"] == [("app", 0, 20.0), ("app", 1, 10.0), ("ro", 0, 10.0)]
    assert [row.group for row in answer.of(personal=True)] == ["db.user"] * 3
    assert sum_problems(answer.rows) == []


def test_a_digest_of_several_hours_is_kept_once_from_its_first_to_its_last_load() -> None:
    def hour_of(start: datetime, loads: dict[int, float]) -> Answer:
        digest = {"db.sql_tokenized.id": "D1", "db.sql_tokenized.statement": "SELECT ?"}
        key = {"Metric": "db.load.avg", "Dimensions": digest}
        points = [{"Timestamp": start + timedelta(minutes=m), "Value": v} for m, v in loads.items()]
        return read_answer([{"Key": key, "DataPoints": points}], start, start + HOUR)

    answer = Answer()
    answer.add(hour_of(HOUR_START, {0: 0.0, 5: 0.5, 59: 0.25}))
    answer.add(hour_of(HOUR_START + HOUR, {0: 0.5, 30: 0.0}))
    # A period without load is not when it was seen.
    assert answer.digests == [
        Digest(
            "D1",
            None,
            "SELECT ?",
            HOUR_START + timedelta(minutes=5),
            HOUR_START + HOUR,
        )
    ]
    assert len(answer.rows) == 5


def test_keys_adding_up_to_more_than_the_total_are_named() -> None:
    entries = [entry({0: 1.0}), entry({0: 0.75}, "db.name", "a"), entry({0: 0.5}, "db.name", "b")]
    answer = read_answer(entries, HOUR_START, HOUR_START + HOUR)
    assert sum_problems(answer.rows) == ["db at 2026-11-30 14:00: keys 1.25 > total 1"]


def test_hours_are_asked_only_as_far_as_pi_keeps_them_and_as_far_as_they_happened() -> None:
    now = datetime(2026, 12, 8, 10, 30, 20)
    hours = [datetime(2026, 12, 1, 9), datetime(2026, 12, 1, 10), datetime(2026, 12, 8, 10)]
    planned = plan_hours(hours, now, retention_days=7, period_seconds=60)
    # Older than the retention: final, nothing to ask; partly kept: from the first kept period.
    assert [(p.hour.start, p.hour.kept, p.window) for p in planned] == [
        (hours[0], False, None),
        (hours[1], True, (datetime(2026, 12, 1, 10, 31), datetime(2026, 12, 1, 11))),
        (hours[2], True, (hours[2], datetime(2026, 12, 8, 10, 30))),
    ]


NOW = utc_now()
MINUTE_DELTA = timedelta(minutes=1)
CREATED = (NOW - timedelta(days=30)).replace(tzinfo=UTC)
FLEET = [
    *aurora_clusters("us-east-1", CREATED),
    SimulatedInstance("orders-db", "us-east-1", "postgres", "db.r6g.large", 100, CREATED),
]


@pytest.fixture(scope="module")
def local_aws() -> Iterator[LocalAws]:
    local = start(FLEET)
    yield local
    local.stop()


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


def served(
    simulated: SimulatedInstance, hour: datetime
) -> dict[str, dict[tuple[str, datetime], float]]:
    """What the local AWS's workload holds for the hour, per group and (key, minute): its
    generator read directly, not through PI's API."""
    first = int(hour.replace(tzinfo=UTC).timestamp()) // MINUTE
    minutes = np.arange(first, first + 60, dtype=np.int64)
    work = workload(simulated.profile(7), simulated.engine, minutes, np.ones(60, dtype=bool))
    stamps = [hour + timedelta(minutes=m) for m in range(60)]
    keys = split_keys(simulated.engine)
    splits = {"db.wait_event": "waits", "db.sql_tokenized": "sql", "db": "databases",
              "db.user": "users", "db.host": "hosts"}  # fmt: skip
    expected: dict[str, dict[tuple[str, datetime], float]] = {
        PI_TOTAL: {("", ts): float(v) for ts, v in zip(stamps, work.total, strict=True)}
    }
    for group in PI_GROUPS:
        split = splits[group.name]
        expected[group.name] = {}
        for n, key in enumerate(keys[split]):
            mask = np.zeros(len(keys[split]), dtype=bool)
            mask[n] = True
            values = load(work, {split: mask})
            for ts, value in zip(stamps, values, strict=True):
                expected[group.name][(key[group.key], ts)] = float(value)
    return expected


def test_pi_load_is_what_the_local_aws_served_once_per_instance_hour(
    local_aws: LocalAws, warehouse: WarehouseResource, instance: DagsterInstance
) -> None:
    hour = busy_hour(NOW, ago=5 * HOUR)  # load: every group has keys
    resources = {
        "aws": make_aws(endpoint_url=local_aws.url, pi_requests_per_second=1000),
        "collection": make_collection(),
        "warehouse": warehouse,
    }
    assert materialize([rds_instances], instance=instance, resources=resources).success
    for _ in range(2):  # again: the same rows, replaced
        result = materialize(
            [rds_pi_load, rds_pi_load_balance],
            partition_key=partition_key(hour),
            instance=instance,
            resources=resources,
        )
        assert result.success
    # Each group's keys add up to the total in every period.
    [balance] = result.get_asset_check_evaluations()
    assert balance.passed, balance.metadata
    [materialization] = result.asset_materializations_for_node("rds_pi_load")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    with warehouse.reader() as conn:
        rows = conn.execute(
            "SELECT instance_id, dimension_group, dimension_key, ts, active_sessions "
            "FROM rds_pi_load UNION ALL SELECT instance_id, dimension_group, dimension_key, "
            "ts, active_sessions FROM rds_pi_load_personal"
        ).fetchall()
        statements = conn.execute(
            "SELECT instance_id, digest_id, statement FROM rds_pi_statements ORDER BY ALL"
        ).fetchall()
        fetches = conn.execute(
            "SELECT instance_id, hour, datapoints, settled FROM rds_pi_fetches"
        ).fetchall()
        counted = PERFORMANCE_INSIGHTS_LOAD.rows_per_subject_hour(conn, hour, hour + HOUR)
        whole_texts = conn.execute("SELECT count(*) FROM rds_pi_sql").fetchall()
    # Only the writer with PI on was asked; its every group's every key and minute is stored.
    writer = FLEET[0]
    assert writer.performance_insights_days is not None
    assert {instance_id for instance_id, *_ in rows} == {writer.instance_id}
    expected = served(writer, hour)
    stored: dict[str, dict[tuple[str, datetime], float]] = {}
    for _, group, key, ts, value in rows:
        stored.setdefault(group, {})[(key, ts)] = value
    assert set(stored) == set(expected)
    for group, values in expected.items():
        assert stored[group] == pytest.approx(values), group
    assert len(rows) == sum(len(values) for values in expected.values())
    assert metadata["rows_written"] == len(rows) and metadata["rows_replaced"] == len(rows)
    # One request a run, paged: 5 groups × (the total and ≤ 7 keys) in pages of 25.
    entries = len(PI_GROUPS) + sum(len(v) for v in split_keys(writer.engine).values())
    assert metadata["pi_requests"] == -(-entries // 25)
    # Each digest once, with at most the 500 bytes PI returns of its text.
    digests = {key for key, _ in expected["db.sql_tokenized"]}
    assert [(i, d) for i, d, _ in statements] == sorted((writer.instance_id, d) for d in digests)
    assert max(len(text.encode()) for *_, text in statements) == 500
    assert fetches == [(writer.instance_id, hour, len(rows), True)]
    assert list(counted.values()) == [60]
    assert whole_texts == [(0,)]  # statements with their literals only when asked
    # The instances are listed with PI on or off, and how long PI keeps their data.
    storage = StorageSettings(
        duckdb_path=Path(warehouse.database),
        warehouse=warehouse.lake_catalog or None,
        lake_data_path=warehouse.lake_data_path or None,
    )
    listed = list_instances(storage).astype(object).where(lambda f: f.notna(), None)
    assert {
        (row.instance_id, row.performance_insights_enabled, row.performance_insights_retention_days)
        for row in listed.itertuples()
    } == {
        (i.instance_id, i.performance_insights_days is not None, i.performance_insights_days)
        for i in FLEET
    }


def test_the_balance_check_counts_keys_that_do_not_add_up_to_the_total(
    warehouse: WarehouseResource,
) -> None:
    warehouse.prepare()
    now = datetime(2026, 12, 1, 12)
    rows = [
        # ts, group, key, sessions: the users add up to more, the databases to less.
        (now - HOUR, PI_TOTAL, "", 2.0),
        (now - HOUR, "db.wait_event", "CPU", 2.0),
        (now - HOUR, "db", "shop", 1.5),
        (now - HOUR, "db.user", "app", 2.5),
        (now + HOUR, PI_TOTAL, "", 1.0),
    ]
    with warehouse.connect() as conn:
        for ts, group, key, sessions in rows:
            table = "rds_pi_load_personal" if group == "db.user" else "rds_pi_load"
            conn.execute(
                f"INSERT INTO {table} VALUES (?, '1', 'us-east-1', 'a', ?, ?, NULL, ?, ?)",
                [ts, group, key, sessions, now],
            )
    with warehouse.reader() as conn:
        assert unbalanced_groups(conn, now - timedelta(days=1), now) == {
            "keys_above_total": 1,
            "keys_below_total": 1,
            "periods_ahead": 1,
        }


def test_the_gap_sensor_heals_pi_load_of_the_look_back_and_a_gap_in_it(
    local_aws: LocalAws, warehouse: WarehouseResource, instance: DagsterInstance
) -> None:
    """PI's source registered beside the instances': its hours lacking a settled fetch get a
    healing run of their own, which settles every hour of the look-back for the instance
    with PI on; an hour lost afterwards is asked for, and healed, alone."""
    resources = {
        "aws": make_aws(endpoint_url=local_aws.url, pi_requests_per_second=1000),
        "collection": make_collection(),
        "warehouse": warehouse,
    }
    assert materialize([rds_instances], instance=instance, resources=resources).success
    now = utc_now()
    sensor = build_gap_healing_sensor(
        TEST_SETTINGS, (CLOUDWATCH_RDS, PERFORMANCE_INSIGHTS_LOAD), TEST_PARTITIONS, lambda: now
    )
    hours = healing_hours(now, TEST_SETTINGS.backfill_days, TEST_SETTINGS.settle_delay)
    writer = Instance(ACCOUNT_ID, "us-east-1", FLEET[0].instance_id)

    def heal() -> tuple[str, str]:
        result = sensor(build_sensor_context(instance=instance, resources={"warehouse": warehouse}))
        [request] = [r for r in result.run_requests if r.job_name == "pi_healing_job"]
        healed = materialize(
            [rds_pi_load],
            instance=instance,
            resources=resources,
            tags={**request.tags, **HEALING_RUN_TAGS},
        )
        assert healed.success
        return request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]

    assert heal() == (partition_key(hours[0]), partition_key(hours[-1]))
    with warehouse.reader() as conn:
        settled = PERFORMANCE_INSIGHTS_LOAD.fetch_log.settled(conn, hours[0], hours[-1] + HOUR)
    assert settled == {(writer, hour) for hour in hours}
    # An hour comes in once settled: the freshness check waits for the next one until it is
    # due (an hour and the settle delay later) and METRICS_FRESHNESS_MINUTES more.
    with warehouse.reader() as conn:
        newest = PERFORMANCE_INSIGHTS_LOAD.newest_period(conn, TEST_SETTINGS)
    assert newest is not None and newest[1] == hours[-1] + HOUR
    next_due = newest[1] + HOUR + TEST_SETTINGS.settle_delay
    grace = timedelta(minutes=TEST_SETTINGS.freshness_minutes)
    for moment, fresh in ((next_due + grace, True), (next_due + grace + MINUTE_DELTA, False)):
        [freshness] = [
            check
            for check in build_checks(
                TEST_SETTINGS, [PERFORMANCE_INSIGHTS_LOAD], clock=lambda at=moment: at
            )
            if any(key.name == "rds_pi_load_freshness" for key in check.check_keys)
        ]
        assert freshness(warehouse=warehouse).passed is fresh

    lost = hours[len(hours) // 2]
    with warehouse.connect() as conn:
        for table in ("rds_pi_fetches", "rds_pi_load"):
            column = "hour" if table == "rds_pi_fetches" else "date_trunc('hour', ts)"
            conn.execute(f"DELETE FROM {table} WHERE {column} = ?", [lost])
    assert heal() == (partition_key(lost), partition_key(lost))
    with warehouse.reader() as conn:
        counted = PERFORMANCE_INSIGHTS_LOAD.rows_per_subject_hour(conn, lost, lost + HOUR)
    assert counted == {(writer, lost): 60}


def test_an_instance_whose_pi_was_turned_off_is_named_and_nothing_is_written_for_it(
    local_aws: LocalAws, warehouse: WarehouseResource, instance: DagsterInstance
) -> None:
    """The inventory says PI is on, PI answers NotAuthorized: no retry, no failure, no rows,
    no fetch log (the next discovery says PI is off); the other instances are collected."""
    resources = {
        "aws": make_aws(endpoint_url=local_aws.url, pi_requests_per_second=1000),
        "collection": make_collection(),
        "warehouse": warehouse,
    }
    assert materialize([rds_instances], instance=instance, resources=resources).success
    with warehouse.connect() as conn:
        conn.execute(
            "UPDATE rds_instances SET performance_insights_enabled = true, "
            "performance_insights_retention_days = 7 WHERE instance_id = 'orders-db'"
        )
    hour = floor_hour(NOW) - timedelta(hours=3)
    result = materialize(
        [rds_pi_load], partition_key=partition_key(hour), instance=instance, resources=resources
    )
    assert result.success
    [materialization] = result.asset_materializations_for_node("rds_pi_load")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert (metadata["instances"], metadata["instances_without_pi"]) == (2, 1)
    with warehouse.reader() as conn:
        fetched = conn.execute("SELECT DISTINCT instance_id FROM rds_pi_fetches").fetchall()
    assert fetched == [(FLEET[0].instance_id,)]


def test_statements_with_their_literals_and_whole_text_only_when_asked(
    local_aws: LocalAws, warehouse: WarehouseResource, instance: DagsterInstance
) -> None:
    """METRICS_PI_FULL_SQL_TEXT: the load by statement with its literals (db.sql) is kept
    beside the others, and the whole text of a statement PI cut at 500 bytes is asked once
    (GetDimensionKeyDetails), not again for the next hour."""
    resources = {
        "aws": make_aws(endpoint_url=local_aws.url, pi_requests_per_second=1000),
        "collection": make_collection(pi_full_sql_text=True),
        "warehouse": warehouse,
    }
    assert materialize([rds_instances], instance=instance, resources=resources).success
    first = busy_hour(NOW, ago=5 * HOUR) - HOUR  # the statements have load in every minute
    asked = []
    for hour in (first, first + HOUR):
        result = materialize(
            [rds_pi_load], partition_key=partition_key(hour), instance=instance, resources=resources
        )
        assert result.success
        [materialization] = result.asset_materializations_for_node("rds_pi_load")
        asked.append(materialization.metadata["pi_whole_text_requests"].value)
    writer = FLEET[0]
    statements = {
        key["db.sql.id"]: (key["db.sql.tokenized_id"], key["db.sql.statement"])
        for key in split_keys(writer.engine)["sql"]
    }
    long_ones = [sql_id for sql_id, (_, text) in statements.items() if len(text.encode()) > 500]
    assert len(long_ones) == 1 and asked == [1, 0]
    with warehouse.reader() as conn:
        stored = conn.execute(
            "SELECT sql_id, digest_id, statement, first_seen, last_seen FROM rds_pi_sql"
        ).fetchall()
        sql_rows = conn.execute(
            "SELECT count(*), count(DISTINCT dimension_key) FROM rds_pi_load_personal "
            "WHERE dimension_group = 'db.sql'"
        ).fetchall()
    assert {sql_id: (digest, text) for sql_id, digest, text, *_ in stored} == statements
    assert {(first_seen, last_seen) for *_, first_seen, last_seen in stored} == {
        (first, first + HOUR + timedelta(minutes=59))
    }
    assert sql_rows == [(2 * 60 * len(statements), len(statements))]
