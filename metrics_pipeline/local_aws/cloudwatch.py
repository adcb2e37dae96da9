"""GetMetricData as CloudWatch really answers it, on top of moto.

moto answers any number of queries in one unpaged response, from a store that gets slow
on wide windows; CloudWatch refuses more than 500 queries, pages at MaxDatapoints (at most
100,800) with NextToken, and throttles. This handler adds the limits and paging, and answers
queries about the simulator's fleet from generated values (others from moto's store), by
CloudWatch's rules of what it keeps at which age (`resolution.py`) and with percentiles.
"""

import base64
import json
import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from moto.cloudwatch.exceptions import CloudWatchException, ValidationError
from moto.cloudwatch.models import CloudWatchBackend, MetricDatum
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.responses import ActionResult
from moto.sts.exceptions import STSClientError
from moto.sts.responses import TokenResponse

from metrics_pipeline.collection.cloudwatch import (
    MAX_DATAPOINTS_PER_RESPONSE,
    MAX_QUERIES_PER_REQUEST,
)
from metrics_pipeline.local_aws.signals import STATISTICS, percentile_of
from metrics_pipeline.local_aws.simulator import Simulator, Throttled, Unavailable


class Throttling(CloudWatchException):
    """CloudWatch's answer past the request quota (HTTP 400, code Throttling)."""

    code = "Throttling"
    message = "Rate exceeded"


class InternalServiceFault(CloudWatchException):
    """CloudWatch's 500: what a request gets during a (simulated) outage."""

    code = "InternalServiceError"
    message = "Internal service error"


_simulator: Simulator | None = None

# The simulated answers of the last requests, whole: a request's further pages (NextToken)
# are cut from the answer generated for its first page instead of each generating every query
# again, which made a year of history cost its pages squared. A first page always generates
# (the data may have grown since).
_ANSWERS_KEPT = 8
_answers: OrderedDict[tuple[Any, ...], dict[str, dict[str, Any]]] = OrderedDict()
_answers_lock = threading.Lock()


def _simulated_answers(
    account_id: str,
    region: str,
    queries: list[dict[str, Any]],
    start: datetime,
    end: datetime,
    next_page: bool,
) -> dict[str, dict[str, Any]]:
    """Each simulated query's full answer by Id, generated once for a request's pages."""
    assert _simulator is not None
    key = (account_id, region, json.dumps(queries, sort_keys=True, default=str), start, end)
    with _answers_lock:
        if next_page and key in _answers:
            _answers.move_to_end(key)
            return _answers[key]
    answers = {
        q["Id"]: _simulator.answer(account_id, region, q, start, end)
        for q in queries
        if _simulator.knows(account_id, region, q)
    }
    with _answers_lock:
        _answers[key] = answers
        while len(_answers) > _ANSWERS_KEPT:
            _answers.popitem(last=False)
    return answers


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def decode_token(token: str) -> int:
    try:
        prefix, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if prefix == "offset":
            return int(offset)
    except ValueError:
        pass
    raise ValidationError("The parameter NextToken is invalid.")


def page_results(
    results: list[dict[str, Any]], max_datapoints: int, offset: int
) -> tuple[list[dict[str, Any]], int | None]:
    """The slice [offset, offset + max_datapoints) of all datapoints, query after query.

    Every query appears on every page (with its share of the slice, possibly none);
    its StatusCode is PartialData while datapoints of it remain for later pages.
    """
    page = []
    position = 0
    end = offset + max_datapoints
    for result in results:
        count = len(result["values"])
        lo = min(max(offset - position, 0), count)
        hi = min(max(end - position, 0), count)
        page.append(
            {
                **result,
                "values": result["values"][lo:hi],
                "timestamps": result["timestamps"][lo:hi],
                "status_code": "PartialData" if hi < count else "Complete",
            }
        )
        position += count
    return page, (end if end < position else None)


def _results(
    response: CloudWatchResponse,
    queries: list[dict[str, Any]],
    start: datetime,
    end: datetime,
    next_page: bool,
) -> list[dict[str, Any]]:
    """Each query's full answer, in query order: generated for the simulated fleet,
    from moto's store for anything else."""
    account_id = response.current_account
    simulated = (
        _simulated_answers(account_id, response.region, queries, start, end, next_page)
        if _simulator is not None
        else {}
    )
    stored_queries = [q for q in queries if q["Id"] not in simulated]
    backend = response.cloudwatch_backend
    stored = {
        q["Id"]: _stored_percentile(backend, q, start, end)
        for q in stored_queries
        if percentile_of(q.get("MetricStat", {}).get("Stat", "")) is not None
    }
    stored_queries = [q for q in stored_queries if q["Id"] not in stored]
    if stored_queries:
        stored |= {
            r["id"]: r
            for r in backend.get_metric_data(
                start_time=start, end_time=end, queries=stored_queries, scan_by="TimestampAscending"
            )
        }
    answers = {**stored, **simulated}
    return [answers[q["Id"]] for q in queries if q["Id"] in answers]


def _stored_percentile(
    backend: CloudWatchBackend, query: dict[str, Any], start: datetime, end: datetime
) -> dict[str, Any]:
    """A percentile (`pNN`) of the single values stored in moto, per period: moto answers
    none. Like CloudWatch, of the period's samples (linear interpolation)."""
    stat = query["MetricStat"]
    metric = stat["Metric"]
    percentile = percentile_of(stat["Stat"]) or 0.0
    dimensions = sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
    period = timedelta(seconds=int(stat["Period"]))
    samples: dict[datetime, list[float]] = {}
    for datum in backend.get_all_metrics():
        if (
            isinstance(datum, MetricDatum)
            and datum.namespace == metric["Namespace"]
            and datum.name == metric["MetricName"]
            and sorted((d.name, d.value) for d in datum.dimensions) == dimensions
            and start <= datum.timestamp < end
        ):
            slot = start + (datum.timestamp - start) // period * period
            samples.setdefault(slot, []).append(float(datum.value))
    slots = sorted(samples)
    return {
        "id": query["Id"],
        "label": query.get("Label") or f"{metric['MetricName']} {stat['Stat']}",
        "values": [float(np.percentile(np.asarray(samples[slot]), percentile)) for slot in slots],
        "timestamps": slots,
        "status_code": "Complete",
    }


def get_metric_data(self: CloudWatchResponse) -> ActionResult:
    params = self._get_params()
    queries = params.get("MetricDataQueries", [])
    if len(queries) > MAX_QUERIES_PER_REQUEST:
        raise ValidationError(
            f"The collection MetricDataQueries must not have a size greater than "
            f"{MAX_QUERIES_PER_REQUEST}."
        )
    if not queries:
        raise ValidationError("The parameter MetricDataQueries is required.")
    for number, query in enumerate(queries, 1):
        stat = query.get("MetricStat", {}).get("Stat")
        if stat is not None and stat not in STATISTICS and percentile_of(stat) is None:
            raise ValidationError(
                f"The value {stat} for parameter MetricDataQueries.member.{number}.MetricStat.Stat"
                " is not valid."
            )
    max_datapoints = int(params.get("MaxDatapoints") or MAX_DATAPOINTS_PER_RESPONSE)
    if not 1 <= max_datapoints <= MAX_DATAPOINTS_PER_RESPONSE:
        raise ValidationError(
            f"The parameter MaxDatapoints must be between 1 and {MAX_DATAPOINTS_PER_RESPONSE}."
        )
    start, end = params["StartTime"], params["EndTime"]
    if start >= end:
        raise ValidationError("The parameter EndTime must be greater than StartTime.")
    offset = decode_token(params["NextToken"]) if params.get("NextToken") else 0
    try:
        if _simulator is not None:
            _simulator.check_outage()
            _simulator.admit_request(self.current_account, self.region)
        page, next_offset = page_results(
            _results(self, queries, start, end, next_page=offset > 0), max_datapoints, offset
        )
        if _simulator is not None:
            _simulator.admit_datapoints(
                self.current_account, self.region, sum(len(r["values"]) for r in page)
            )
    except Throttled as throttled:
        raise Throttling(str(throttled)) from None
    except Unavailable as outage:
        raise InternalServiceFault(str(outage)) from None
    if params.get("ScanBy", "TimestampDescending") == "TimestampDescending":
        page = [
            {**r, "values": r["values"][::-1], "timestamps": r["timestamps"][::-1]} for r in page
        ]
    body: dict[str, Any] = {"MetricDataResults": page}
    if next_offset is not None:
        body["NextToken"] = encode_token(next_offset)
    return ActionResult(body)


class AccessDenied(STSClientError):
    def __init__(self, message: str) -> None:
        super().__init__("AccessDenied", message)


_moto_assume_role = TokenResponse.assume_role


def assume_role(self: TokenResponse) -> ActionResult:
    """AssumeRole as an account with trust policies answers it: only the simulator's reader
    roles can be assumed (moto lets anyone assume any role)."""
    role_arn = self._get_param("RoleArn")
    if _simulator is not None and not _simulator.assumable(role_arn):
        raise AccessDenied(
            f"User: arn:aws:iam::{self.current_account}:user/local is not authorized to "
            f"perform: sts:AssumeRole on resource: {role_arn}"
        )
    return _moto_assume_role(self)


def install(simulator: Simulator | None = None) -> None:
    """Makes every moto CloudWatch in this process (in-process or server) answer like
    CloudWatch, and about `simulator`'s fleet if one is given; and its STS refuse roles the
    simulator does not offer."""
    global _simulator
    _simulator = simulator
    with _answers_lock:
        _answers.clear()
    # Patching moto's response classes is the point here: mypy forbids assigning to methods.
    CloudWatchResponse.get_metric_data = get_metric_data  # type: ignore[method-assign]
    TokenResponse.assume_role = assume_role  # type: ignore[method-assign]
