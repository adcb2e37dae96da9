"""A warehouse with known contents, for the readers' tests (query, CLI, backups).

Two instances over the six hours before LAST_HOUR (two days ago), 5-minute periods:
- orders-db (us-east-1): every period of every hour;
- users-db (eu-west-1): hours 2 and 3 absent, as after an outage nobody healed.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa

from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.sql import in_transaction
from metrics_pipeline_tests.moto_fleet import ACCOUNT_ID, TWO_DAYS_AGO

# The hour after the seeded ones: the inventory's last sighting and the data's collection.
LAST_HOUR = TWO_DAYS_AGO
FIRST_HOUR = LAST_HOUR - timedelta(hours=6)
PERIODS = 72
MISSING_HOURS = (2, 3)
METRICS = {"CPUUtilization": "Percent", "FreeStorageSpace": "Bytes"}
INSTANCES = {"orders-db": "us-east-1", "users-db": "eu-west-1"}


@dataclass(frozen=True)
class Period:
    instance_id: str
    region: str
    metric: str
    ts: datetime
    average: float


def value(instance_id: str, metric: str, k: int) -> float:
    if metric == "FreeStorageSpace":
        return 50e9 - k * 1e6
    return float((k * 37) % 100) if instance_id == "orders-db" else 5.0 + k % 7


def periods() -> list[Period]:
    rows = []
    for instance_id, region in INSTANCES.items():
        for k in range(PERIODS):
            if instance_id == "users-db" and k // 12 in MISSING_HOURS:
                continue
            ts = FIRST_HOUR + timedelta(minutes=5 * k)
            rows.extend(
                Period(instance_id, region, metric, ts, value(instance_id, metric, k))
                for metric in METRICS
            )
    return rows


def seed(warehouse: WarehouseResource) -> list[Period]:
    """Writes the known rows through the pipeline's writer connection (which publishes), in
    one transaction."""
    rows = periods()
    instances = pa.Table.from_pylist(
        [
            {
                "account_id": ACCOUNT_ID,
                "region": region,
                "instance_id": instance_id,
                "engine": "postgres",
                "instance_class": "db.t3.micro",
                "status": "available",
                "create_time": FIRST_HOUR - timedelta(days=30),
                "first_seen": FIRST_HOUR,
                "last_seen": LAST_HOUR,
            }
            for instance_id, region in INSTANCES.items()
        ]
    )
    metrics = pa.Table.from_pylist(
        [
            {
                "ts": r.ts,
                "account_id": ACCOUNT_ID,
                "region": r.region,
                "instance_id": r.instance_id,
                "metric": r.metric,
                "unit": METRICS[r.metric],
                "average": r.average,
                "minimum": r.average - 1,
                "maximum": r.average + 1,
                "collected_at": LAST_HOUR,
            }
            for r in rows
        ]
    )
    with warehouse.connect() as conn:
        conn.register("seeded_instances", instances)
        conn.register("seeded_metrics", metrics)

        def write() -> None:
            conn.execute("INSERT INTO rds_instances BY NAME SELECT * FROM seeded_instances")
            conn.execute("INSERT INTO rds_metrics BY NAME SELECT * FROM seeded_metrics")

        in_transaction(conn, write)
    return rows
