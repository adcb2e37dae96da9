"""How metrics are asked of CloudWatch: GetMetricData requests planned, paged and spooled.

The planning functions are pure (which queries, how many per request, what window); the
fetch function streams each response page to a Parquet file so that memory stays bounded
by one page whatever the length of the window.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metrics_pipeline.catalog import RDS_INSTANCE_NAMESPACE, Namespace
from metrics_pipeline.collection.bounds import (
    EndlessAnswer,
    MalformedAnswer,
    OversizedAnswer,
    max_pages,
)
from metrics_pipeline.collection.budget import DatapointBudget
from metrics_pipeline.warehouse.instances import Instance

# GetMetricData's documented limits.
MAX_QUERIES_PER_REQUEST = 500
MAX_DATAPOINTS_PER_RESPONSE = 100_800
# GetMetricData's list price: USD per 1,000 metrics requested (each query of each call).
USD_PER_1000_METRICS_REQUESTED = 0.01

THROTTLING_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
    }
)

SPOOL_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("region", pa.string()),
        ("instance_id", pa.string()),
        ("metric", pa.string()),
        ("statistic", pa.string()),
        ("ts", pa.timestamp("us")),
        ("value", pa.float64()),
    ]
)


@dataclass(frozen=True)
class MetricQuery:
    query_id: str
    instance: Instance
    metric: str
    statistic: str
    namespace: Namespace = RDS_INSTANCE_NAMESPACE

    def to_api(self, period_seconds: int) -> dict[str, Any]:
        return {
            "Id": self.query_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": self.namespace.name,
                    "MetricName": self.metric,
                    "Dimensions": [
                        {"Name": self.namespace.dimension, "Value": self.instance.instance_id}
                    ],
                },
                "Period": period_seconds,
                "Stat": self.statistic,
            },
            "ReturnData": True,
        }


@dataclass
class RequestStats:
    """What a run asked of AWS, counted from botocore's own events."""

    api_calls: int = 0
    http_requests: int = 0
    metrics_requested: int = 0
    throttled: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    # GetMetricData's queries as first asked (the first page of a request), and the datapoints
    # its answers held, at most MaxDatapoints a call: what request_floor needs.
    queries_asked: int = 0
    datapoints_received: int = 0

    @property
    def retried(self) -> int:
        return self.http_requests - self.api_calls

    def attach(self, client: Any) -> None:
        events = client.meta.events
        events.register("before-parameter-build", self._on_call)
        events.register_first("before-send", self._on_send)
        events.register("needs-retry", self._on_response)
        events.register("after-call.cloudwatch.GetMetricData", self._on_metric_data)

    def _on_call(
        self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        self.api_calls += 1
        self.by_operation[model.name] = self.by_operation.get(model.name, 0) + 1
        if model.name == "GetMetricData":
            queries = len(params.get("MetricDataQueries", []))
            self.metrics_requested += queries
            if not params.get("NextToken"):
                self.queries_asked += queries
            context[_PAGE_SIZE] = params.get("MaxDatapoints", MAX_DATAPOINTS_PER_RESPONSE)

    def _on_send(self, **_: Any) -> None:
        self.http_requests += 1

    def _on_response(self, response: Any = None, **_: Any) -> None:
        if response is None:
            return
        code = response[1].get("Error", {}).get("Code")
        if code in THROTTLING_ERROR_CODES or response[0].status_code == 429:
            self.throttled += 1

    def _on_metric_data(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        received = sum(len(r.get("Values") or []) for r in parsed.get("MetricDataResults") or [])
        self.datapoints_received += min(received, context.get(_PAGE_SIZE, received))


# Where RequestStats keeps a call's MaxDatapoints in botocore's request context.
_PAGE_SIZE = "metrics_pipeline_page_size"


def estimated_cost_usd(metrics_requested: int) -> float:
    return round(metrics_requested * USD_PER_1000_METRICS_REQUESTED / 1000, 6)


def align_window(start: datetime, end: datetime, period_seconds: int) -> tuple[datetime, datetime]:
    """Widens a window to whole periods, as CloudWatch answers only on period boundaries."""
    period = timedelta(seconds=period_seconds)
    epoch = datetime(1970, 1, 1, tzinfo=start.tzinfo)
    aligned_start = epoch + ((start - epoch) // period) * period
    aligned_end = epoch + -((epoch - end) // period) * period
    return aligned_start, aligned_end


def build_queries(
    instances: Sequence[Instance],
    metrics: Sequence[str],
    statistics: Sequence[str],
    namespace: Namespace = RDS_INSTANCE_NAMESPACE,
    metrics_of: Mapping[Instance, Sequence[str]] | None = None,
) -> list[MetricQuery]:
    """One query per instance, metric (its own in `metrics_of`, else `metrics`) and statistic;
    ids are unique across the whole run."""
    chosen = metrics_of or {}
    combos = ((i, m, s) for i in instances for m in chosen.get(i, metrics) for s in statistics)
    return [
        MetricQuery(f"q{n}", instance, metric, statistic, namespace)
        for n, (instance, metric, statistic) in enumerate(combos)
    ]


def queries_per_request(
    datapoints_per_query: int,
    max_queries: int = MAX_QUERIES_PER_REQUEST,
    max_datapoints: int = MAX_DATAPOINTS_PER_RESPONSE,
) -> int:
    """Batch size that wastes no page: each batch fills a whole number of response pages.

    With 500 queries of 864 points (3 days at 300 s) a batch needs 4.3 pages, so 5 requests;
    466 queries fit exactly 4 pages, which brings the run close to the lower bound of
    total datapoints / 100,800 requests.
    """
    if datapoints_per_query * max_queries <= max_datapoints:
        return max_queries
    full_pages = (datapoints_per_query * max_queries) // max_datapoints
    return max(1, min(max_queries, (full_pages * max_datapoints) // datapoints_per_query))


def plan_batches(
    queries: Sequence[MetricQuery],
    datapoints_per_query: int,
    max_queries: int = MAX_QUERIES_PER_REQUEST,
    max_datapoints: int = MAX_DATAPOINTS_PER_RESPONSE,
) -> list[list[MetricQuery]]:
    """Splits queries into requests; a batch never mixes regions (one client per region)."""
    size = queries_per_request(datapoints_per_query, max_queries, max_datapoints)
    batches: list[list[MetricQuery]] = []
    for region in sorted({q.instance.region for q in queries}):
        in_region = [q for q in queries if q.instance.region == region]
        batches.extend(in_region[i : i + size] for i in range(0, len(in_region), size))
    return batches


def minimum_requests(
    query_count: int,
    datapoints_per_query: int,
    max_queries: int = MAX_QUERIES_PER_REQUEST,
    max_datapoints: int = MAX_DATAPOINTS_PER_RESPONSE,
) -> int:
    """The fewest GetMetricData calls any plan could make when every query has a datapoint
    in every period: both limits are hard."""
    return request_floor(
        query_count, query_count * datapoints_per_query, max_queries, max_datapoints
    )


def request_floor(
    queries: int,
    datapoints: int,
    max_queries: int = MAX_QUERIES_PER_REQUEST,
    max_datapoints: int = MAX_DATAPOINTS_PER_RESPONSE,
) -> int:
    """The fewest GetMetricData calls that could ask `queries` and receive `datapoints`: a
    call asks at most `max_queries` and receives at most `max_datapoints`. A run's figure
    counts the datapoints CloudWatch had, not the periods asked (an instance stopped or
    created within the window has fewer), so that no run makes fewer calls than its floor."""
    if queries == 0:
        return 0
    return max(math.ceil(queries / max_queries), math.ceil(datapoints / max_datapoints))


def datapoints_per_query(start: datetime, end: datetime, period_seconds: int) -> int:
    return max(1, math.ceil((end - start).total_seconds() / period_seconds))


def raw_timestamp(value: Any) -> Any:
    """botocore timestamp parser that keeps the wire value: parsing each of 100,800
    timestamps into an aware datetime costs more than the rest of a page put together."""
    return value


def epoch_micros(timestamps: Sequence[Any]) -> np.ndarray:
    """Microseconds since the epoch (UTC) of timestamps as the wire or botocore gives them:
    epoch seconds (JSON/CBOR protocols), ISO 8601 strings (query protocol) or datetimes."""
    if not timestamps:
        return np.empty(0, np.int64)
    first = timestamps[0]
    if isinstance(first, int | float):
        return np.rint(np.asarray(timestamps, dtype=np.float64) * 1e6).astype(np.int64)
    if isinstance(first, str):
        timestamps = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in timestamps]
    return np.array(
        [round(t.replace(tzinfo=t.tzinfo or UTC).timestamp() * 1e6) for t in timestamps],
        dtype=np.int64,
    )


def _nulls_for_non_finite(values: np.ndarray) -> pa.Array:
    """NaN and infinities become NULL: SQL filters them reliably, and they are no values."""
    return pa.array(values, pa.float64(), mask=~np.isfinite(values))


def page_to_table(page: dict[str, Any], queries_by_id: dict[str, MetricQuery]) -> pa.Table:
    """Long-format rows of one response page; the warehouse pivots statistics into columns."""
    labels: dict[str, list[str]] = {name: [] for name in SPOOL_SCHEMA.names[:5]}
    times: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for result in page.get("MetricDataResults", []):
        query = queries_by_id.get(result["Id"])
        result_values = result.get("Values", [])
        if query is None or not result_values:
            continue
        count = min(len(result.get("Timestamps", [])), len(result_values))
        instance = query.instance
        row_labels = (
            instance.account_id,
            instance.region,
            instance.instance_id,
            query.metric,
            query.statistic,
        )
        for name, label in zip(labels, row_labels, strict=True):
            labels[name].extend([label] * count)
        times.append(epoch_micros(result["Timestamps"][:count]))
        values.append(np.asarray(result_values[:count], dtype=np.float64))
    return pa.table(
        {
            **labels,
            "ts": pa.array(np.concatenate(times) if times else [], pa.timestamp("us")),
            "value": _nulls_for_non_finite(np.concatenate(values) if values else np.empty(0)),
        },
        schema=SPOOL_SCHEMA,
    )


def check_page(
    page: dict[str, Any], queries_by_id: dict[str, MetricQuery], max_datapoints: int
) -> None:
    """Refuses a page that is no answer to the request: without results, with results of a
    query not asked, or with more datapoints than MaxDatapoints."""
    results = page.get("MetricDataResults")
    if results is None:
        raise MalformedAnswer("an answer without MetricDataResults; not stored")
    unknown = sorted({r.get("Id") for r in results} - queries_by_id.keys(), key=str)
    if unknown:
        raise MalformedAnswer(f"an answer for queries not asked ({', '.join(map(str, unknown))})")
    datapoints = sum(len(r.get("Values", [])) for r in results)
    if datapoints > max_datapoints:
        raise OversizedAnswer(
            f"a page of {datapoints:,} datapoints, more than the {max_datapoints:,} asked "
            "(MaxDatapoints); refused"
        )


@dataclass(frozen=True)
class SpoolFile:
    path: Path
    rows: int


def fetch_batch_to_spool(
    client: Any,
    batch: Sequence[MetricQuery],
    start: datetime,
    end: datetime,
    period_seconds: int,
    spool_dir: Path,
    max_datapoints: int = MAX_DATAPOINTS_PER_RESPONSE,
    budget: DatapointBudget | None = None,
) -> Iterator[SpoolFile]:
    """Runs one batch through GetMetricData's paginator, one Parquet file per page; each page
    is paid for in `budget`, which holds back the next request when over the quota. Each page
    is checked (`check_page`), and the pages are at most what the datapoints asked can fill
    (`bounds.max_pages`)."""
    queries_by_id = {q.query_id: q for q in batch}
    page_limit = max_pages(
        len(batch), datapoints_per_query(start, end, period_seconds), max_datapoints
    )
    paginator = client.get_paginator("get_metric_data")
    pages = paginator.paginate(
        MetricDataQueries=[q.to_api(period_seconds) for q in batch],
        StartTime=start,
        EndTime=end,
        ScanBy="TimestampAscending",
        PaginationConfig={"PageSize": max_datapoints},
    )
    for page_number, page in enumerate(pages):
        check_page(page, queries_by_id, max_datapoints)
        if page.get("NextToken") and page_number + 1 >= page_limit:
            raise EndlessAnswer(
                f"a request still answered with a NextToken after {page_limit} pages, more "
                f"than {len(batch)} queries of {start:%Y-%m-%d %H:%M} to "
                f"{end:%Y-%m-%d %H:%M} UTC can fill; stopped"
            )
        table = page_to_table(page, queries_by_id)
        if budget is not None:
            budget.spend(table.num_rows)
        if table.num_rows == 0:
            continue
        path = spool_dir / f"{batch[0].query_id}-p{page_number:05d}.parquet"
        pq.write_table(table, path)
        yield SpoolFile(path, table.num_rows)
