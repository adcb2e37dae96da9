"""The simulated RDS fleet: who exists where, since when, and how each one behaves."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from metrics_pipeline.local_aws.signals import Profile, stable_key, uniform

MEMORY_GIB = {
    "db.t3.micro": 1,
    "db.t3.medium": 4,
    "db.m6g.large": 8,
    "db.r6g.large": 16,
    "db.m5.xlarge": 16,
    "db.r6g.2xlarge": 64,
}
MAX_CONNECTIONS = {"postgres": 500, "mysql": 600, "mariadb": 600, "sqlserver-ex": 300}
ENGINE_VERSIONS = {
    "postgres": "16.4",
    "mysql": "8.0.39",
    "mariadb": "10.11.9",
    "sqlserver-ex": "16.00",
}


@dataclass(frozen=True)
class SimulatedInstance:
    instance_id: str
    region: str
    engine: str
    instance_class: str
    storage_gib: int
    created_at: datetime
    tags: dict[str, str] = field(default_factory=dict)
    stopped: bool = False
    multi_az: bool = False

    def profile(self, seed: int, stopped_at: datetime | None = None) -> Profile:
        knobs = uniform(stable_key(seed, self.instance_id, "profile"), np.arange(4))
        return Profile(
            instance_id=self.instance_id,
            seed=seed,
            memory_gib=MEMORY_GIB.get(self.instance_class, 8),
            storage_gib=self.storage_gib,
            cpu_base=5 + 20 * float(knobs[0]),
            cpu_swing=25 + 45 * float(knobs[1]),
            max_connections=MAX_CONNECTIONS.get(self.engine, 400),
            iops_scale=0.5 + float(knobs[2]),
            storage_leak_gib_per_day=0.05 + 2.0 * float(knobs[3]),
            created_at=self.created_at,
            stopped_at=stopped_at,
        )


def default_fleet(
    start: datetime, regions: tuple[str, str] = ("us-east-1", "eu-west-1")
) -> list[SimulatedInstance]:
    """A handful of databases in two regions: different engines and classes, one stopped,
    one created 90 minutes before `start`."""
    long_ago = start - timedelta(days=30)
    first, second = regions
    return [
        SimulatedInstance(
            "orders-db",
            first,
            "postgres",
            "db.r6g.large",
            500,
            long_ago,
            {"team": "shop", "env": "prod"},
            multi_az=True,
        ),
        SimulatedInstance(
            "catalog-db",
            first,
            "mysql",
            "db.m6g.large",
            200,
            long_ago,
            {"team": "shop", "env": "prod"},
        ),
        SimulatedInstance(
            "analytics-db",
            first,
            "postgres",
            "db.r6g.2xlarge",
            1000,
            long_ago,
            {"team": "data", "env": "prod"},
        ),
        SimulatedInstance(
            "users-db",
            second,
            "mariadb",
            "db.t3.medium",
            100,
            long_ago,
            {"team": "identity", "env": "prod"},
        ),
        SimulatedInstance(
            "legacy-db",
            second,
            "sqlserver-ex",
            "db.t3.micro",
            20,
            long_ago,
            {"team": "ops", "env": "staging"},
            stopped=True,
        ),
        SimulatedInstance(
            "reports-db",
            second,
            "postgres",
            "db.t3.medium",
            50,
            start - timedelta(minutes=90),
            {"team": "data", "env": "dev"},
        ),
    ]


def generated_fleet(
    start: datetime, size: int, regions: tuple[str, ...]
) -> list[SimulatedInstance]:
    """`size` instances spread over the regions, for load and speed tests."""
    classes = list(MEMORY_GIB)
    engines = list(MAX_CONNECTIONS)
    return [
        SimulatedInstance(
            f"db-{n:04d}",
            regions[n % len(regions)],
            engines[n % len(engines)],
            classes[n % len(classes)],
            100 + 50 * (n % 8),
            start - timedelta(days=30),
            {"fleet": "generated"},
        )
        for n in range(size)
    ]
