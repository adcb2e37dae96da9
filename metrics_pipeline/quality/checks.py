"""Data checks on rds_metrics over the healing window, shown in the UI after each collection:
completeness, freshness and sanity."""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dagster import AssetCheckResult, AssetChecksDefinition, AssetCheckSeverity, asset_check

from metrics_pipeline.collection.keys import RDS_METRICS
from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.healing.gaps import healing_hours
from metrics_pipeline.hours import HOUR, Clock, partition_key, utc_now
from metrics_pipeline.quality.queries import rows_per_instance_hour, sanity_counts
from metrics_pipeline.settings import Settings
from metrics_pipeline.warehouse.instances import (
    Instance,
    InventoryEntry,
    empty_settled_fetches,
    read_inventory,
)
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import METRICS_TABLE


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
    rows_per_hour: int,
) -> Completeness:
    """Only instances that were running count: a stopped instance rightly has no data."""
    pairs = [
        (entry.instance, hour)
        for hour in hours
        for entry in inventory
        if entry.status == "available" and entry.existed_during(hour, hour + HOUR)
    ]
    expected = len(pairs) * rows_per_hour
    present = sum(min(rows.get(pair, 0), rows_per_hour) for pair in pairs)
    empty = sorted(pair for pair in pairs if pair in empty_fetches and not rows.get(pair))
    return Completeness(present / expected if expected else 1.0, expected, empty)


def build_checks(settings: Settings, clock: Clock = utc_now) -> list[AssetChecksDefinition]:
    """The checks of rds_metrics, with the bounds and window of `settings`."""

    @asset_check(
        asset=RDS_METRICS,
        description=(
            f"Share of expected periods present over the last {settings.backfill_days} days of "
            f"settled hours, for running instances: warns below {settings.completeness_warn:.0%}; "
            "fails when a settled hour was fetched and came back empty for a running instance."
        ),
    )
    def rds_metrics_completeness(
        aws: AwsResource, collection: CollectionResource, warehouse: WarehouseResource
    ) -> AssetCheckResult:
        hours = healing_hours(clock(), settings.backfill_days, collection.settle_delay)
        if not hours:
            return AssetCheckResult(passed=True, metadata={"settled_hours": 0})
        window = (hours[0], hours[-1] + HOUR)
        with warehouse.reader() as conn:
            inventory = read_inventory(conn, aws.regions)
            rows = rows_per_instance_hour(conn, *window)
            empty = empty_settled_fetches(conn, *window)
        report = completeness(
            hours,
            inventory,
            rows,
            empty,
            (3600 // collection.period_seconds) * len(collection.metrics),
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

    @asset_check(
        asset=RDS_METRICS,
        description=(
            f"The newest period in rds_metrics ended no more than {settings.freshness_minutes} "
            "minutes ago (METRICS_FRESHNESS_MINUTES)."
        ),
    )
    def rds_metrics_freshness(
        aws: AwsResource, collection: CollectionResource, warehouse: WarehouseResource
    ) -> AssetCheckResult:
        with warehouse.reader() as conn:
            [(newest,)] = conn.execute(f"SELECT max(ts) FROM {METRICS_TABLE}").fetchall()
        if newest is None:
            return AssetCheckResult(passed=False, metadata={"newest_period": "none"})
        age = clock() - (newest + timedelta(seconds=collection.period_seconds))
        return AssetCheckResult(
            passed=age <= timedelta(minutes=settings.freshness_minutes),
            metadata={
                "newest_period": newest.isoformat(),
                "age_minutes": round(age.total_seconds() / 60, 1),
                "bound_minutes": settings.freshness_minutes,
            },
        )

    @asset_check(
        asset=RDS_METRICS,
        description=(
            "Over the healing window: no duplicate keys, percentages within 0-100, no negative "
            "values, minimum <= average <= maximum, timestamps on period boundaries and not ahead."
        ),
    )
    def rds_metrics_sanity(
        aws: AwsResource, collection: CollectionResource, warehouse: WarehouseResource
    ) -> AssetCheckResult:
        now = clock()
        with warehouse.reader() as conn:
            counts = sanity_counts(
                conn, now - timedelta(days=settings.backfill_days), collection.period_seconds, now
            )
        return AssetCheckResult(passed=not any(counts.values()), metadata=counts)

    return [rds_metrics_completeness, rds_metrics_freshness, rds_metrics_sanity]
