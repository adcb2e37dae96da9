"""A warehouse with known contents, for the readers' tests (query, CLI, backups).

Two instances over the six hours before the current one, 5-minute periods:
- orders-db (us-east-1): every period of every hour;
- users-db (eu-west-1): hours 2 and 3 absent, as after an outage nobody healed.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import ensure_schema
from metrics_pipeline_tests.moto_fleet import ACCOUNT_ID, THIS_HOUR

FIRST_HOUR = THIS_HOUR - timedelta(hours=6)
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
    """Writes the known rows through the pipeline's writer connection (which publishes)."""
    rows = periods()
    with warehouse.connect() as conn:
        ensure_schema(conn)
        for instance_id, region in INSTANCES.items():
            conn.execute(
                "INSERT INTO rds_instances (account_id, region, instance_id, engine, "
                "instance_class, status, create_time, first_seen, last_seen) "
                "VALUES (?, ?, ?, 'postgres', 'db.t3.micro', 'available', ?, ?, ?)",
                [
                    ACCOUNT_ID,
                    region,
                    instance_id,
                    FIRST_HOUR - timedelta(days=30),
                    FIRST_HOUR,
                    THIS_HOUR,
                ],
            )
        conn.executemany(
            "INSERT INTO rds_metrics (ts, account_id, region, instance_id, metric, unit, "
            "average, minimum, maximum, collected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                [
                    r.ts,
                    ACCOUNT_ID,
                    r.region,
                    r.instance_id,
                    r.metric,
                    METRICS[r.metric],
                    r.average,
                    r.average - 1,
                    r.average + 1,
                    THIS_HOUR,
                ]
                for r in rows
            ],
        )
    return rows
