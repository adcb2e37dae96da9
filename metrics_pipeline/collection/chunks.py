"""How a collection run is cut up: per account and region (CloudWatch's quotas are theirs),
then into chunks of instances whose whole window is fetched and written together.

A chunk replaces the window of its instances in one transaction, so memory depends on the
chunk, not on the window or the fleet, and every (instance, hour) shows the old rows or the new
ones. Chunks are cut along whole GetMetricData requests, so cutting adds at most one request
per chunk to the run's floor (a chunk spans at least ten full pages: under a tenth).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from metrics_pipeline.collection.cloudwatch import (
    MAX_DATAPOINTS_PER_RESPONSE,
    MAX_QUERIES_PER_REQUEST,
    queries_per_request,
)
from metrics_pipeline.warehouse.instances import Instance


@dataclass(frozen=True)
class Chunk:
    account_id: str
    region: str
    instances: tuple[Instance, ...]
    number: int  # 1-based, within its account and region
    of: int


def instances_per_chunk(
    series_per_instance: int,
    points_per_query: int,
    chunk_datapoints: int,
    max_queries: int = MAX_QUERIES_PER_REQUEST,
    max_datapoints: int = MAX_DATAPOINTS_PER_RESPONSE,
) -> int:
    """How many instances a chunk holds: as many as fit `chunk_datapoints`, rounded down to
    whole requests where the chunk holds more than one, and at least one instance."""
    per_instance = series_per_instance * points_per_query
    fitting = max(1, chunk_datapoints // max(1, per_instance))
    batch = queries_per_request(points_per_query, max_queries, max_datapoints)
    queries = fitting * series_per_instance
    if queries > batch:
        whole_requests = (queries // batch) * batch
        fitting = max(1, whole_requests // series_per_instance)
    return fitting


def plan_chunks(
    targets: Sequence[Instance],
    series_per_instance: int,
    points_per_query: int,
    chunk_datapoints: int,
    max_queries: int = MAX_QUERIES_PER_REQUEST,
    max_datapoints: int = MAX_DATAPOINTS_PER_RESPONSE,
) -> list[Chunk]:
    """The run's chunks, account by account and region by region."""
    size = instances_per_chunk(
        series_per_instance, points_per_query, chunk_datapoints, max_queries, max_datapoints
    )
    chunks: list[Chunk] = []
    ordered = sorted(targets, key=lambda i: (i.account_id, i.region, i.instance_id))
    for (account_id, region), group in groupby(ordered, key=lambda i: (i.account_id, i.region)):
        instances = list(group)
        count = math.ceil(len(instances) / size)
        chunks.extend(
            Chunk(account_id, region, tuple(instances[i * size : (i + 1) * size]), i + 1, count)
            for i in range(count)
        )
    return chunks
