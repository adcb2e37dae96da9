"""Aurora against the local AWS: each instance is asked only the metrics its kind publishes
(AWS's RDS and Aurora metric pages), the clusters' own metrics land in rds_cluster_metrics, an
hour without DB load is empty rather than missing, and the gap sensor heals the clusters."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterInstance, build_sensor_context, instance_for_test, materialize

from metrics_pipeline.catalog import (
    RDS_INSTANCE_DEFAULTS,
    ClusterKind,
    expected_cluster_metrics,
    published_cluster_metrics,
)
from metrics_pipeline.collection.clusters import CLOUDWATCH_RDS_CLUSTERS
from metrics_pipeline.collection.source import CLOUDWATCH_RDS
from metrics_pipeline.dagster_runs import HEALING_RUN_TAGS, RANGE_END_TAG, RANGE_START_TAG
from metrics_pipeline.healing.sensors import build_gap_healing_sensor
from metrics_pipeline.hours import HOUR, floor_hour, healing_hours, partition_key, utc_now
from metrics_pipeline.local_aws.fleet import SimulatedCluster, SimulatedInstance, aurora_clusters
from metrics_pipeline.local_aws.server import LocalAws, start
from metrics_pipeline.local_aws.signals import series
from metrics_pipeline.quality.checks import build_checks, completeness
from metrics_pipeline.warehouse.instances import Instance, read_clusters, read_inventory
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import (
    TEST_PARTITIONS,
    TEST_SETTINGS,
    make_aws,
    make_collection,
    rds_cluster_metrics,
    rds_instances,
    rds_metrics,
)
from metrics_pipeline_tests.moto_fleet import ACCOUNT_ID

pytestmark = pytest.mark.storage_neutral

NOW = utc_now()
CREATED = NOW - timedelta(days=30)
FLEET = [
    *aurora_clusters("us-east-1", CREATED.replace(tzinfo=UTC)),
    SimulatedInstance(
        "orders-db", "us-east-1", "postgres", "db.r6g.large", 100, CREATED.replace(tzinfo=UTC)
    ),
]
STATISTICS = ("Average", "Minimum", "Maximum", "Sum", "SampleCount")
# Aurora's instances publish no FreeStorageSpace (their storage is the cluster's volume).
AURORA_COMMON = [m for m in RDS_INSTANCE_DEFAULTS if m != "FreeStorageSpace"]
# What each instance publishes of the default metrics, from AWS's pages, written out.
PUBLISHED = {
    "orders-db": list(RDS_INSTANCE_DEFAULTS),
    # An Aurora PostgreSQL writer with Performance Insights on: its DB load, when loaded.
    "shop-aurora-1": [
        *AURORA_COMMON, "BufferCacheHitRatio", "CommitLatency", "Deadlocks",
        "DBLoad", "DBLoadRelativeToNumVCPUs",
    ],
    "shop-aurora-2": [
        *AURORA_COMMON, "BufferCacheHitRatio", "CommitLatency", "Deadlocks", "AuroraReplicaLag",
    ],
    # An Aurora MySQL Serverless v2 writer: DML latency and its capacity.
    "events-aurora-1": [
        *AURORA_COMMON, "BufferCacheHitRatio", "CommitLatency", "Deadlocks", "DMLLatency",
        "ServerlessDatabaseCapacity", "ACUUtilization",
    ],
}  # fmt: skip
CLUSTER_PUBLISHED = {
    "shop-aurora": ["VolumeBytesUsed", "VolumeReadIOPs", "VolumeWriteIOPs"],
    "events-aurora": [
        "VolumeBytesUsed", "VolumeReadIOPs", "VolumeWriteIOPs", "ServerlessDatabaseCapacity"
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def local_aws() -> Iterator[LocalAws]:
    local = start(FLEET)
    yield local
    local.stop()


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


def generated(
    simulated: SimulatedInstance | SimulatedCluster, metric: str, start: datetime, end: datetime
) -> dict[datetime, float]:
    """The 5-minute averages the local AWS's generator serves for [start, end)."""
    profile = simulated.profile(7)
    seconds, values = series(
        profile, metric, "Average", 300, start.replace(tzinfo=UTC), end.replace(tzinfo=UTC), NOW
    )
    return {
        datetime.fromtimestamp(s, UTC).replace(tzinfo=None): v
        for s, v in zip(seconds.tolist(), values.tolist(), strict=True)
    }


def load_hours(day_start: datetime) -> tuple[datetime, datetime]:
    """An hour of that day in which the PI writer had no active session (no DBLoad at all),
    and one in which it had some in every period, by the generator."""
    writer = FLEET[0]
    load = generated(writer, "DBLoad", day_start, day_start + timedelta(days=1))
    hours = [day_start + n * HOUR for n in range(24)]
    periods = {h: sum(h <= t < h + HOUR for t in load) for h in hours}
    return (
        next(h for h in hours if periods[h] == 0),
        next(h for h in hours if periods[h] == 12),
    )


def test_each_instance_is_asked_what_its_kind_publishes_and_clusters_their_own(
    local_aws: LocalAws, warehouse: WarehouseResource, instance: DagsterInstance
) -> None:
    quiet, loaded = load_hours(floor_hour(NOW).replace(hour=0) - timedelta(days=2))
    resources = {
        "aws": make_aws(endpoint_url=local_aws.url),
        "collection": make_collection(),
        "warehouse": warehouse,
    }
    assert materialize([rds_instances], instance=instance, resources=resources).success
    for hour in (quiet, loaded):
        result = materialize(
            [rds_metrics, rds_cluster_metrics],
            partition_key=partition_key(hour),
            instance=instance,
            resources=resources,
        )
        assert result.success

    with warehouse.reader() as conn:
        stored = conn.execute(
            "SELECT instance_id, ts, metric, average FROM rds_metrics ORDER BY ALL"
        ).fetchall()
        cluster_rows = conn.execute(
            "SELECT cluster_id, ts, metric, average FROM rds_cluster_metrics ORDER BY ALL"
        ).fetchall()
        runs = conn.execute(
            "SELECT asset, instances, metrics_requested FROM pipeline_runs ORDER BY ALL"
        ).fetchall()
        inventory = read_inventory(conn)
        clusters = read_clusters(conn)
        instance_rows = CLOUDWATCH_RDS.rows_per_subject_hour(conn, quiet, loaded + HOUR)
        empty = CLOUDWATCH_RDS.fetch_log.empty_settled(conn, quiet, loaded + HOUR)
    by_subject: dict[tuple[str, datetime], set[str]] = {}
    for instance_id, ts, metric, _ in stored:
        by_subject.setdefault((instance_id, floor_hour(ts)), set()).add(metric)
    quiet_load = {"DBLoad", "DBLoadRelativeToNumVCPUs"}
    for instance_id, metrics in PUBLISHED.items():
        assert by_subject[(instance_id, loaded)] == set(metrics), instance_id
        # In the quiet hour there is no DB load to publish: nothing else is missing.
        assert by_subject[(instance_id, quiet)] == set(metrics) - quiet_load, instance_id
    # The values are the local AWS's: a reader's replica lag, the cluster volume.
    reader, serverless = FLEET[1], FLEET[2]
    assert {
        ts: average
        for instance_id, ts, metric, average in stored
        if instance_id == "shop-aurora-2" and metric == "AuroraReplicaLag" and ts >= loaded
    } == pytest.approx(generated(reader, "AuroraReplicaLag", loaded, loaded + HOUR))
    cluster_metrics = {(c, m) for c, _, m, _ in cluster_rows}
    assert cluster_metrics == {(c, m) for c, ms in CLUSTER_PUBLISHED.items() for m in ms}
    assert serverless.cluster is not None
    assert {
        ts: average
        for cluster_id, ts, metric, average in cluster_rows
        if cluster_id == "events-aurora" and metric == "ServerlessDatabaseCapacity"
    } == pytest.approx(
        generated(serverless.cluster, "ServerlessDatabaseCapacity", quiet, quiet + HOUR)
        | generated(serverless.cluster, "ServerlessDatabaseCapacity", loaded, loaded + HOUR)
    )
    # Nothing was asked that the kind does not publish: each query is one metric and
    # statistic of one subject (2 runs of each asset, one per hour).
    asked = sum(len(metrics) for metrics in PUBLISHED.values()) * len(STATISTICS)
    asked_of_clusters = sum(len(m) for m in CLUSTER_PUBLISHED.values()) * len(STATISTICS)
    assert sorted(runs) == sorted(
        [("rds_metrics", len(PUBLISHED), asked)] * 2
        + [("rds_cluster_metrics", len(CLUSTER_PUBLISHED), asked_of_clusters)] * 2
    )
    # The quiet hour is complete: DB load is published only while there is load.
    report = completeness(
        [quiet, loaded],
        inventory,
        instance_rows,
        empty,
        lambda entry: CLOUDWATCH_RDS.expected_rows_per_subject_hour(TEST_SETTINGS, entry),
    )
    assert report.share == 1.0 and report.empty_hours == []
    assert [(c.instance.instance_id, c.cluster_kind.serverless) for c in clusters] == [
        ("events-aurora", True),
        ("shop-aurora", False),
    ]


def test_the_gap_sensor_heals_the_clusters_metrics(
    local_aws: LocalAws, warehouse: WarehouseResource, instance: DagsterInstance
) -> None:
    """A cluster source registered beside the instances': its missing hours get a healing run
    of their own, and that run fills every settled hour of the look-back."""
    resources = {
        "aws": make_aws(endpoint_url=local_aws.url),
        "collection": make_collection(),
        "warehouse": warehouse,
    }
    assert materialize([rds_instances], instance=instance, resources=resources).success
    now = utc_now()
    sensor = build_gap_healing_sensor(
        TEST_SETTINGS, (CLOUDWATCH_RDS, CLOUDWATCH_RDS_CLUSTERS), TEST_PARTITIONS, clock=lambda: now
    )

    result = sensor(build_sensor_context(instance=instance, resources={"warehouse": warehouse}))
    requests = {request.job_name: request for request in result.run_requests}
    assert set(requests) == {"healing_job", "cluster_healing_job"}
    heal = requests["cluster_healing_job"]
    hours = healing_hours(now, TEST_SETTINGS.backfill_days, TEST_SETTINGS.settle_delay)
    assert (heal.tags[RANGE_START_TAG], heal.tags[RANGE_END_TAG]) == (
        partition_key(hours[0]),
        partition_key(hours[-1]),
    )
    healed = materialize(
        [rds_cluster_metrics],
        instance=instance,
        resources=resources,
        tags={**heal.tags, **HEALING_RUN_TAGS},
    )
    assert healed.success
    with warehouse.reader() as conn:
        settled = CLOUDWATCH_RDS_CLUSTERS.fetch_log.settled(conn, hours[0], hours[-1] + HOUR)
    assert settled == {
        (Instance(ACCOUNT_ID, "us-east-1", cluster_id), hour)
        for cluster_id in CLUSTER_PUBLISHED
        for hour in hours
    }


def test_a_cluster_is_asked_what_its_kind_publishes() -> None:
    """A Global Database's clusters are asked its lag (published in its secondary regions
    only, so never expected); a Serverless v2 cluster its capacity; Aurora MySQL's alone the
    volume left."""
    every = ("VolumeBytesUsed", "ServerlessDatabaseCapacity", "AuroraGlobalDBReplicationLag",
             "AuroraVolumeBytesLeftTotal")  # fmt: skip
    provisioned = ClusterKind("aurora-postgresql")
    serverless_global = ClusterKind("aurora-mysql", serverless=True, global_database=True)
    assert published_cluster_metrics(every, provisioned) == ("VolumeBytesUsed",)
    assert published_cluster_metrics(every, serverless_global) == every
    assert expected_cluster_metrics(every, serverless_global) == (
        "VolumeBytesUsed", "ServerlessDatabaseCapacity", "AuroraVolumeBytesLeftTotal"
    )  # fmt: skip


@pytest.fixture
def plain_aws() -> Iterator[LocalAws]:
    local = start([FLEET[-1]])  # orders-db alone: no Aurora cluster
    yield local
    local.stop()


def test_a_fleet_without_clusters_pays_nothing_for_them(
    plain_aws: LocalAws, warehouse: WarehouseResource, instance: DagsterInstance
) -> None:
    """Their step of the fresh run writes nothing (no lock, no commit), their freshness check
    passes with nothing to be fresh, and the gap sensor looks at them at its usual interval."""
    resources = {
        "aws": make_aws(endpoint_url=plain_aws.url),
        "collection": make_collection(),
        "warehouse": warehouse,
    }
    hour = floor_hour(NOW) - timedelta(days=1)
    result = materialize(
        [rds_instances, rds_metrics, rds_cluster_metrics],
        partition_key=partition_key(hour),
        instance=instance,
        resources=resources,
    )
    assert result.success
    with warehouse.reader() as conn:
        runs = conn.execute("SELECT asset FROM pipeline_runs").fetchall()
    assert runs == [("rds_metrics",)]
    [event] = result.asset_materializations_for_node("rds_cluster_metrics")
    assert event.metadata["instances"].value == 0

    [freshness] = [
        check
        for check in build_checks(TEST_SETTINGS, [CLOUDWATCH_RDS_CLUSTERS], clock=lambda: NOW)
        if any(key.name == "rds_cluster_metrics_freshness" for key in check.check_keys)
    ]
    assert freshness(warehouse=warehouse).passed

    now = utc_now()
    sensor = build_gap_healing_sensor(
        TEST_SETTINGS, (CLOUDWATCH_RDS_CLUSTERS,), TEST_PARTITIONS, clock=lambda: now
    )
    context = build_sensor_context(instance=instance, resources={"warehouse": warehouse})
    skipped = sensor(context)
    assert skipped.skip_message == "cloudwatch_rds_clusters: nothing discovered to collect."
    later = now + timedelta(minutes=TEST_SETTINGS.backfill_interval_minutes)
    assert context.cursor == later.isoformat()
