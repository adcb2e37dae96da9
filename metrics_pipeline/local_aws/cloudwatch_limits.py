"""GetMetricData as CloudWatch really answers it, on top of moto.

moto answers any number of queries in one unpaged response; CloudWatch refuses more than
500 queries and pages at MaxDatapoints (at most 100,800) with NextToken. The pipeline's
batching and paging can only be tested against the real limits, so this adds them.
"""

from __future__ import annotations

import base64
from typing import Any

from moto.cloudwatch.exceptions import CloudWatchException, ValidationError
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.responses import ActionResult

from metrics_pipeline.cloudwatch import MAX_DATAPOINTS_PER_RESPONSE, MAX_QUERIES_PER_REQUEST


class Throttling(CloudWatchException):
    """CloudWatch's answer past the request quota (HTTP 400, code Throttling)."""

    code = "Throttling"
    message = "Rate exceeded"


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
    max_datapoints = int(params.get("MaxDatapoints") or MAX_DATAPOINTS_PER_RESPONSE)
    if not 1 <= max_datapoints <= MAX_DATAPOINTS_PER_RESPONSE:
        raise ValidationError(
            f"The parameter MaxDatapoints must be between 1 and {MAX_DATAPOINTS_PER_RESPONSE}."
        )
    offset = decode_token(params["NextToken"]) if params.get("NextToken") else 0
    results = self.cloudwatch_backend.get_metric_data(
        start_time=params["StartTime"],
        end_time=params["EndTime"],
        queries=queries,
        scan_by=params.get("ScanBy") or "TimestampDescending",
    )
    page, next_offset = page_results(results, max_datapoints, offset)
    body: dict[str, Any] = {"MetricDataResults": page}
    if next_offset is not None:
        body["NextToken"] = encode_token(next_offset)
    return ActionResult(body)


def install() -> None:
    """Makes every moto CloudWatch in this process (in-process or server) enforce the limits."""
    CloudWatchResponse.get_metric_data = get_metric_data  # type: ignore[method-assign]
