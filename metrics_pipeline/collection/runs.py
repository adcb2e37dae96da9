"""A collection run's window: its chunks fetched from every account and region side by side,
each within its own budgets, written chunk by chunk, and what it did reported per account and
region (the run's metadata, pipeline_runs and pipeline_run_parts)."""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from dagster import Failure, MetadataValue

from metrics_pipeline.catalog import RDS_INSTANCE_NAMESPACE, Namespace
from metrics_pipeline.collection.accounts import Account
from metrics_pipeline.collection.bounds import Deadline, bounded_by
from metrics_pipeline.collection.budget import DatapointBudget, datapoints_per_second
from metrics_pipeline.collection.chunks import Chunk, plan_chunks
from metrics_pipeline.collection.cloudwatch import (
    RequestStats,
    build_queries,
    datapoints_per_query,
    estimated_cost_usd,
    fetch_batch_to_spool,
    plan_batches,
    request_floor,
)
from metrics_pipeline.collection.collector import (
    ChunkWrite,
    FetchedChunk,
    UnitOutcome,
    collect_chunks,
)
from metrics_pipeline.collection.resources import AwsResource, CollectionResource, aws_errors
from metrics_pipeline.collection.store import RAW_DESTINATION, Destination, replace_metrics
from metrics_pipeline.hours import hour_starts, is_settled, utc_now
from metrics_pipeline.metadata import markdown_table
from metrics_pipeline.scratch import private_folder
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.resources import WarehouseResource

# The run's folder of fetched pages, in the system's temporary folder.
SPOOL_PREFIX = "rds-metrics-spool-"


def peak_memory_mib() -> float:
    """The run process's own peak resident memory so far: Linux's VmHWM. getrusage's maxrss
    would carry the peak of the process that started this one (the daemon, a code server)
    across fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def where(region: str, account: Account, accounts: Sequence[Account]) -> str:
    """The region an error names, with its account when the run collects several."""
    return region if len(accounts) == 1 else f"{region} of account {account.account_id}"


class CollectionRun:
    """One run's window fetched chunk by chunk from every account and region in parallel,
    each (account, region) with its own request and datapoint budgets, and written to the
    warehouse chunk by chunk."""

    def __init__(
        self,
        aws: AwsResource,
        collection: CollectionResource,
        accounts: Sequence[Account],
        start: datetime,
        end: datetime,
        fetched_at: datetime,
        run_id: str,
        conn: Any,
        warehouse: WarehouseResource,
        clock: Callable[[], float] = time.monotonic,
        destination: Destination = RAW_DESTINATION,
        period_seconds: int | None = None,
        metrics_of: Mapping[Instance, Sequence[str]] | None = None,
        namespace: Namespace = RDS_INSTANCE_NAMESPACE,
    ) -> None:
        """Writes to `destination` the statistics it has columns for, at `period_seconds` (the
        collection period when None), asking each subject in `namespace` for its metrics
        (`metrics_of`; the collection's metrics for a subject it lacks)."""
        self.aws, self.collection = aws, collection
        self.destination = destination
        self.period_seconds = period_seconds or collection.period_seconds
        self.statistics = (
            list(collection.statistics)
            if destination is RAW_DESTINATION
            else list(destination.statistic_columns)
        )
        self.clock = clock
        self.run_deadline: Deadline | None = None
        self.accounts = {account.account_id: account for account in accounts}
        self.start, self.end, self.fetched_at, self.run_id = start, end, fetched_at, run_id
        self.conn, self.warehouse = conn, warehouse
        self.points_per_query = datapoints_per_query(start, end, self.period_seconds)
        self.metrics_of = metrics_of or {}
        self.namespace = namespace
        self.stats: dict[tuple[str, str], RequestStats] = {}
        self.budgets: dict[tuple[str, str], DatapointBudget] = {}
        self.clients: dict[tuple[str, str], Any] = {}
        self.write_seconds = 0.0
        self._lock = threading.Lock()

    def metrics(self, subject: Instance) -> Sequence[str]:
        return self.metrics_of.get(subject, self.collection.metrics)

    def collect(self, targets: Sequence[Instance], log: Any) -> dict[tuple[str, str], UnitOutcome]:
        # Chunks are sized for the subject that asks most.
        most = max((len(self.metrics(target)) for target in targets), default=1)
        chunks = plan_chunks(
            targets,
            max(1, most) * len(self.statistics),
            self.points_per_query,
            self.collection.chunk_datapoints,
            max_datapoints=self.aws.max_datapoints_per_request,
        )
        self.run_deadline = Deadline.after(
            self.collection.run_timeout_seconds, "METRICS_RUN_TIMEOUT_SECONDS", self.clock
        )
        # Owner-only, and what killed runs left is removed first.
        with private_folder(SPOOL_PREFIX) as spool:
            outcomes = collect_chunks(
                chunks, self.fetch, self.write, spool, self.collection.fetch_threads, log
            )
        for key, outcome in outcomes.items():
            if key in self.stats:
                outcome.requests = self.stats[key].api_calls
        return outcomes

    def _unit(self, chunk: Chunk) -> tuple[Any, DatapointBudget]:
        """The client and datapoint budget of the chunk's account and region, made once."""
        key = (chunk.account_id, chunk.region)
        with self._lock:
            if key not in self.clients:
                stats = self.stats.setdefault(key, RequestStats())
                self.budgets[key] = DatapointBudget(datapoints_per_second(self.start, utc_now()))
                self.clients[key] = self.aws.client(
                    "cloudwatch", chunk.region, stats, self.accounts[chunk.account_id]
                )
            return self.clients[key], self.budgets[key]

    def fetch(self, chunk: Chunk, folder: Path) -> FetchedChunk:
        """A worker thread's part: the chunk's GetMetricData pages spooled to `folder`, within
        the chunk's time and the run's, whichever ends first."""
        account = self.accounts[chunk.account_id]
        deadline = Deadline.after(
            self.collection.chunk_timeout_seconds, "METRICS_CHUNK_TIMEOUT_SECONDS", self.clock
        )
        if self.run_deadline is not None and self.run_deadline.at < deadline.at:
            deadline = self.run_deadline
        with (
            aws_errors("GetMetricData", where(chunk.region, account, list(self.accounts.values()))),
            bounded_by(deadline),
        ):
            deadline.check(f"chunk {chunk.number}/{chunk.of} not started")
            client, budget = self._unit(chunk)
            queries = build_queries(
                chunk.instances,
                self.collection.metrics,
                self.statistics,
                self.namespace,
                metrics_of={i: self.metrics(i) for i in chunk.instances},
            )
            pages = [
                page
                for batch in plan_batches(
                    queries,
                    self.points_per_query,
                    max_datapoints=self.aws.max_datapoints_per_request,
                )
                for page in fetch_batch_to_spool(
                    client,
                    batch,
                    self.start,
                    self.end,
                    self.period_seconds,
                    folder,
                    self.aws.max_datapoints_per_request,
                    budget,
                )
            ]
        return FetchedChunk([page.path for page in pages], sum(page.rows for page in pages))

    def write(self, chunk: Chunk, spool_files: Sequence[Path]) -> ChunkWrite:
        """The writer's part, in the calling thread: one transaction per chunk."""
        began = time.monotonic()
        size = sum(path.stat().st_size for path in spool_files)
        self.warehouse.require_space(size)
        written = replace_metrics(
            self.conn,
            spool_files=spool_files,
            targets=chunk.instances,
            start=self.start,
            end=self.end,
            fetched_at=self.fetched_at,
            settle_delay=self.collection.settle_delay,
            run_id=self.run_id,
            destination=self.destination,
        )
        self.write_seconds += time.monotonic() - began
        return ChunkWrite(
            written.rows_written, written.rows_replaced, written.datapoints, written.skipped
        )

    def figures(
        self,
        outcomes: dict[tuple[str, str], UnitOutcome],
        targets: Sequence[Instance],
        lock_wait_seconds: float,
        cpu_started: float,
        started: float,
    ) -> dict[str, Any]:
        """The run's row of pipeline_runs. fetch_seconds is the time the run spent that was
        neither the lock wait nor a write (fetching overlaps the writes); minimum_requests is
        the fewest requests any plan could make for the queries asked and the datapoints
        CloudWatch answered with, a request holding one account and region."""
        every = list(self.stats.values())
        total = time.monotonic() - started
        hours = hour_starts(self.start, self.end)
        return {
            "run_id": self.run_id,
            "asset": self.destination.table.name,
            "window_start": self.start,
            "window_end": self.end,
            "finished_at": utc_now(),
            "instances": len(targets),
            "rows_written": sum(o.rows_written for o in outcomes.values()),
            "rows_replaced": sum(o.rows_replaced for o in outcomes.values()),
            "datapoints": sum(o.datapoints for o in outcomes.values()),
            "settled_hours": sum(
                is_settled(h, self.fetched_at, self.collection.settle_delay) for h in hours
            ),
            "cloudwatch_requests": sum(s.api_calls for s in every),
            "minimum_requests": sum(
                request_floor(
                    s.queries_asked,
                    s.datapoints_received,
                    max_datapoints=self.aws.max_datapoints_per_request,
                )
                for s in every
            ),
            "metrics_requested": sum(s.metrics_requested for s in every),
            "estimated_cost_usd": estimated_cost_usd(sum(s.metrics_requested for s in every)),
            "throttled_calls": sum(s.throttled for s in every),
            "retried_calls": sum(s.retried for s in every),
            "fetch_seconds": round(total - lock_wait_seconds - self.write_seconds, 3),
            "lock_wait_seconds": round(lock_wait_seconds, 3),
            "write_seconds": round(self.write_seconds, 3),
            "cpu_seconds": round(time.process_time() - cpu_started, 3),
            "peak_memory_mib": round(peak_memory_mib(), 1),
            "skipped_datapoints": sum(merged_skips(outcomes.values()).values()),
        }

    def parts(self, outcomes: dict[tuple[str, str], UnitOutcome]) -> list[dict[str, Any]]:
        """The run's rows of pipeline_run_parts, one per account and region."""
        return [
            {
                "account_id": o.account_id,
                "region": o.region,
                "status": o.status,
                "instances": o.instances,
                "instances_written": o.instances_written,
                "rows_written": o.rows_written,
                "datapoints": o.datapoints,
                "cloudwatch_requests": o.requests,
                "throttled_calls": self.stats[key].throttled if key in self.stats else 0,
                "error": o.error,
            }
            for key, o in sorted(outcomes.items())
        ]


def merged_skips(outcomes: Iterable[UnitOutcome]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for outcome in outcomes:
        for reason, count in outcome.skipped.items():
            merged[reason] = merged.get(reason, 0) + count
    return merged


def outcome_metadata(outcomes: Iterable[UnitOutcome]) -> dict[str, Any]:
    """Which accounts and regions the run committed, and which failed and why."""
    outcomes = sorted(outcomes, key=lambda o: (o.account_id, o.region))
    accounts = sorted({o.account_id for o in outcomes})
    failed_accounts = sorted({o.account_id for o in outcomes if o.status == "failed"})
    collected = [a for a in accounts if a not in failed_accounts]
    metadata: dict[str, Any] = {"accounts_collected": ", ".join(collected)}
    if failed_accounts:
        metadata["accounts_failed"] = ", ".join(failed_accounts)
    errors = [f"{o.account_id}/{o.region}: {o.error}" for o in outcomes if o.error]
    if errors:
        metadata["errors"] = "\n".join(errors)
    metadata["by_account_and_region"] = MetadataValue.md(
        markdown_table(
            ("account", "region", "status", "instances written", "rows", "requests"),
            [
                (
                    o.account_id,
                    o.region,
                    o.status,
                    f"{o.instances_written}/{o.instances}",
                    o.rows_written,
                    o.requests,
                )
                for o in outcomes
            ],
        )
    )
    return metadata


def raise_unless_collected(outcomes: Iterable[UnitOutcome], metadata: dict[str, Any]) -> None:
    """A run fails when a failure may pass on another attempt (the step retries, fetching only
    what is not written yet, or, for an answer refused at a deadline or a bound, the gap
    sensor's next run), or when it collected nothing. A failure no retry can fix (a role that
    cannot be assumed, access denied) in some accounts lets the others' run succeed; the error
    is in the metadata and the log, and the gap sensor keeps asking for those hours."""
    outcomes = list(outcomes)
    failed = [o for o in outcomes if o.error]
    if not failed:
        return
    retryable = [o for o in failed if o.retryable]
    passing = [o for o in failed if o.passing]
    if not passing and any(o.instances_written for o in outcomes):
        return
    first = (retryable or passing or failed)[0]
    committed = [o for o in outcomes if o.instances_written]
    description = first.error or ""
    if committed:
        description += (
            f" ({len(failed)} of {len(outcomes)} account/region(s) failed; committed, every "
            "hour of the window: "
            + ", ".join(
                f"{o.account_id}/{o.region} ({o.instances_written} of {o.instances} instances)"
                for o in committed
            )
            + ")"
        )
    raise Failure(
        description=description,
        metadata={key: value for key, value in metadata.items() if key != "dagster/row_count"},
        allow_retries=bool(retryable),
    )
