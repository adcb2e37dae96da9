"""The local AWS's living fleet: RDS instances in moto, their CloudWatch metrics generated on
demand, and the faults a real account shows (throttling, late publishing, outages)."""

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NotRequired, TypedDict

import boto3
from moto.rds.models import rds_backends

from metrics_pipeline.catalog import CLUSTER_METRICS_BY_NAME, WRITER
from metrics_pipeline.local_aws.fleet import (
    ACCOUNT_ID,
    ENGINE_VERSIONS,
    SimulatedCluster,
    SimulatedInstance,
    reader_role_arn,
)
from metrics_pipeline.local_aws.resolution import answerable_start, oldest_kept
from metrics_pipeline.local_aws.signals import Profile, series

STOPPED_DAYS_AGO = 2


class Throttled(Exception):
    """Over the per-region request or datapoint quota."""


class Unavailable(Exception):
    """Inside an outage window."""


@dataclass
class RateWindow:
    """Counts of the last second, per region: the quota CloudWatch enforces."""

    limit: float
    events: deque[tuple[float, float]] = field(default_factory=deque)

    def admit(self, amount: float, now: float) -> bool:
        while self.events and self.events[0][0] <= now - 1.0:
            self.events.popleft()
        used = sum(a for _, a in self.events)
        if used + amount > self.limit and self.events:
            return False
        self.events.append((now, amount))
        return True


@dataclass
class Faults:
    max_requests_per_second: float | None = None
    max_datapoints_per_second: float | None = None
    late_minutes: int = 0
    outages: list[tuple[datetime, datetime]] = field(default_factory=list)


class Simulator:
    def __init__(
        self,
        fleet: Sequence[SimulatedInstance],
        seed: int = 7,
        faults: Faults | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.seed = seed
        self.faults = faults or Faults()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.started_at = self.clock()
        self.fleet = {(i.account_id, i.region, i.instance_id): i for i in fleet}
        self.clusters = {
            (i.cluster.account_id, i.cluster.region, i.cluster.cluster_id): i.cluster
            for i in fleet
            if i.cluster is not None
        }
        self.accounts = sorted({ACCOUNT_ID} | {i.account_id for i in fleet})
        self._created: set[tuple[str, str, str]] = set()
        self._created_clusters: set[tuple[str, str, str]] = set()
        self._requests: dict[tuple[str, str], RateWindow] = {}
        self._datapoints: dict[tuple[str, str], RateWindow] = {}
        self._lock = threading.Lock()

    def profile(self, account_id: str, region: str, instance_id: str) -> Profile | None:
        instance = self.fleet.get((account_id, region, instance_id))
        if instance is None:
            return None
        stopped_at = (
            max(instance.created_at, self.started_at - timedelta(days=STOPPED_DAYS_AGO))
            if instance.stopped
            else None
        )
        return instance.profile(self.seed, stopped_at)

    def assumable(self, role_arn: str) -> bool:
        """Only the reader role of a simulated account can be assumed, as a trust policy
        would allow it; any other role is refused with AccessDenied."""
        return role_arn in {reader_role_arn(account_id) for account_id in self.accounts}

    def knows(self, account_id: str, region: str, query: dict[str, Any]) -> bool:
        metric = query.get("MetricStat", {}).get("Metric", {})
        dimensions = metric.get("Dimensions", [])
        if metric.get("Namespace") != "AWS/RDS" or len(dimensions) != 1:
            return False
        key = (account_id, region, dimensions[0].get("Value"))
        name = dimensions[0].get("Name")
        return (name == "DBInstanceIdentifier" and key in self.fleet) or (
            name == "DBClusterIdentifier" and key in self.clusters
        )

    def _subject_profile(
        self, account_id: str, region: str, dimension: dict[str, str], metric: str
    ) -> Profile | None:
        """The profile whose values answer a query, None when its subject publishes nothing
        of the metric (an Aurora cluster's metric that is not of its kind)."""
        if dimension["Name"] == "DBInstanceIdentifier":
            return self.profile(account_id, region, dimension["Value"])
        cluster = self.clusters[(account_id, region, dimension["Value"])]
        described = CLUSTER_METRICS_BY_NAME.get(metric)
        if described is not None and not described.published(cluster.kind):
            return None
        return cluster.profile(self.seed)

    def answer(
        self,
        account_id: str,
        region: str,
        query: dict[str, Any],
        start: datetime,
        end: datetime,
    ) -> dict[str, Any]:
        stat = query["MetricStat"]
        metric = stat["Metric"]
        period = int(stat["Period"])
        now = self.clock()
        answer: dict[str, Any] = {
            "id": query["Id"],
            "label": query.get("Label") or f"{metric['MetricName']} {stat['Stat']}",
            "values": [],
            "timestamps": [],
            "status_code": "Complete",
        }
        # The caller asks only about queries this fleet knows.
        profile = self._subject_profile(
            account_id, region, metric["Dimensions"][0], metric["MetricName"]
        )
        if profile is None:
            return answer
        # moto parses StartTime and EndTime into naive datetimes in UTC.
        start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
        kept_start = answerable_start(start, period, now)
        if kept_start is None:  # a period finer than CloudWatch keeps at that age
            return answer
        aligned_start = datetime.fromtimestamp(kept_start.timestamp() // period * period, UTC)
        seconds, values = series(
            profile,
            metric["MetricName"],
            stat["Stat"],
            period,
            aligned_start,
            end,
            now - timedelta(minutes=self.faults.late_minutes),
        )
        kept = seconds >= oldest_kept(now).timestamp()
        answer["values"] = values[kept].tolist()
        # Naive UTC, as moto's own datapoints: its serializer converts aware ones to UTC again.
        answer["timestamps"] = seconds[kept].astype("datetime64[s]").tolist()
        return answer

    def check_outage(self) -> None:
        now = self.clock()
        for began, ended in self.faults.outages:
            if began <= now < ended:
                raise Unavailable(f"simulated outage until {ended:%H:%M:%S} UTC")

    def admit_request(self, account_id: str, region: str) -> None:
        limit = self.faults.max_requests_per_second
        if limit is None:
            return
        with self._lock:
            window = self._requests.setdefault((account_id, region), RateWindow(limit))
            if not window.admit(1, time.monotonic()):
                raise Throttled("Rate exceeded")

    def admit_datapoints(self, account_id: str, region: str, count: int) -> None:
        limit = self.faults.max_datapoints_per_second
        if limit is None:
            return
        with self._lock:
            window = self._datapoints.setdefault((account_id, region), RateWindow(limit))
            if not window.admit(count, time.monotonic()):
                raise Throttled("Rate exceeded: datapoints per second")

    def create_due_instances(self, endpoint_url: str) -> list[SimulatedInstance]:
        """Creates in moto's RDS every simulated instance whose creation time has come."""
        now = self.clock()
        due = [
            i for key, i in self.fleet.items() if key not in self._created and i.created_at <= now
        ]
        for instance in due:
            client = boto3.client(
                "rds",
                region_name=instance.region,
                endpoint_url=endpoint_url,
                **account_credentials(endpoint_url, instance.account_id),
            )
            backend = rds_backends[instance.account_id][instance.region]
            if instance.cluster is not None:
                self._create_cluster(client, instance.cluster)
                client.create_db_instance(
                    DBInstanceIdentifier=instance.instance_id,
                    DBInstanceClass=instance.instance_class,
                    Engine=instance.engine,
                    DBClusterIdentifier=instance.cluster.cluster_id,
                    Tags=[{"Key": k, "Value": v} for k, v in instance.tags.items()],
                )
            else:
                client.create_db_instance(
                    DBInstanceIdentifier=instance.instance_id,
                    DBInstanceClass=instance.instance_class,
                    Engine=instance.engine,
                    EngineVersion=ENGINE_VERSIONS.get(instance.engine, "1.0"),
                    AllocatedStorage=instance.storage_gib,
                    MultiAZ=instance.multi_az,
                    MasterUsername="admin",
                    MasterUserPassword="local-password",
                    Tags=[{"Key": k, "Value": v} for k, v in instance.tags.items()],
                )
            model = backend.databases[instance.instance_id]
            model.instance_create_time = instance.created_at
            model.dbi_resource_id = instance.dbi_resource_id
            if instance.cluster is not None:  # moto makes the first member the writer
                setattr(model, "is_cluster_writer", instance.cluster_role == WRITER)  # noqa: B010
            # moto keeps no Performance Insights settings: its answer reads these attributes.
            insights = instance.performance_insights_days
            setattr(model, "performance_insights_enabled", insights is not None)  # noqa: B010
            setattr(model, "performance_insights_retention_period", insights)  # noqa: B010
            if instance.stopped:
                client.stop_db_instance(DBInstanceIdentifier=instance.instance_id)
            self._created.add((instance.account_id, instance.region, instance.instance_id))
        return due

    def _create_cluster(self, client: Any, cluster: SimulatedCluster) -> None:
        """Creates an Aurora cluster in moto's RDS the first time a member is due."""
        key = (cluster.account_id, cluster.region, cluster.cluster_id)
        if key in self._created_clusters:
            return
        scaling = (
            {
                "ServerlessV2ScalingConfiguration": {
                    "MinCapacity": cluster.serverless_acu[0],
                    "MaxCapacity": cluster.serverless_acu[1],
                }
            }
            if cluster.serverless_acu
            else {}
        )
        client.create_db_cluster(
            DBClusterIdentifier=cluster.cluster_id,
            Engine=cluster.engine,
            EngineVersion=ENGINE_VERSIONS[cluster.engine],
            MasterUsername="admin",
            MasterUserPassword="local-password",
            **scaling,
        )
        model = rds_backends[cluster.account_id][cluster.region].clusters[cluster.cluster_id]
        model.cluster_create_time = cluster.created_at
        self._created_clusters.add(key)


class ClientKeys(TypedDict):
    """The keyword arguments of `boto3.client` that say whose keys a client signs with."""

    aws_access_key_id: str
    aws_secret_access_key: str
    aws_session_token: NotRequired[str]


def account_credentials(endpoint_url: str, account_id: str) -> ClientKeys:
    """Keys that moto files under `account_id`: the own account's, or an assumed role's."""
    local: ClientKeys = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    if account_id == ACCOUNT_ID:
        return local
    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=endpoint_url, **local)
    credentials = sts.assume_role(
        RoleArn=reader_role_arn(account_id), RoleSessionName="local-aws-fleet"
    )["Credentials"]
    return {
        "aws_access_key_id": credentials["AccessKeyId"],
        "aws_secret_access_key": credentials["SecretAccessKey"],
        "aws_session_token": credentials["SessionToken"],
    }
