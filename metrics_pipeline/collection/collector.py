"""A collection run's chunks fetched in parallel and written one at a time.

Fetching threads (CloudWatch's latency, its quota per account and region) run ahead of the
writer by at most one chunk each; the writer (one DuckDB transaction per chunk) runs in the
calling thread. A chunk that cannot be fetched fails its account and region, or its whole
account when the account's role cannot be assumed; the other chunks are still collected and
the run reports what it committed.
"""

from __future__ import annotations

import shutil
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any, Protocol

from dagster import Failure

from metrics_pipeline.collection.accounts import AccountUnavailable
from metrics_pipeline.collection.bounds import AnswerRefused
from metrics_pipeline.collection.chunks import Chunk
from metrics_pipeline.settings import DEFAULT_FETCH_THREADS


@dataclass(frozen=True)
class FetchedChunk:
    spool_files: list[Path]
    datapoints: int  # as received, before the write leaves any out


@dataclass(frozen=True)
class ChunkWrite:
    rows_written: int
    rows_replaced: int
    datapoints: int
    skipped: dict[str, int]


class ChunkWriter(Protocol):
    """Where chunks go: each call replaces the window of the chunk's instances, rows and fetch
    log together, in one transaction (the warehouse backends implement it)."""

    def __call__(self, chunk: Chunk, spool_files: Sequence[Path]) -> ChunkWrite: ...


@dataclass
class UnitOutcome:
    """What a run did for one account and region."""

    account_id: str
    region: str
    instances: int = 0
    chunks: int = 0
    chunks_written: int = 0
    instances_written: int = 0
    rows_written: int = 0
    rows_replaced: int = 0
    datapoints: int = 0
    requests: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    retryable: bool = False  # the step's retry may get past the error
    passing: bool = False  # a later run may (the gap sensor's): the run fails all the same

    @property
    def status(self) -> str:
        if self.chunks_written == self.chunks:
            return "collected"
        return "partial" if self.chunks_written else "failed"

    def add(self, written: ChunkWrite, chunk: Chunk) -> None:
        self.chunks_written += 1
        self.instances_written += len(chunk.instances)
        self.rows_written += written.rows_written
        self.rows_replaced += written.rows_replaced
        self.datapoints += written.datapoints
        for reason, count in written.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count


def failure_line(error: BaseException) -> tuple[str, bool]:
    """The one line an error is reported by, and whether another attempt could get past it."""
    if isinstance(error, Failure):
        return (error.description or type(error).__name__), error.allow_retries is not False
    if isinstance(error, AccountUnavailable):
        return str(error), False
    if isinstance(error, AnswerRefused):
        return str(error).splitlines()[0], error.retryable
    return f"{type(error).__name__}: {error}".splitlines()[0], True


def interleaved(chunks: Sequence[Chunk]) -> list[Chunk]:
    """Chunks taken in turn from each account and region, so that the fetching threads work on
    every quota at once rather than one (account, region) after another."""
    by_unit: dict[tuple[str, str], list[Chunk]] = {}
    for chunk in chunks:
        by_unit.setdefault((chunk.account_id, chunk.region), []).append(chunk)
    rounds = zip_longest(*by_unit.values())
    return [chunk for taken in rounds for chunk in taken if chunk is not None]


def collect_chunks(
    chunks: Sequence[Chunk],
    fetch: Callable[[Chunk, Path], FetchedChunk],
    write: ChunkWriter,
    spool_root: Path,
    threads: int = DEFAULT_FETCH_THREADS,
    log: Callable[[str], Any] = print,
) -> dict[tuple[str, str], UnitOutcome]:
    """Fetches `chunks` on `threads` threads and writes each as it arrives (those that arrive
    together in the order asked); returns what was done per account and region. A write that
    fails stops the run (its error is raised, chunks already written stay written)."""
    outcomes: dict[tuple[str, str], UnitOutcome] = {}
    for chunk in chunks:
        outcome = outcomes.setdefault(
            (chunk.account_id, chunk.region), UnitOutcome(chunk.account_id, chunk.region)
        )
        outcome.instances += len(chunk.instances)
        outcome.chunks += 1
    failed_accounts: dict[str, str] = {}
    queue = deque(interleaved(chunks))
    pending: dict[Future[FetchedChunk], Chunk] = {}

    def fail(chunk: Chunk, error: BaseException) -> None:
        line, retryable = failure_line(error)
        if isinstance(error, AccountUnavailable):
            failed_accounts[chunk.account_id] = line
            failed = [o for o in outcomes.values() if o.account_id == chunk.account_id]
        else:
            failed = [outcomes[(chunk.account_id, chunk.region)]]
        for outcome in failed:
            if outcome.error is None:
                outcome.error, outcome.retryable = line, retryable
                outcome.passing = retryable or isinstance(error, AnswerRefused)
                log(f"{outcome.account_id}/{outcome.region}: {line}")

    def skip(chunk: Chunk) -> bool:
        if chunk.account_id in failed_accounts:
            return True
        return outcomes[(chunk.account_id, chunk.region)].error is not None

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="fetch") as pool:
        try:
            while queue or pending:
                while queue and len(pending) <= threads:
                    chunk = queue.popleft()
                    if not skip(chunk):
                        folder = spool_root / f"{chunk.account_id}-{chunk.region}-{chunk.number}"
                        folder.mkdir(parents=True)
                        pending[pool.submit(fetch, chunk, folder)] = chunk
                if not pending:
                    continue
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in [f for f in pending if f in done]:  # in the order asked
                    chunk = pending.pop(future)
                    outcome = outcomes[(chunk.account_id, chunk.region)]
                    folder = spool_root / f"{chunk.account_id}-{chunk.region}-{chunk.number}"
                    try:
                        try:
                            fetched = future.result()
                        except (Failure, AccountUnavailable, AnswerRefused, OSError) as error:
                            fail(chunk, error)
                            continue
                        if skip(chunk):
                            continue
                        outcome.add(write(chunk, fetched.spool_files), chunk)
                        log(
                            f"{chunk.account_id}/{chunk.region}: wrote chunk {chunk.number}/"
                            f"{chunk.of} ({len(chunk.instances)} instance(s), "
                            f"{fetched.datapoints:,} datapoints received)"
                        )
                    finally:
                        shutil.rmtree(folder, ignore_errors=True)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return outcomes
