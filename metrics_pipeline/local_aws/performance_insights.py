"""Performance Insights on the local AWS, which moto lacks: GetResourceMetrics,
DescribeDimensionKeys and GetDimensionKeyDetails about the simulated instances with PI on.

A WSGI middleware in front of moto answers them in either of PI's protocols (pi_protocol.py)
and passes every other request on. Requests are checked against botocore's PI model (each
shape's type, min, max, enum and pattern; the documented periods), the values come from
workload.py, and nothing older than the instance's retention (`performance_insights_days`) is
returned. Only the metrics db.load and db.sampledload are simulated.
"""

import base64
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import numpy as np
from moto.iam.models import get_account_id_from
from werkzeug.wrappers import Request

from metrics_pipeline.local_aws.fleet import SimulatedInstance
from metrics_pipeline.local_aws.pi_protocol import (
    ERROR_SHAPE,
    MODEL,
    InvalidArgument,
    NotAuthorized,
    PiError,
    documented_element_bytes,
    documented_periods,
    member_shape,
    read,
    requested_operation,
)
from metrics_pipeline.local_aws.signals import MINUTE, Profile
from metrics_pipeline.local_aws.simulator import Simulator
from metrics_pipeline.local_aws.workload import (
    GROUPS,
    SPLIT_OF_DIMENSION,
    STATISTICS,
    Key,
    Masks,
    Workload,
    both,
    group_keys,
    load,
    matching,
    narrowed,
    periods,
    split_keys,
    workload,
)

SERVICE_TYPE = "RDS"  # the simulated fleet's instances are RDS's
METRICS = ("db.load", "db.sampledload")  # the same below PI's sampling threshold
DETAIL_GROUP, DETAIL_DIMENSION = "db.sql", "db.sql.statement"
PERIODS = documented_periods()
ELEMENT_BYTES = documented_element_bytes()
# Without MaxResults (or with 0, its minimum) or a group's Limit: as many as they allow.
MAX_RESULTS: int = member_shape("GetResourceMetrics", "MaxResults").metadata["max"]
_LIMIT = member_shape("GetResourceMetrics", "MetricQueries", "GroupBy", "Limit")
MAX_LIMIT: int = _LIMIT.metadata["max"]
# A period chosen for a request without one gives at most this many datapoints (PI's goal is
# "roughly 100-200").
CHOSEN_PERIOD_POINTS = 200


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def decode_token(token: str | None) -> int:
    """The offset a NextToken stands for (0 without one)."""
    if token is None:
        return 0
    try:
        prefix, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if prefix == "offset" and offset.isdigit():
            return int(offset)
    except ValueError:
        pass
    raise InvalidArgument("The parameter NextToken is not valid.")


T = TypeVar("T")


def page(items: Sequence[T], offset: int, size: int) -> tuple[list[T], int | None]:
    """Items [offset, offset + size), and the offset of the next page if any remain."""
    end = offset + size
    return list(items[offset:end]), (end if end < len(items) else None)


def clipped(text: str) -> str:
    """At most the bytes PI returns of an element, cut on a character boundary."""
    return text.encode()[:ELEMENT_BYTES].decode(errors="ignore")


def chosen_period(span: timedelta) -> int:
    """The shortest documented period giving at most CHOSEN_PERIOD_POINTS datapoints."""
    fitting = [p for p in PERIODS if span.total_seconds() / p <= CHOSEN_PERIOD_POINTS]
    return min(fitting, default=max(PERIODS))


def statistic_of(metric: str) -> str:
    """The aggregate of `metric` (db.load.avg: avg); InvalidArgument for one PI does not know
    (of those the local AWS simulates)."""
    name, _, statistic = metric.rpartition(".")
    if name not in METRICS:
        raise InvalidArgument(f"The specified metric is not a known metric: {metric}")
    if statistic not in STATISTICS:
        raise InvalidArgument(f"The specified statistic is not a known statistic: {metric}")
    return statistic


@dataclass(frozen=True)
class Ranked:
    """A group's key with its load: the dimensions asked for, the masks that select it."""

    dimensions: dict[str, str]
    masks: Masks
    load: np.ndarray
    average: float


@dataclass(frozen=True)
class Window:
    """A request's aligned window, in epoch seconds, and the workload over it."""

    start: int
    end: int
    period: int
    work: Workload

    def average(self, values: np.ndarray) -> float:
        present = self.work.present
        return float(values[present].mean()) if present.any() else 0.0


def filtered(keys: Mapping[str, tuple[Key, ...]], filters: Mapping[str, str]) -> Masks:
    """The keys a request's Filter leaves."""
    masks: Masks = {}
    for dimension, value in filters.items():
        split = SPLIT_OF_DIMENSION.get(dimension)
        if split is None:
            raise InvalidArgument(f"Filter: {dimension} is not a known dimension")
        masks = narrowed(masks, split, matching(keys[split], dimension, value))
    return masks


def ranked(window: Window, group_by: Mapping[str, Any], masks: Masks) -> list[Ranked]:
    """The group's `Limit` keys with the most load over the window (none without load)."""
    group = group_by["Group"]
    if group not in GROUPS:
        raise InvalidArgument(
            f"This group is not a known group: {group} is not valid for current resource"
        )
    split, dimensions = GROUPS[group]
    asked = group_by.get("Dimensions", dimensions)
    unknown = [d for d in asked if d not in dimensions]
    if unknown:
        raise InvalidArgument(f"Dimensions: {', '.join(unknown)} not in the group {group}")
    keys = []
    for values, mask in group_keys(window.work.keys[split], dimensions):
        selected = narrowed(masks, split, mask)
        series = load(window.work, selected)
        average = window.average(series)
        if average > 0:
            keys.append(Ranked({d: clipped(values[d]) for d in asked}, selected, series, average))
    keys.sort(key=lambda key: -key.average)
    return keys[: group_by.get("Limit", MAX_LIMIT)]


class PerformanceInsights:
    """The WSGI app that answers PI's operations and hands anything else to `app` (moto)."""

    def __init__(self, app: WSGIApplication, simulator: Simulator) -> None:
        self.app = app
        self.simulator = simulator
        self.operations: dict[str, Callable[[dict[str, Any], SimulatedInstance], dict[str, Any]]]
        self.operations = {
            "GetResourceMetrics": self.get_resource_metrics,
            "DescribeDimensionKeys": self.describe_dimension_keys,
            "GetDimensionKeyDetails": self.get_dimension_key_details,
        }
        self.by_resource_id = {
            (i.account_id, i.region, i.dbi_resource_id): i for i in simulator.fleet.values()
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        requested = requested_operation(environ)
        if requested is None or requested[0] not in self.operations:
            return self.app(environ, start_response)
        name, protocol = requested
        operation = MODEL.operation_model(name)
        request = Request(environ)
        try:
            params = read(operation.input_shape, protocol.decode(request.get_data()))
            instance = self.authorized(request.headers.get("Authorization", ""), params)
            status = "200 OK"
            body = protocol.encode(self.operations[name](params, instance), operation.output_shape)
        except PiError as error:
            status = "400 Bad Request"
            body = protocol.encode({"__type": error.code, "message": str(error)}, ERROR_SHAPE)
        headers = [("Content-Length", str(len(body))), ("x-amzn-RequestId", str(uuid.uuid4()))]
        start_response(status, [*protocol.headers, *headers])
        return [body]

    def authorized(self, authorization: str, params: Mapping[str, Any]) -> SimulatedInstance:
        """The instance a request asks about, if the caller's account has it in the caller's
        region with PI on; NotAuthorized as AWS answers otherwise."""
        match = re.search(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/", authorization)
        identifier, service = params["Identifier"], params["ServiceType"]
        instance = (
            self.by_resource_id.get((get_account_id_from(match[1]), match[2], identifier))
            if match and service == SERVICE_TYPE
            else None
        )
        if (
            instance is None
            or instance.performance_insights_days is None
            or instance.created_at > self.simulator.clock()
        ):
            raise NotAuthorized(
                f"The resource {identifier} for service type {service} is not authorized for "
                "this account"
            )
        return instance

    def window(self, params: Mapping[str, Any], instance: SimulatedInstance) -> Window:
        """The request's window aligned to its period, and the instance's workload over it:
        data from its creation, within its retention, until now or until it stopped."""
        start, end = params["StartTime"], params["EndTime"]
        if start >= end:
            raise InvalidArgument("The parameter StartTime must be earlier than EndTime.")
        period = params.get("PeriodInSeconds", chosen_period(end - start))
        if period not in PERIODS:
            raise InvalidArgument(
                f"The parameter PeriodInSeconds must be one of {', '.join(map(str, PERIODS))}."
            )
        first = math.floor(start.timestamp() / period) * period
        last = math.ceil(end.timestamp() / period) * period
        minutes = np.arange(first // MINUTE, -(-last // MINUTE), dtype=np.int64)
        profile = self._profile(instance)
        now = self.simulator.clock()
        days = instance.performance_insights_days
        assert days is not None  # authorized() lets instances with PI on through only
        kept_from = max(profile.created_at, now - timedelta(days=days)).timestamp()
        kept_until = min(now, profile.stopped_at or now).timestamp()
        seconds = minutes * MINUTE
        present = (seconds >= kept_from) & (seconds < kept_until)
        return Window(first, last, period, workload(profile, instance.engine, minutes, present))

    def _profile(self, instance: SimulatedInstance) -> Profile:
        profile = self.simulator.profile(instance.account_id, instance.region, instance.instance_id)
        assert profile is not None  # the instance is the simulator's
        return profile

    def get_resource_metrics(
        self, params: dict[str, Any], instance: SimulatedInstance
    ) -> dict[str, Any]:
        window = self.window(params, instance)
        ends = params.get("PeriodAlignment", "END_TIME") == "END_TIME"
        entries = []
        for query in params["MetricQueries"]:
            metric = query["Metric"]
            statistic = statistic_of(metric)
            masks = filtered(window.work.keys, query.get("Filter", {}))
            series: list[tuple[dict[str, Any], np.ndarray]] = [
                ({"Metric": metric}, load(window.work, masks))
            ]
            if "GroupBy" in query:
                series += [
                    ({"Metric": metric, "Dimensions": key.dimensions}, key.load)
                    for key in ranked(window, query["GroupBy"], masks)
                ]
            for key, values in series:
                starts, points = periods(
                    window.work, values, window.start, window.end, window.period, statistic
                )
                offset = window.period if ends else 0
                entries.append(
                    {
                        "Key": key,
                        "DataPoints": [
                            {"Timestamp": _time(int(s) + offset), "Value": float(v)}
                            for s, v in zip(starts, points, strict=True)
                        ],
                    }
                )
        listed, next_offset = page(
            entries,
            decode_token(params.get("NextToken")),
            params.get("MaxResults") or MAX_RESULTS,
        )
        answer = {
            "AlignedStartTime": _time(window.start),
            "AlignedEndTime": _time(window.end),
            "Identifier": params["Identifier"],
            "MetricList": listed,
        }
        return _with_token(answer, next_offset)

    def describe_dimension_keys(
        self, params: dict[str, Any], instance: SimulatedInstance
    ) -> dict[str, Any]:
        if statistic_of(params["Metric"]) != "avg":
            raise InvalidArgument(
                f"Metric: {params['Metric']} is not valid here (db.load.avg, db.sampledload.avg)"
            )
        if "AdditionalMetrics" in params:
            raise InvalidArgument("AdditionalMetrics: the local AWS simulates no per-SQL metrics")
        window = self.window(params, instance)
        masks = filtered(window.work.keys, params.get("Filter", {}))
        partitions = ranked(window, params["PartitionBy"], masks) if "PartitionBy" in params else []
        keys = []
        for key in ranked(window, params["GroupBy"], masks):
            described: dict[str, Any] = {"Dimensions": key.dimensions, "Total": key.average}
            if partitions:
                described["Partitions"] = [
                    window.average(load(window.work, both(key.masks, p.masks))) for p in partitions
                ]
            keys.append(described)
        listed, next_offset = page(
            keys, decode_token(params.get("NextToken")), params.get("MaxResults") or MAX_RESULTS
        )
        answer: dict[str, Any] = {
            "AlignedStartTime": _time(window.start),
            "AlignedEndTime": _time(window.end),
            "Keys": listed,
        }
        if partitions:
            answer["PartitionKeys"] = [{"Dimensions": p.dimensions} for p in partitions]
        return _with_token(answer, next_offset)

    def get_dimension_key_details(
        self, params: dict[str, Any], instance: SimulatedInstance
    ) -> dict[str, Any]:
        """The full text of a db.sql statement (the details the local AWS keeps)."""
        if params["Group"] != DETAIL_GROUP:
            raise InvalidArgument(
                f"Group: the local AWS keeps details of {DETAIL_GROUP} only, not {params['Group']}"
            )
        short = DETAIL_DIMENSION.removeprefix(f"{DETAIL_GROUP}.")
        unknown = set(params.get("RequestedDimensions", [])) - {DETAIL_DIMENSION, short}
        if unknown:
            raise InvalidArgument(
                f"RequestedDimensions: {', '.join(sorted(unknown))} not in {DETAIL_GROUP}"
            )
        split, _ = GROUPS[DETAIL_GROUP]
        wanted = params["GroupIdentifier"]
        statement = next(
            (
                key[DETAIL_DIMENSION]
                for key in split_keys(instance.engine)[split]
                if key[f"{DETAIL_GROUP}.id"] == wanted
            ),
            None,
        )
        if statement is None:
            raise InvalidArgument(f"GroupIdentifier: {wanted} is not a {DETAIL_GROUP}.id here")
        return {
            "Dimensions": [
                {"Dimension": DETAIL_DIMENSION, "Value": statement, "Status": "AVAILABLE"}
            ]
        }


def _time(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _with_token(answer: dict[str, Any], next_offset: int | None) -> dict[str, Any]:
    if next_offset is not None:
        answer["NextToken"] = encode_token(next_offset)
    return answer
