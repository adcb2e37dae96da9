"""The simulated RDS fleet: who exists where, since when, and how each one behaves."""

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from metrics_pipeline.catalog import (
    AURORA_MYSQL,
    AURORA_POSTGRESQL,
    READER,
    SERVERLESS_CLASS,
    WRITER,
    ClusterKind,
    InstanceKind,
)
from metrics_pipeline.local_aws.signals import Profile, stable_key, uniform

ACCOUNT_ID = "123456789012"  # moto's default account: the pipeline's own
MAX_ACCOUNTS = 9
# The role every simulated account lets the pipeline assume; other roles are refused.
READER_ROLE = "metrics-reader"


def simulated_accounts(count: int) -> list[str]:
    """The pipeline's own account, then 222222222222, 333333333333, ..."""
    return [ACCOUNT_ID] + [str(n) * 12 for n in range(2, count + 1)]


def reader_role_arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:role/{READER_ROLE}"


MEMORY_GIB = {
    "db.t3.micro": 1,
    "db.t3.medium": 4,
    "db.m6g.large": 8,
    "db.r6g.large": 16,
    "db.m5.xlarge": 16,
    "db.r6g.2xlarge": 64,
}
VCPUS = {
    "db.t3.micro": 2,
    "db.t3.medium": 2,
    "db.m6g.large": 2,
    "db.r6g.large": 2,
    "db.m5.xlarge": 4,
    "db.r6g.2xlarge": 8,
}
# The engines of instances outside Aurora, whose connections peak at these.
RDS_MAX_CONNECTIONS = {"postgres": 500, "mysql": 600, "mariadb": 600, "sqlserver-ex": 300}
MAX_CONNECTIONS = {**RDS_MAX_CONNECTIONS, AURORA_POSTGRESQL: 1000, AURORA_MYSQL: 1000}
ENGINE_VERSIONS = {
    "postgres": "16.4",
    "mysql": "8.0.39",
    "mariadb": "10.11.9",
    "sqlserver-ex": "16.00",
    AURORA_POSTGRESQL: "16.4",
    AURORA_MYSQL: "8.0.mysql_aurora.3.08.0",
}
# One Aurora capacity unit is about 2 GiB of memory and its share of CPU.
GIB_PER_ACU = 2


@dataclass(frozen=True)
class SimulatedCluster:
    """An Aurora cluster: its members are SimulatedInstances naming it."""

    cluster_id: str
    region: str
    engine: str
    created_at: datetime
    serverless_acu: tuple[float, float] | None = None  # Serverless v2 (min, max) capacity
    account_id: str = ACCOUNT_ID
    global_database: bool = False

    @property
    def kind(self) -> ClusterKind:
        return ClusterKind(self.engine, self.serverless_acu is not None, self.global_database)

    def profile(self, seed: int) -> Profile:
        """How its volume and capacity behave: the load of a database of its own name."""
        knobs = uniform(stable_key(seed, self.signal_key, "profile"), np.arange(4))
        return Profile(
            instance_id=self.signal_key,
            seed=seed,
            memory_gib=(self.serverless_acu or (0, 8))[1] * GIB_PER_ACU,
            storage_gib=0,
            cpu_base=5 + 20 * float(knobs[0]),
            cpu_swing=25 + 45 * float(knobs[1]),
            max_connections=MAX_CONNECTIONS.get(self.engine, 1000),
            iops_scale=0.5 + float(knobs[2]),
            storage_leak_gib_per_day=0.05 + 2.0 * float(knobs[3]),
            created_at=self.created_at,
            kind=InstanceKind(self.engine, SERVERLESS_CLASS if self.serverless_acu else None),
            serverless_acu=self.serverless_acu,
        )

    @property
    def signal_key(self) -> str:
        return f"{self.account_id}/cluster/{self.cluster_id}"


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
    account_id: str = ACCOUNT_ID
    cluster: SimulatedCluster | None = None
    cluster_role: str | None = None  # writer or reader
    performance_insights_days: int | None = None  # PI's retention, None when PI is off

    @property
    def kind(self) -> InstanceKind:
        return InstanceKind(
            self.engine,
            self.instance_class,
            self.cluster_role,
            self.performance_insights_days is not None,
        )

    @property
    def memory(self) -> float:
        """Its memory in GiB (a Serverless v2 instance's at its maximum capacity)."""
        if self.cluster and self.cluster.serverless_acu:
            return self.cluster.serverless_acu[1] * GIB_PER_ACU
        return MEMORY_GIB.get(self.instance_class, 8)

    @property
    def signal_key(self) -> str:
        """What its values are drawn from: an instance named like one in another account is
        another instance, with other values."""
        if self.account_id == ACCOUNT_ID:
            return self.instance_id
        return f"{self.account_id}/{self.instance_id}"

    @property
    def dbi_resource_id(self) -> str:
        """RDS's own identifier of this database (moto gives every instance the same one): a
        name used again, in another account or after a deletion, is another database."""
        key = stable_key(self.account_id, self.region, self.instance_id, self.created_at)
        digits = base64.b32encode(key.to_bytes(8) + stable_key(key).to_bytes(8)).decode()
        return f"db-{digits[:26]}"

    def profile(self, seed: int, stopped_at: datetime | None = None) -> Profile:
        knobs = uniform(stable_key(seed, self.signal_key, "profile"), np.arange(4))
        return Profile(
            instance_id=self.signal_key,
            seed=seed,
            memory_gib=self.memory,
            storage_gib=self.storage_gib,
            cpu_base=5 + 20 * float(knobs[0]),
            cpu_swing=25 + 45 * float(knobs[1]),
            max_connections=MAX_CONNECTIONS.get(self.engine, 400),
            iops_scale=0.5 + float(knobs[2]),
            storage_leak_gib_per_day=0.05 + 2.0 * float(knobs[3]),
            created_at=self.created_at,
            stopped_at=stopped_at,
            kind=self.kind,
            vcpus=VCPUS.get(self.instance_class, 2),
            serverless_acu=self.cluster.serverless_acu if self.cluster else None,
        )


def default_fleet(
    start: datetime,
    regions: tuple[str, str] = ("us-east-1", "eu-west-1"),
    accounts: Sequence[str] = (ACCOUNT_ID,),
) -> list[SimulatedInstance]:
    """A handful of databases in two regions: different engines and classes, one stopped,
    one created 90 minutes before `start`, one older than the 455 days CloudWatch keeps (its
    hourly history is as long as CloudWatch's), and two Aurora clusters in the first region
    (`aurora_clusters`). Each further account holds two more, one of them named like an
    instance of the first account (a different instance all the same)."""
    long_ago = start - timedelta(days=30)
    before_cloudwatchs_history = start - timedelta(days=500)
    first, second = regions
    others = [
        instance
        for account_id in accounts[1:]
        for instance in (
            SimulatedInstance(
                "orders-db",
                first,
                "postgres",
                "db.m6g.large",
                200,
                long_ago,
                {"team": f"shop-{account_id[:1]}", "env": "prod"},
                account_id=account_id,
            ),
            SimulatedInstance(
                f"billing-db-{account_id[:1]}",
                second,
                "mysql",
                "db.t3.medium",
                100,
                long_ago,
                {"team": "billing", "env": "prod"},
                account_id=account_id,
            ),
        )
    ]
    own = [
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
            2000,
            before_cloudwatchs_history,
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

    return [*own, *aurora_clusters(first, long_ago), *others]


def aurora_clusters(region: str, created_at: datetime) -> list[SimulatedInstance]:
    """A provisioned Aurora PostgreSQL cluster (a writer with Performance Insights on for its
    free 7 days, and a reader), and an Aurora MySQL Serverless v2 cluster of one writer."""
    shop = SimulatedCluster("shop-aurora", region, AURORA_POSTGRESQL, created_at)
    events = SimulatedCluster(
        "events-aurora", region, AURORA_MYSQL, created_at, serverless_acu=(0.5, 16.0)
    )
    return [
        SimulatedInstance(
            "shop-aurora-1",
            engine=AURORA_POSTGRESQL,
            instance_class="db.r6g.large",
            tags={"team": "shop", "env": "prod"},
            cluster=shop,
            cluster_role=WRITER,
            performance_insights_days=7,
            region=region,
            storage_gib=0,
            created_at=created_at,
        ),
        SimulatedInstance(
            "shop-aurora-2",
            engine=AURORA_POSTGRESQL,
            instance_class="db.r6g.large",
            tags={"team": "shop", "env": "prod"},
            cluster=shop,
            cluster_role=READER,
            region=region,
            storage_gib=0,
            created_at=created_at,
        ),
        SimulatedInstance(
            "events-aurora-1",
            engine=AURORA_MYSQL,
            instance_class=SERVERLESS_CLASS,
            tags={"team": "events", "env": "prod"},
            cluster=events,
            cluster_role=WRITER,
            region=region,
            storage_gib=0,
            created_at=created_at,
        ),
    ]


def generated_fleet(
    start: datetime,
    size: int,
    regions: tuple[str, ...],
    accounts: Sequence[str] = (ACCOUNT_ID,),
    age: timedelta = timedelta(days=30),
    performance_insights_days: int | None = None,
) -> list[SimulatedInstance]:
    """`size` instances spread over the regions and accounts, for load and speed tests, each
    created `age` before `start`, with Performance Insights on (kept this many days) when
    `performance_insights_days` is set."""
    classes = list(MEMORY_GIB)
    engines = list(RDS_MAX_CONNECTIONS)
    return [
        SimulatedInstance(
            f"db-{n:04d}",
            regions[n % len(regions)],
            engines[n % len(engines)],
            classes[n % len(classes)],
            100 + 50 * (n % 8),
            start - age,
            {"fleet": "generated"},
            account_id=accounts[(n // len(regions)) % len(accounts)],
            performance_insights_days=performance_insights_days,
        )
        for n in range(size)
    ]
