"""Builders of test fleets in moto: RDS instances and the CloudWatch datapoints they publish.

The expected warehouse values are computed here from the raw datapoints put, by hand
(mean, min, max, sum, count), never read back from the code under test.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto.rds.models import rds_backends

from metrics_pipeline.hours import floor_hour, utc_now

ACCOUNT_ID = "123456789012"  # moto's default account
# Tests collect hours relative to now (the pipeline refuses hours outside retention). An hour
# two days back has settled and stays inside the retention for days, however long the suite
# runs; a test that needs the hour in progress reads the clock itself and gives that moment to
# what it tests (no "current hour" is fixed here: it would be wrong once the suite crosses an
# hour).
TWO_DAYS_AGO = floor_hour(utc_now()) - timedelta(days=2)
A_MONTH_AGO = (TWO_DAYS_AGO - timedelta(days=28)).replace(tzinfo=UTC)
STAT_COLUMNS = ("average", "minimum", "maximum", "sum", "sample_count")


def create_instance(
    region: str,
    instance_id: str,
    engine: str = "postgres",
    instance_class: str = "db.t3.micro",
    storage_gb: int = 20,
    tags: dict[str, str] | None = None,
    created: datetime = A_MONTH_AGO,
) -> None:
    """An instance as DescribeDBInstances will list it, created at `created`.

    RDS has no API to backdate an instance, so the creation time is set on moto's model:
    a fleet that existed before the hours a test collects.
    """
    boto3.client("rds", region_name=region).create_db_instance(
        DBInstanceIdentifier=instance_id,
        DBInstanceClass=instance_class,
        Engine=engine,
        AllocatedStorage=storage_gb,
        MasterUsername="admin",
        MasterUserPassword="password-123",
        Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    )
    rds_backends[ACCOUNT_ID][region].databases[instance_id].instance_create_time = created


def create_aurora_cluster(
    region: str,
    cluster_id: str,
    members: dict[str, str],
    engine: str = "aurora-postgresql",
    instance_class: str = "db.r6g.large",
    serverless_acu: tuple[float, float] | None = None,
    insights_days: dict[str, int] | None = None,
    created: datetime = A_MONTH_AGO,
) -> None:
    """An Aurora cluster and its members (identifier to writer or reader, the writer first),
    with Performance Insights on for `insights_days`' members (their retention in days).

    moto keeps no Performance Insights settings of an instance; its answer reads them from
    the model, where they are set as RDS would report them."""
    client = boto3.client("rds", region_name=region)
    scaling = (
        {
            "ServerlessV2ScalingConfiguration": {
                "MinCapacity": serverless_acu[0],
                "MaxCapacity": serverless_acu[1],
            }
        }
        if serverless_acu
        else {}
    )
    client.create_db_cluster(
        DBClusterIdentifier=cluster_id,
        Engine=engine,
        MasterUsername="admin",
        MasterUserPassword="password-123",
        **scaling,
    )
    backend = rds_backends[ACCOUNT_ID][region]
    backend.clusters[cluster_id].cluster_create_time = created
    for instance_id, role in members.items():
        client.create_db_instance(
            DBInstanceIdentifier=instance_id,
            DBInstanceClass="db.serverless" if serverless_acu else instance_class,
            Engine=engine,
            DBClusterIdentifier=cluster_id,
        )
        model = backend.databases[instance_id]
        model.instance_create_time = created
        setattr(model, "is_cluster_writer", role == "writer")  # noqa: B010
        days = (insights_days or {}).get(instance_id)
        setattr(model, "performance_insights_enabled", days is not None)  # noqa: B010
        setattr(model, "performance_insights_retention_period", days)  # noqa: B010


def raw_values(instance_id: str, metric: str, period_start: datetime) -> list[float]:
    """Two datapoints per period, distinct for every instance, metric and period."""
    base = (sum(map(ord, instance_id)) % 97) * 10 + (sum(map(ord, metric)) % 89)
    minute = period_start.hour * 60 + period_start.minute
    return [base + minute / 7.0, base + minute / 3.0 + 1.25]


def put_metrics(
    region: str,
    instance_ids: Sequence[str],
    metrics: Sequence[str],
    start: datetime,
    end: datetime,
    period_seconds: int = 300,
) -> dict[tuple[str, str, datetime, str], float]:
    """Publishes the datapoints; returns the expected value per (instance, metric, ts, column)."""
    client = boto3.client("cloudwatch", region_name=region)
    expected: dict[tuple[str, str, datetime, str], float] = {}
    for instance_id in instance_ids:
        data: list[dict[str, Any]] = []
        period_start = start
        while period_start < end:
            for metric in metrics:
                values = raw_values(instance_id, metric, period_start)
                for offset, value in zip((10, 70), values, strict=True):
                    data.append(
                        {
                            "MetricName": metric,
                            "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": instance_id}],
                            "Timestamp": (period_start + timedelta(seconds=offset)).replace(
                                tzinfo=UTC
                            ),
                            "Value": value,
                        }
                    )
                statistics = {
                    "average": sum(values) / len(values),
                    "minimum": min(values),
                    "maximum": max(values),
                    "sum": sum(values),
                    "sample_count": float(len(values)),
                }
                for column, value in statistics.items():
                    expected[(instance_id, metric, period_start, column)] = value
            period_start += timedelta(seconds=period_seconds)
        for i in range(0, len(data), 1000):
            client.put_metric_data(Namespace="AWS/RDS", MetricData=data[i : i + 1000])
    return expected
