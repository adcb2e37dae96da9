"""The coverage page's cells: collected, empty, missing or being healed, as the fetch log and
the unfinished healing runs say, for the hours each instance existed."""

from datetime import datetime, timedelta

from metrics_pipeline.dashboard.coverage import Cell, coverage
from metrics_pipeline.hours import HOUR
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry

T0 = datetime(2026, 12, 1, 0)
HOURS = [T0 + n * HOUR for n in range(6)]
OLD = Instance("111111111111", "us-east-1", "orders-db")
NEW = Instance("111111111111", "us-east-1", "newcomer-db")


def test_each_hour_is_what_the_fetch_log_and_the_healing_runs_say() -> None:
    inventory = [
        InventoryEntry(OLD, T0 - timedelta(days=30), T0 - timedelta(days=30), T0 + 6 * HOUR),
        # Created during the fourth hour: the hours before it are not its.
        InventoryEntry(NEW, T0 + 3 * HOUR + timedelta(minutes=20), T0 + 4 * HOUR, T0 + 6 * HOUR),
    ]
    settled = {(OLD, HOURS[0]): 24, (OLD, HOURS[1]): 0, (NEW, HOURS[5]): 12}
    healing = [(HOURS[2], HOURS[3])]
    frame = coverage(HOURS, inventory, settled, healing)
    cells = {(row.instance_id, row.hour): row.cell for row in frame.itertuples()}
    assert cells == {
        ("orders-db", HOURS[0]): Cell.COLLECTED,
        ("orders-db", HOURS[1]): Cell.EMPTY,
        ("orders-db", HOURS[2]): Cell.HEALING,
        ("orders-db", HOURS[3]): Cell.HEALING,
        ("orders-db", HOURS[4]): Cell.MISSING,
        ("orders-db", HOURS[5]): Cell.MISSING,
        ("newcomer-db", HOURS[3]): Cell.HEALING,
        ("newcomer-db", HOURS[4]): Cell.MISSING,
        ("newcomer-db", HOURS[5]): Cell.COLLECTED,
    }
