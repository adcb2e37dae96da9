"""The checks every source gets, shown in the UI after each collection: completeness over the
healing window and freshness of the newest period; a source adds its own (`Source.checks`)."""

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from dagster import AssetCheckResult, AssetChecksDefinition, AssetCheckSeverity, asset_check

from metrics_pipeline.hours import HOUR, Clock, partition_key, utc_now
from metrics_pipeline.settings import Settings
from metrics_pipeline.sources.source import Source
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry
from metrics_pipeline.warehouse.resources import WarehouseResource


@dataclass(frozen=True)
class Completeness:
    share: float  # rows present / rows expected, over running instances' settled hours
    expected_rows: int
    empty_hours: list[tuple[Instance, datetime]]  # settled, fetched, nothing: running instance


def completeness(
    hours: Sequence[datetime],
    inventory: Sequence[InventoryEntry],
    rows: Mapping[tuple[Instance, datetime], int],
    empty_fetches: Collection[tuple[Instance, datetime]],
    rows_per_hour: Callable[[InventoryEntry], int],
) -> Completeness:
    """Only instances that were running count: a stopped instance rightly has no data. Each
    expects `rows_per_hour` of its own (what its kind publishes every period)."""
    pairs = [
        (entry, hour)
        for hour in hours
        for entry in inventory
        if entry.status == "available" and entry.existed_during(hour, hour + HOUR)
    ]
    expected_of = {entry.instance: rows_per_hour(entry) for entry, _ in pairs}
    expected = sum(expected_of[entry.instance] for entry, _ in pairs)
    present = sum(
        min(rows.get((entry.instance, hour), 0), expected_of[entry.instance])
        for entry, hour in pairs
    )
    empty = sorted(
        (entry.instance, hour)
        for entry, hour in pairs
        if (entry.instance, hour) in empty_fetches and not rows.get((entry.instance, hour))
    )
    return Completeness(present / expected if expected else 1.0, expected, empty)


def completeness_check(source: Source, settings: Settings, clock: Clock) -> AssetChecksDefinition:
    table = source.asset.path[-1]

    @asset_check(
        asset=source.asset,
        name=f"{table}_completeness",
        description=(
            f"Share of expected periods present over the last {settings.backfill_days} days of "
            f"settled hours, for running instances: warns below {settings.completeness_warn:.0%}; "
            "fails when a settled hour was fetched and came back empty for a running instance."
        ),
    )
    def check(warehouse: WarehouseResource) -> AssetCheckResult:
        hours = source.checked_hours(settings, clock())
        if not hours:
            return AssetCheckResult(passed=True, metadata={"settled_hours": 0})
        window = (hours[0], hours[-1] + HOUR)
        with warehouse.reader() as conn:
            subjects = source.subjects(conn, settings.regions)
            rows = source.rows_per_subject_hour(conn, *window)
            empty = source.fetch_log.empty_settled(conn, *window)
        report = completeness(
            hours,
            subjects,
            rows,
            empty,
            lambda subject: source.expected_rows_per_subject_hour(settings, subject),
        )
        failed = bool(report.empty_hours)
        warned = report.share < settings.completeness_warn
        return AssetCheckResult(
            passed=not (failed or warned),
            severity=AssetCheckSeverity.ERROR if failed else AssetCheckSeverity.WARN,
            metadata={
                "completeness": round(report.share, 4),
                "expected_rows": report.expected_rows,
                "settled_hours": len(hours),
                "empty_running_instance_hours": len(report.empty_hours),
                "first_empty": ", ".join(
                    f"{i.instance_id} {partition_key(h)}" for i, h in report.empty_hours[:5]
                )
                or "none",
            },
        )

    return check


def freshness_check(source: Source, settings: Settings, clock: Clock) -> AssetChecksDefinition:
    table = source.asset.path[-1]

    @asset_check(
        asset=source.asset,
        name=f"{table}_freshness",
        description=(
            f"The newest period in {table} ended no more than "
            f"{source.freshness_bound(settings).total_seconds() / 60:.0f} minutes ago "
            "(METRICS_FRESHNESS_MINUTES" + ("" if source.step == HOUR else ", plus a day") + ")."
        ),
    )
    def check(warehouse: WarehouseResource) -> AssetCheckResult:
        with warehouse.reader() as conn:
            newest = source.newest_period(conn, settings)
            subjects = source.subjects(conn, settings.regions)
        if not subjects:  # nothing to be fresh: a fleet without Aurora clusters, say
            return AssetCheckResult(passed=True, metadata={"newest_period": "none", "subjects": 0})
        if newest is None:
            return AssetCheckResult(passed=False, metadata={"newest_period": "none"})
        start, end = newest
        age = clock() - end
        bound = source.freshness_bound(settings)
        return AssetCheckResult(
            passed=age <= bound,
            metadata={
                "newest_period": start.isoformat(),
                "age_minutes": round(age.total_seconds() / 60, 1),
                "bound_minutes": round(bound.total_seconds() / 60),
            },
        )

    return check


def build_checks(
    settings: Settings, sources: Sequence[Source], clock: Clock = utc_now
) -> list[AssetChecksDefinition]:
    """Each source's completeness and freshness checks, then its own."""
    return [
        check
        for source in sources
        for check in (
            completeness_check(source, settings, clock),
            freshness_check(source, settings, clock),
            *source.checks(settings, clock),
        )
    ]
