"""Gap finding and run planning, on hand-built inventories and fetch logs."""

from datetime import datetime, timedelta

from metrics_pipeline.healing.gaps import (
    Gap,
    HealingRun,
    HourStatus,
    find_gaps,
    plan_healing_runs,
)
from metrics_pipeline.hours import healing_hours
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry

NOW = datetime(2026, 11, 20, 12, 20)
H = [datetime(2026, 11, 20, h) for h in range(12)]  # 00:00 .. 11:00, all settled at 12:20
LONG_AGO = datetime(2026, 10, 1)

A = Instance("1", "us-east-1", "a")
B = Instance("1", "us-east-1", "b")
C = Instance("1", "eu-west-1", "c")


def entry(
    instance: Instance, created: datetime = LONG_AGO, last_seen: datetime = NOW
) -> InventoryEntry:
    return InventoryEntry(instance, created, created, last_seen)


def all_fetched(instances: list[Instance], hours: list[datetime]) -> set[tuple[Instance, datetime]]:
    return {(i, h) for i in instances for h in hours}


MATERIALIZED = {h: HourStatus.MATERIALIZED for h in H}
DATAPOINTS_PER_INSTANCE_HOUR = 10


def plan(gaps: list[Gap], inventory: list[InventoryEntry], budget: int = 10**9) -> list[HealingRun]:
    return plan_healing_runs(gaps, inventory, budget, DATAPOINTS_PER_INSTANCE_HOUR).runs


def test_window_holds_settled_hours_only() -> None:
    hours = healing_hours(NOW, 1, timedelta(minutes=15))
    assert hours[0] == datetime(2026, 11, 19, 12)
    assert hours[-1] == datetime(2026, 11, 20, 11)  # ended 12:00, settled 12:15 <= 12:20
    assert len(hours) == 24
    assert healing_hours(NOW, 1, timedelta(minutes=25))[-1] == datetime(2026, 11, 20, 10)


def test_complete_window_has_no_gap() -> None:
    inventory = [entry(A), entry(B)]
    assert find_gaps(H, inventory, all_fetched([A, B], H), MATERIALIZED) == []


def test_empty_settled_fetch_is_not_a_gap_but_a_missing_one_is() -> None:
    inventory = [entry(A), entry(B)]
    settled = all_fetched([A, B], H) - {(B, H[3])}
    [gap] = find_gaps(H, inventory, settled, MATERIALIZED)
    assert (gap.hour, gap.lacking, gap.whole_hour) == (H[3], frozenset({B}), False)
    assert plan([gap], inventory) == [HealingRun(H[3], H[3], ("b",))]


def test_instances_that_did_not_exist_are_not_gaps() -> None:
    # c was created at 06:30 and a was deleted (last seen 02:10): neither lacks other hours.
    inventory = [
        entry(A, last_seen=datetime(2026, 11, 20, 2, 10)),
        entry(C, datetime(2026, 11, 20, 6, 30)),
    ]
    settled = all_fetched([A], H[:5]) | all_fetched([C], H[6:])
    assert find_gaps(H, inventory, settled, MATERIALIZED) == []
    missing_c = find_gaps(H, inventory, settled - {(C, H[6])}, MATERIALIZED)
    assert [(g.hour, g.lacking) for g in missing_c] == [(H[6], frozenset({C}))]


def test_failed_missing_and_in_progress_hours() -> None:
    inventory = [entry(A), entry(B)]
    statuses = {
        **MATERIALIZED,
        H[2]: HourStatus.FAILED,  # fetched fine earlier, latest run failed
        H[5]: HourStatus.MISSING,
        H[6]: HourStatus.MISSING,
        H[8]: HourStatus.IN_PROGRESS,  # a queued run covers it
    }
    settled = all_fetched([A, B], H) - all_fetched([A, B], [H[5], H[6], H[8]])
    gaps = find_gaps(H, inventory, settled, statuses)
    assert [(g.hour, g.whole_hour) for g in gaps] == [(H[2], True), (H[5], True), (H[6], True)]
    assert plan(gaps, inventory) == [
        HealingRun(H[5], H[6], ()),
        HealingRun(H[2], H[2], ()),
    ]


def test_new_instance_is_backfilled_alone() -> None:
    new = InventoryEntry(C, LONG_AGO, NOW - timedelta(minutes=5), NOW)  # discovered just now
    inventory = [entry(A), entry(B), new]
    gaps = find_gaps(H, inventory, all_fetched([A, B], H), MATERIALIZED)
    assert len(gaps) == 12
    assert plan(gaps, inventory) == [HealingRun(H[0], H[11], ("c",))]


def test_with_several_accounts_a_lacking_instance_is_named_with_its_account() -> None:
    """Two accounts both hold an `a`: healing the second's must not name the first's."""
    other_a = Instance("2", "us-east-1", "a")
    inventory = [entry(A), entry(B), entry(other_a)]
    gaps = find_gaps(H, inventory, all_fetched([A, B], H), MATERIALIZED)
    assert plan(gaps, inventory) == [HealingRun(H[0], H[11], ("2/a",))]


def test_work_per_tick_is_bounded_by_datapoints_newest_first() -> None:
    inventory = [entry(A)]
    settled = all_fetched([A], H) - all_fetched([A], [H[1], H[2], H[3], H[7], H[8], H[9], H[10]])
    gaps = find_gaps(H, inventory, settled, MATERIALIZED)
    # 50 datapoints are 5 instance-hours: the newest range (4 hours), then the newest hour of
    # the next. Restricting to the only instance is no cheaper than "everyone": no list.
    tight = plan_healing_runs(gaps, inventory, 50, DATAPOINTS_PER_INSTANCE_HOUR)
    assert tight.runs == [HealingRun(H[7], H[10], ()), HealingRun(H[3], H[3], ())]
    assert (tight.hours, tight.hours_left) == (5, 2)
    ample = plan_healing_runs(gaps, inventory, 1000, DATAPOINTS_PER_INSTANCE_HOUR)
    assert ample.runs == [HealingRun(H[7], H[10], ()), HealingRun(H[1], H[3], ())]
    assert (ample.hours, ample.hours_left) == (7, 0)


def test_budget_counts_every_instance_a_run_fetches() -> None:
    inventory = [entry(A), entry(B), entry(C)]
    statuses = {**MATERIALIZED, **{h: HourStatus.MISSING for h in H[6:]}}
    gaps = find_gaps(H, inventory, all_fetched([A, B, C], H[:6]), statuses)
    # Whole hours fetch all three instances: 30 datapoints an hour, so 100 buy 3 hours.
    bounded = plan_healing_runs(gaps, inventory, 100, DATAPOINTS_PER_INSTANCE_HOUR)
    assert bounded.runs == [HealingRun(H[9], H[11], ())]
    assert bounded.hours_left == 3


def test_an_hour_bigger_than_the_budget_still_heals() -> None:
    inventory = [entry(A), entry(B)]
    gaps = find_gaps(H, inventory, all_fetched([A, B], H[:10]), MATERIALIZED)
    starved = plan_healing_runs(gaps, inventory, 1, DATAPOINTS_PER_INSTANCE_HOUR)
    assert starved.runs == [HealingRun(H[11], H[11], ())]
    assert starved.hours_left == 1
