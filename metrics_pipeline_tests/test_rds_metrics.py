"""rds_metrics materialized through Dagster against moto, compared value by value."""

import stat
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import instance_for_test, materialize
from moto.rds.responses import RDSResponse

from metrics_pipeline.collection.assets import build_collection_assets
from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.hours import floor_hour, utc_now
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import (
    TEST_PARTITIONS,
    TEST_SETTINGS,
    make_aws,
    make_collection,
    rds_instances,
    rds_metrics,
)
from metrics_pipeline_tests.moto_fleet import (
    ACCOUNT_ID,
    STAT_COLUMNS,
    TWO_DAYS_AGO,
    create_instance,
    put_metrics,
)

HOUR = TWO_DAYS_AGO
METRICS = ["CPUUtilization", "FreeableMemory"]

pytestmark = [pytest.mark.usefixtures("moto_aws"), pytest.mark.storage_neutral]


def partition_key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


def discover(aws: AwsResource, warehouse: WarehouseResource) -> None:
    assert materialize([rds_instances], resources={"aws": aws, "warehouse": warehouse}).success


def collect(
    aws: AwsResource,
    collection: CollectionResource,
    warehouse: WarehouseResource,
    first: datetime,
    last: datetime | None = None,
    instances: list[str] | None = None,
    raise_on_error: bool = True,
) -> Any:
    run_config = (
        {"ops": {"rds_metrics": {"config": {"instances": instances}}}} if instances else None
    )
    if last is None:
        return materialize(
            [rds_metrics],
            partition_key=partition_key(first),
            resources={"aws": aws, "collection": collection, "warehouse": warehouse},
            run_config=run_config,
            raise_on_error=raise_on_error,
        )
    return materialize(
        [rds_metrics],
        tags={
            "dagster/asset_partition_range_start": partition_key(first),
            "dagster/asset_partition_range_end": partition_key(last),
        },
        resources={"aws": aws, "collection": collection, "warehouse": warehouse},
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def stored(warehouse: WarehouseResource) -> dict[tuple[str, str, datetime, str], float | None]:
    """Every statistic cell of rds_metrics, keyed like fleet.put_metrics' expectations."""
    with warehouse.reader() as conn:
        rows = conn.execute(
            f"SELECT instance_id, metric, ts, {', '.join(STAT_COLUMNS)} FROM rds_metrics"
        ).fetchall()
    return {
        (r[0], r[1], r[2], column): value
        for r in rows
        for column, value in zip(STAT_COLUMNS, r[3:], strict=True)
    }


def materialization_metadata(result: Any) -> dict[str, Any]:
    """The run's figures, which every partition of a single run carries alike."""
    events = result.asset_materializations_for_node("rds_metrics")
    figures = [{key: value.value for key, value in e.metadata.items()} for e in events]
    assert all(f == figures[0] for f in figures)
    return figures[0]


@pytest.fixture
def small_collection() -> CollectionResource:
    return make_collection(metrics=METRICS)


def test_one_partition_matches_what_cloudwatch_was_given(
    aws: AwsResource, small_collection: CollectionResource, warehouse: WarehouseResource
) -> None:
    create_instance("us-east-1", "orders-db", tags={"team": "shop"})
    create_instance("eu-west-1", "users-db", engine="mysql")
    expected = put_metrics("us-east-1", ["orders-db"], METRICS, HOUR, HOUR + timedelta(hours=1))
    expected |= put_metrics("eu-west-1", ["users-db"], METRICS, HOUR, HOUR + timedelta(hours=1))
    # Datapoints just outside the hour must not leak into the partition.
    put_metrics(
        "us-east-1", ["orders-db"], METRICS, HOUR + timedelta(hours=1), HOUR + timedelta(hours=2)
    )

    discover(aws, warehouse)
    result = collect(aws, small_collection, warehouse, HOUR)

    assert stored(warehouse) == pytest.approx(expected)
    assert len(expected) == 2 * 2 * 12 * 5
    metadata = materialization_metadata(result)
    assert metadata["rows_written"] == 48
    assert metadata["instances"] == 2
    assert metadata["datapoints"] == 48 * 5
    assert metadata["cloudwatch_requests"] == 2  # one per region
    assert metadata["metrics_requested"] == 2 * 2 * 5
    with warehouse.reader() as conn:
        units = dict(conn.execute("SELECT DISTINCT metric, unit FROM rds_metrics").fetchall())
        regions = dict(conn.execute("SELECT instance_id, region FROM rds_metrics").fetchall())
        accounts = {r[0] for r in conn.execute("SELECT account_id FROM rds_metrics").fetchall()}
    assert units == {"CPUUtilization": "Percent", "FreeableMemory": "Bytes"}
    assert regions == {"orders-db": "us-east-1", "users-db": "eu-west-1"}
    assert accounts == {ACCOUNT_ID}


def test_statistics_not_requested_are_null(aws: AwsResource, warehouse: WarehouseResource) -> None:
    create_instance("us-east-1", "orders-db")
    expected = put_metrics(
        "us-east-1", ["orders-db"], ["CPUUtilization"], HOUR, HOUR + timedelta(hours=1)
    )
    only_max = make_collection(metrics=["CPUUtilization"], statistics=["Maximum"])
    discover(aws, warehouse)
    collect(aws, only_max, warehouse, HOUR)
    assert stored(warehouse) == {
        key: value if key[3] == "maximum" else None for key, value in expected.items()
    }


def test_range_runs_once_and_rematerializing_is_idempotent(
    aws: AwsResource,
    small_collection: CollectionResource,
    warehouse: WarehouseResource,
    get_metric_data_calls: list[dict[str, Any]],
) -> None:
    create_instance("us-east-1", "orders-db")
    end = HOUR + timedelta(hours=3)
    expected = put_metrics("us-east-1", ["orders-db"], METRICS, HOUR, end)
    discover(aws, warehouse)

    result = collect(aws, small_collection, warehouse, HOUR, HOUR + timedelta(hours=2))
    assert len(get_metric_data_calls) == 1  # us-east-1 only: eu-west-1 has no instance
    assert stored(warehouse) == pytest.approx(expected)
    assert materialization_metadata(result)["window_end"] == end.isoformat()
    materialized = {e.partition for e in result.asset_materializations_for_node("rds_metrics")}
    assert materialized == {partition_key(HOUR + timedelta(hours=h)) for h in range(3)}

    for _ in range(2):
        collect(aws, small_collection, warehouse, HOUR + timedelta(hours=1))
        collect(aws, small_collection, warehouse, HOUR, HOUR + timedelta(hours=2))
    assert stored(warehouse) == pytest.approx(expected)
    with warehouse.reader() as conn:
        [(count, distinct)] = conn.execute(
            "SELECT count(*), count(DISTINCT (instance_id, metric, ts)) FROM rds_metrics"
        ).fetchall()
    assert count == distinct == 3 * 12 * 2


def test_instances_config_restricts_fetch_and_replace(
    aws: AwsResource,
    small_collection: CollectionResource,
    warehouse: WarehouseResource,
    get_metric_data_calls: list[dict[str, Any]],
) -> None:
    for name in ("orders-db", "users-db"):
        create_instance("us-east-1", name)
    first = put_metrics(
        "us-east-1", ["orders-db", "users-db"], METRICS, HOUR, HOUR + timedelta(hours=1)
    )
    discover(aws, warehouse)
    collect(aws, small_collection, warehouse, HOUR)
    get_metric_data_calls.clear()

    # New datapoints arrive for both; only users-db is re-collected.
    later = put_metrics(
        "us-east-1", ["orders-db", "users-db"], ["SwapUsage"], HOUR, HOUR + timedelta(hours=1)
    )
    with_swap = make_collection(metrics=[*METRICS, "SwapUsage"])
    collect(aws, with_swap, warehouse, HOUR, instances=["users-db"])

    assert get_metric_data_calls[0]["queries"] == 1 * 3 * 5
    expected = first | {k: v for k, v in later.items() if k[0] == "users-db"}
    assert stored(warehouse) == pytest.approx(expected)


def test_unknown_instance_in_config_fails_with_its_name(
    aws: AwsResource, small_collection: CollectionResource, warehouse: WarehouseResource
) -> None:
    create_instance("us-east-1", "orders-db")
    discover(aws, warehouse)
    result = collect(
        aws, small_collection, warehouse, HOUR, instances=["no-such-db"], raise_on_error=False
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "instances: unknown instance id(s) no-such-db" in failure.message


def test_metrics_before_discovery_discover_the_inventory_first(
    aws: AwsResource, small_collection: CollectionResource, warehouse: WarehouseResource
) -> None:
    create_instance("us-east-1", "orders-db")
    expected = put_metrics("us-east-1", ["orders-db"], METRICS, HOUR, HOUR + timedelta(hours=1))
    # What a first backfill from the UI does:
    result = collect(aws, small_collection, warehouse, HOUR)

    assert stored(warehouse) == pytest.approx(expected)
    [discovered] = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == rds_instances.key
    ]
    assert discovered.metadata["instances"].value == 1
    assert discovered.metadata["regions"].value == "us-east-1, eu-west-1"


def test_a_region_added_later_is_discovered_by_the_next_collection(
    warehouse: WarehouseResource, get_metric_data_calls: list[dict[str, Any]]
) -> None:
    create_instance("us-east-1", "orders-db")
    create_instance("eu-west-1", "users-db")
    expected = put_metrics("eu-west-1", ["users-db"], METRICS, HOUR, HOUR + timedelta(hours=1))
    discover(make_aws(regions=["us-east-1"]), warehouse)

    collect(make_aws(), make_collection(metrics=METRICS), warehouse, HOUR)

    with warehouse.reader() as conn:
        inventory = conn.execute(
            "SELECT region, instance_id FROM rds_instances ORDER BY 1"
        ).fetchall()
    assert inventory == [("eu-west-1", "users-db"), ("us-east-1", "orders-db")]
    assert stored(warehouse) == pytest.approx(expected)
    assert sorted(c["region"] for c in get_metric_data_calls) == ["eu-west-1", "us-east-1"]


def test_named_instances_are_fetched_for_hours_before_their_creation(
    aws: AwsResource, small_collection: CollectionResource, warehouse: WarehouseResource
) -> None:
    # Re-created after HOUR: CloudWatch still holds the earlier instance's data.
    create_instance("us-east-1", "orders-db", created=HOUR + timedelta(hours=1, minutes=30))
    expected = put_metrics("us-east-1", ["orders-db"], METRICS, HOUR, HOUR + timedelta(hours=1))
    discover(aws, warehouse)

    unnamed = collect(aws, small_collection, warehouse, HOUR)  # the instance did not exist yet
    assert materialization_metadata(unnamed)["instances"] == 0
    assert stored(warehouse) == {}

    named = collect(aws, small_collection, warehouse, HOUR, instances=["orders-db"])
    assert stored(warehouse) == pytest.approx(expected)
    assert materialization_metadata(named)["hours_before_creation"] == "orders-db: 1"


def test_500_query_batching(
    aws: AwsResource,
    collection: CollectionResource,
    warehouse: WarehouseResource,
    get_metric_data_calls: list[dict[str, Any]],
) -> None:
    # 8 instances x 14 metrics x 5 statistics = 560 queries: two requests, none above 500.
    ids = [f"db-{n}" for n in range(8)]
    for name in ids:
        create_instance("us-east-1", name)
    expected = put_metrics(
        "us-east-1", ids[:1], ["CPUUtilization"], HOUR, HOUR + timedelta(hours=1)
    )
    discover(aws, warehouse)
    result = collect(aws, collection, warehouse, HOUR)

    assert [c["queries"] for c in get_metric_data_calls] == [500, 60]
    metadata = materialization_metadata(result)
    assert metadata["cloudwatch_requests"] == 2 == metadata["minimum_requests"]
    assert metadata["metrics_requested"] == 560
    assert stored(warehouse) == pytest.approx(expected)


def test_the_request_floor_holds_when_an_instance_has_no_data(
    aws: AwsResource, warehouse: WarehouseResource, get_metric_data_calls: list[dict[str, Any]]
) -> None:
    # Pages of 60 datapoints; 2 instances × 5 statistics × 12 periods could fill two, but
    # users-db (stopped) has no data: CloudWatch's answer fits one page.
    create_instance("us-east-1", "orders-db")
    create_instance("us-east-1", "users-db")
    expected = put_metrics(
        "us-east-1", ["orders-db"], ["CPUUtilization"], HOUR, HOUR + timedelta(hours=1)
    )
    small_pages = make_aws(regions=["us-east-1"], max_datapoints_per_request=60)
    discover(small_pages, warehouse)
    result = collect(small_pages, make_collection(metrics=["CPUUtilization"]), warehouse, HOUR)

    assert [(c["queries"], c["max_datapoints"]) for c in get_metric_data_calls] == [(10, 60)]
    metadata = materialization_metadata(result)
    # The floor counts the datapoints CloudWatch had (60: one page), not the periods asked.
    assert metadata["cloudwatch_requests"] == 1 == metadata["minimum_requests"]
    assert metadata["datapoints"] == len(expected) == 60
    assert stored(warehouse) == pytest.approx(expected)


def test_next_token_paging_returns_every_datapoint(
    small_collection: CollectionResource,
    warehouse: WarehouseResource,
    get_metric_data_calls: list[dict[str, Any]],
) -> None:
    create_instance("us-east-1", "orders-db")
    create_instance("us-east-1", "users-db")
    end = HOUR + timedelta(hours=2)
    expected = put_metrics("us-east-1", ["orders-db", "users-db"], METRICS, HOUR, end)
    paged = make_aws(max_datapoints_per_request=50)
    discover(paged, warehouse)
    result = collect(paged, small_collection, warehouse, HOUR, HOUR + timedelta(hours=1))

    # 2 instances x 2 metrics x 5 statistics x 24 periods = 480 datapoints, 50 per page.
    assert len(get_metric_data_calls) == 10
    assert all(c["max_datapoints"] == 50 for c in get_metric_data_calls)
    assert [c["next_token"] is None for c in get_metric_data_calls] == [True] + [False] * 9
    assert materialization_metadata(result)["datapoints"] == 480
    assert stored(warehouse) == pytest.approx(expected)


def test_fetch_log_records_each_instance_hour(
    aws: AwsResource, small_collection: CollectionResource, warehouse: WarehouseResource
) -> None:
    create_instance("us-east-1", "orders-db")
    create_instance("us-east-1", "stopped-db")
    put_metrics("us-east-1", ["orders-db"], METRICS, HOUR, HOUR + timedelta(hours=1))
    discover(aws, warehouse)
    collect(aws, small_collection, warehouse, HOUR, HOUR + timedelta(hours=1))

    with warehouse.reader() as conn:
        log = conn.execute(
            "SELECT instance_id, hour, datapoints, settled FROM rds_metric_fetches ORDER BY ALL"
        ).fetchall()
    next_hour = HOUR + timedelta(hours=1)
    assert log == [
        ("orders-db", HOUR, 2 * 5 * 12, True),
        ("orders-db", next_hour, 0, True),
        ("stopped-db", HOUR, 0, True),
        ("stopped-db", next_hour, 0, True),
    ]


def test_hour_in_progress_is_logged_unsettled(
    aws: AwsResource, small_collection: CollectionResource, warehouse: WarehouseResource
) -> None:
    """Settled by the collection's clock: in progress, then ended but within the settle delay
    (15 min), then settled."""
    hour = floor_hour(utc_now()) - timedelta(hours=1)
    create_instance("us-east-1", "orders-db")
    put_metrics("us-east-1", ["orders-db"], METRICS, hour, hour + timedelta(hours=1))
    discover(aws, warehouse)
    resources = {"aws": aws, "collection": small_collection, "warehouse": warehouse}
    for fetched_at, settled in (
        (hour + timedelta(minutes=30), False),
        (hour + timedelta(hours=1, minutes=14, seconds=59), False),
        (hour + timedelta(hours=1, minutes=15), True),
    ):
        _, rds_metrics_at = build_collection_assets(
            TEST_SETTINGS, TEST_PARTITIONS.hourly, clock=lambda moment=fetched_at: moment
        )
        assert materialize(
            [rds_metrics_at], partition_key=partition_key(hour), resources=resources
        ).success
        with warehouse.reader() as conn:
            logged = conn.execute("SELECT hour, settled FROM rds_metric_fetches").fetchall()
        assert logged == [(hour, settled)], fetched_at


def test_each_run_records_its_own_figures(
    aws: AwsResource, small_collection: CollectionResource, warehouse: WarehouseResource
) -> None:
    create_instance("us-east-1", "orders-db")
    put_metrics("us-east-1", ["orders-db"], METRICS, HOUR, HOUR + timedelta(hours=1))
    discover(aws, warehouse)
    first = collect(aws, small_collection, warehouse, HOUR)
    second = collect(aws, small_collection, warehouse, HOUR)
    with warehouse.reader() as conn:
        cursor = conn.execute("SELECT * FROM pipeline_runs ORDER BY finished_at")
        names = [d[0] for d in cursor.description]
        runs = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    assert [r["run_id"] for r in runs] == [first.run_id, second.run_id]
    run = runs[0]
    assert run["asset"] == "rds_metrics"
    assert (run["window_start"], run["window_end"]) == (HOUR, HOUR + timedelta(hours=1))
    assert run["rows_written"] == 24 and run["datapoints"] == 24 * 5 and run["instances"] == 1
    assert run["cloudwatch_requests"] == 1 and run["metrics_requested"] == 2 * 5
    assert run["estimated_cost_usd"] == pytest.approx(10 * 0.01 / 1000)
    assert run["throttled_calls"] == 0 and run["retried_calls"] == 0
    assert run["peak_memory_mib"] > 10 and run["cpu_seconds"] > 0
    assert run["lock_wait_seconds"] >= 0 and run["write_seconds"] >= 0
    metadata = materialization_metadata(first)
    assert metadata["estimated_cost_usd"] == run["estimated_cost_usd"]
    assert metadata["peak_memory_mib"] == run["peak_memory_mib"]


def test_an_empty_region_the_last_discovery_covered_is_not_described_again(
    aws: AwsResource,
    small_collection: CollectionResource,
    warehouse: WarehouseResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    create_instance("us-east-1", "orders-db")  # eu-west-1 holds no instance
    described: list[str] = []
    original = RDSResponse.describe_db_instances

    def counting(self: RDSResponse) -> Any:
        described.append(self.region)
        return original(self)

    monkeypatch.setattr(RDSResponse, "describe_db_instances", counting)
    resources = {"aws": aws, "collection": small_collection, "warehouse": warehouse}
    with instance_for_test() as instance:
        assert materialize([rds_instances], resources=resources, instance=instance).success
        assert sorted(described) == ["eu-west-1", "us-east-1"]
        described.clear()
        assert materialize(
            [rds_metrics], partition_key=partition_key(HOUR), resources=resources, instance=instance
        ).success
    assert described == []


# A process that makes a spool folder as a run does, says where, then works until killed.
_SPOOLING = """
import sys, time
from metrics_pipeline.collection.runs import SPOOL_PREFIX
from metrics_pipeline.scratch import private_folder
with private_folder(SPOOL_PREFIX) as spool:
    (spool / "page.parquet").write_bytes(b"datapoints")
    print(spool, flush=True)
    time.sleep(600)
"""


def spooling_process() -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen([sys.executable, "-c", _SPOOLING], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


@pytest.mark.e2e
def test_a_run_removes_the_spool_a_killed_run_left_and_keeps_a_running_one(
    aws: AwsResource,
    small_collection: CollectionResource,
    warehouse: WarehouseResource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # this test's, not other runs' on the machine
    monkeypatch.setattr(tempfile, "tempdir", None)
    running, kept = spooling_process()
    killed, left = spooling_process()
    killed.kill()
    killed.wait()
    other = tmp_path / "rds-metrics-spool-not-mine"  # someone else's name, a link: untouched
    other.symlink_to(kept)
    try:
        assert stat.S_IMODE(left.stat().st_mode) == 0o700  # owner-only from the start
        assert (left / "page.parquet").exists()
        create_instance("us-east-1", "orders-db")
        put_metrics("us-east-1", ["orders-db"], METRICS, HOUR, HOUR + timedelta(hours=1))
        discover(aws, warehouse)

        assert collect(aws, small_collection, warehouse, HOUR).success

        assert not left.exists()
        assert (kept / "page.parquet").exists() and other.is_symlink()
        assert sorted(p.name for p in tmp_path.glob("rds-metrics-spool-*")) == sorted(
            [kept.name, other.name]
        )  # the run's own is gone too
    finally:
        running.kill()
        running.wait()
