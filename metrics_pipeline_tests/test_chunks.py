"""How a run is cut into chunks, paced against CloudWatch's datapoint quota, and collected
when some chunks fail: the logic, without Dagster or AWS."""

from pathlib import Path

import pytest
from dagster import Failure

from metrics_pipeline.collection.accounts import Account, AccountUnavailable
from metrics_pipeline.collection.budget import (
    OLDER_DATAPOINTS_PER_SECOND,
    RECENT_DATAPOINTS_PER_SECOND,
    DatapointBudget,
    datapoints_per_second,
)
from metrics_pipeline.collection.chunks import Chunk, instances_per_chunk, plan_chunks
from metrics_pipeline.collection.cloudwatch import (
    build_queries,
    minimum_requests,
    plan_batches,
)
from metrics_pipeline.collection.collector import (
    ChunkWrite,
    FetchedChunk,
    collect_chunks,
    interleaved,
)
from metrics_pipeline.hours import utc_now
from metrics_pipeline.settings import duckdb_memory_limit_for
from metrics_pipeline.warehouse.instances import Instance

SERIES = 14 * 5  # the default metrics and statistics


def fleet(accounts: int, regions: int, per_unit: int) -> list[Instance]:
    return [
        Instance(f"{a}" * 12, f"region-{r}", f"db-{n:04d}")
        for a in range(1, accounts + 1)
        for r in range(regions)
        for n in range(per_unit)
    ]


@pytest.mark.parametrize(
    ("instances", "hours", "chunk_datapoints"),
    [
        (500, 72, 2_000_000),  # the 30 million datapoints
        (2000, 24, 2_000_000),
        (500, 2, 2_000_000),  # a fresh tick: one chunk
        (37, 1, 100_800),
        (120, 168, 1_008_000),  # a week, the smallest chunk allowed
    ],
)
def test_chunks_stay_within_a_tenth_of_the_request_floor(
    instances: int, hours: int, chunk_datapoints: int
) -> None:
    points = hours * 12
    targets = fleet(1, 1, instances)

    chunks = plan_chunks(targets, SERIES, points, chunk_datapoints)

    assert sorted(i for c in chunks for i in c.instances) == sorted(targets)  # each once
    requests = 0
    for chunk in chunks:
        assert len(chunk.instances) * SERIES * points <= max(chunk_datapoints, SERIES * points)
        for batch in plan_batches(build_queries(chunk.instances, ["m"] * 14, ["s"] * 5), points):
            requests += -(-len(batch) * points // 100_800)
    floor = minimum_requests(instances * SERIES, points)
    assert floor <= requests <= 1.1 * floor


def test_chunks_never_mix_accounts_or_regions_and_count_within_each() -> None:
    targets = fleet(2, 2, 30)
    chunks = plan_chunks(targets, SERIES, 12 * 24, 1_000_000)
    per_chunk = instances_per_chunk(SERIES, 12 * 24, 1_000_000)

    # 1,000,000 / (70 x 288) = 49 instances, down to whole requests of 350 queries: 45.
    assert per_chunk == 45
    units = {(c.account_id, c.region) for c in chunks}
    assert len(units) == 4
    for chunk in chunks:
        assert {(i.account_id, i.region) for i in chunk.instances} == {
            (chunk.account_id, chunk.region)
        }
    assert [(c.number, c.of, len(c.instances)) for c in chunks if c.region == "region-0"][:1] == [
        (1, 1, 30)
    ]


def test_memory_limit_follows_the_chunk() -> None:
    assert duckdb_memory_limit_for(2_000_000) == "367MiB"
    assert duckdb_memory_limit_for(100_800) == "256MiB"  # the floor


def test_datapoint_budget_holds_back_past_the_quota() -> None:
    now = [0.0]
    slept: list[float] = []
    budget = DatapointBudget(
        180_000,
        clock=lambda: now[0],
        sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)),
    )

    budget.spend(100_800)  # within the second of credit
    budget.spend(100_800)
    budget.spend(100_800)

    assert slept == pytest.approx([100_800 * 2 / 180_000 - 1, 100_800 / 180_000])
    # Over the whole stretch, no more than the quota plus one second of credit.
    assert 180_000 * (now[0] + 1) >= 3 * 100_800


def test_recent_windows_get_cloudwatchs_lower_quota() -> None:
    from datetime import timedelta

    now = utc_now()
    assert datapoints_per_second(now - timedelta(hours=2), now) == RECENT_DATAPOINTS_PER_SECOND
    assert datapoints_per_second(now - timedelta(hours=4), now) == OLDER_DATAPOINTS_PER_SECOND


def chunk(account: str, region: str, number: int, of: int) -> Chunk:
    return Chunk(account, region, (Instance(account, region, f"db-{number}"),), number, of)


def test_a_failing_account_or_region_stops_only_itself(tmp_path: Path) -> None:
    chunks = [
        chunk("111111111111", "us-east-1", 1, 2),
        chunk("111111111111", "us-east-1", 2, 2),
        chunk("111111111111", "eu-west-1", 1, 1),
        chunk("222222222222", "us-east-1", 1, 2),
        chunk("222222222222", "us-east-1", 2, 2),
        chunk("222222222222", "eu-west-1", 1, 1),
        chunk("333333333333", "us-east-1", 1, 1),
    ]
    refused = Account("222222222222", "arn:aws:iam::222222222222:role/r")
    written: list[tuple[str, str, int]] = []

    def fetch(c: Chunk, folder: Path) -> FetchedChunk:
        assert folder.is_dir()
        if c.account_id == "222222222222":
            raise AccountUnavailable(refused, "AccessDenied: no")
        if c.region == "eu-west-1":
            raise Failure(description="GetMetricData in eu-west-1 failed: Throttling")
        return FetchedChunk([], 0)

    def write(c: Chunk, files: object) -> ChunkWrite:
        written.append((c.account_id, c.region, c.number))
        return ChunkWrite(10, 0, 50, {})

    outcomes = collect_chunks(chunks, fetch, write, tmp_path, threads=1, log=lambda _: None)

    assert sorted(written) == [
        ("111111111111", "us-east-1", 1),
        ("111111111111", "us-east-1", 2),
        ("333333333333", "us-east-1", 1),
    ]
    status = {key: (o.status, o.instances_written, o.rows_written) for key, o in outcomes.items()}
    assert status == {
        ("111111111111", "us-east-1"): ("collected", 2, 20),
        ("111111111111", "eu-west-1"): ("failed", 0, 0),
        ("222222222222", "us-east-1"): ("failed", 0, 0),
        ("222222222222", "eu-west-1"): ("failed", 0, 0),
        ("333333333333", "us-east-1"): ("collected", 1, 10),
    }
    denied = (
        "account 222222222222: cannot assume arn:aws:iam::222222222222:role/r: AccessDenied: no"
    )
    assert outcomes[("222222222222", "eu-west-1")].error == denied
    assert not outcomes[("222222222222", "eu-west-1")].retryable
    assert outcomes[("111111111111", "eu-west-1")].retryable
    assert list(tmp_path.iterdir()) == []  # every chunk's spool folder is gone


def test_threads_take_chunks_from_every_account_and_region_in_turn() -> None:
    chunks = [
        chunk("111111111111", "us-east-1", 1, 3),
        chunk("111111111111", "us-east-1", 2, 3),
        chunk("111111111111", "us-east-1", 3, 3),
        chunk("111111111111", "eu-west-1", 1, 1),
        chunk("222222222222", "us-east-1", 1, 2),
        chunk("222222222222", "us-east-1", 2, 2),
    ]

    order = [(c.account_id[0], c.region, c.number) for c in interleaved(chunks)]

    assert order == [
        ("1", "us-east-1", 1),
        ("1", "eu-west-1", 1),
        ("2", "us-east-1", 1),
        ("1", "us-east-1", 2),
        ("2", "us-east-1", 2),
        ("1", "us-east-1", 3),
    ]


def test_a_failing_write_stops_the_run_and_keeps_what_was_written(tmp_path: Path) -> None:
    chunks = [chunk("111111111111", "us-east-1", n, 3) for n in (1, 2, 3)]
    written: list[int] = []

    def write(c: Chunk, files: object) -> ChunkWrite:
        if c.number == 2:
            raise OSError("No space left on device")
        written.append(c.number)
        return ChunkWrite(1, 0, 1, {})

    with pytest.raises(OSError, match="No space left on device"):
        collect_chunks(
            chunks, lambda c, f: FetchedChunk([], 0), write, tmp_path, threads=1, log=lambda _: None
        )
    assert written == [1]
