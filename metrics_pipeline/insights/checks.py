"""The check of Performance Insights' load: in every period, each group's keys (its `other`
included) add up to the instance's total, as PI's keys are the parts of its total."""

from datetime import datetime, timedelta

import duckdb
from dagster import AssetCheckResult, AssetChecksDefinition, AssetKey, asset_check

from metrics_pipeline.catalog import PI_TOTAL
from metrics_pipeline.hours import Clock
from metrics_pipeline.insights.answers import SUM_TOLERANCE
from metrics_pipeline.settings import Settings
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.tables import PI_LOAD, PI_PERSONAL_LOAD


def unbalanced_groups(
    conn: duckdb.DuckDBPyConnection, start: datetime, now: datetime
) -> dict[str, int]:
    """Since `start`: (instance, period, group)s whose keys add up to more than the total, or
    to less (a remainder PI held back and `other` lacks); and rows ahead of `now`."""
    keys = " UNION ALL ".join(
        f"SELECT account_id, region, instance_id, ts, dimension_group, active_sessions "
        f"FROM {table.name} WHERE ts >= $start"
        for table in (PI_LOAD, PI_PERSONAL_LOAD)
    )
    [row] = conn.execute(
        f"""
        WITH everything AS ({keys}),
        totals AS (
            SELECT account_id, region, instance_id, ts, active_sessions AS total
            FROM everything WHERE dimension_group = '{PI_TOTAL}'
        ),
        sums AS (
            SELECT account_id, region, instance_id, ts, dimension_group,
                   sum(active_sessions) AS summed
            FROM everything WHERE dimension_group <> '{PI_TOTAL}' GROUP BY ALL
        )
        SELECT
            count(*) FILTER (summed > coalesce(total, 0) + $tolerance * greatest(1, summed)),
            count(*) FILTER (summed < total - $tolerance * greatest(1, total)),
            (SELECT count(*) FROM everything WHERE ts > $now)
        FROM sums LEFT JOIN totals USING (account_id, region, instance_id, ts)
        """,
        {"start": start, "now": now, "tolerance": SUM_TOLERANCE},
    ).fetchall()
    names = ("keys_above_total", "keys_below_total", "periods_ahead")
    return dict(zip(names, (int(v) for v in row), strict=True))


def balance_check(asset: AssetKey, settings: Settings, clock: Clock) -> AssetChecksDefinition:
    @asset_check(
        asset=asset,
        name=f"{asset.path[-1]}_balance",
        description=(
            "Over the healing window: in every period each dimension group's keys, `other` "
            "included, add up to the instance's total load; no period ahead of now."
        ),
    )
    def balance(warehouse: WarehouseResource) -> AssetCheckResult:
        now = clock()
        with warehouse.reader() as conn:
            counts = unbalanced_groups(conn, now - timedelta(days=settings.backfill_days), now)
        return AssetCheckResult(passed=not any(counts.values()), metadata=counts)

    return balance
