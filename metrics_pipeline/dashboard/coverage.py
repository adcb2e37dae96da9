"""What the gap sensor sees, cell by cell: each instance's hours of the healing window as
collected, empty (CloudWatch had nothing, asked after the hour settled), missing, or being
healed (inside the range of a healing run not finished yet). Pure: the callers read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum

import pandas as pd

from metrics_pipeline.hours import HOUR
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry


class Cell(StrEnum):
    COLLECTED = "collected"
    EMPTY = "empty"
    MISSING = "missing"
    HEALING = "being healed"


def coverage(
    hours: Sequence[datetime],
    inventory: Iterable[InventoryEntry],
    settled: Mapping[tuple[Instance, datetime], int],
    healing: Iterable[tuple[datetime, datetime]],
) -> pd.DataFrame:
    """One row per instance and hour it existed in: its cell. `settled`: the datapoints of each
    settled (instance, hour) of the fetch log; `healing`: the [first, last] hours of each
    unfinished healing run."""
    ranges = list(healing)
    rows = []
    for entry in inventory:
        for hour in hours:
            if not entry.existed_during(hour, hour + HOUR):
                continue
            datapoints = settled.get((entry.instance, hour))
            if datapoints is not None:
                cell = Cell.COLLECTED if datapoints else Cell.EMPTY
            elif any(first <= hour <= last for first, last in ranges):
                cell = Cell.HEALING
            else:
                cell = Cell.MISSING
            rows.append({**vars(entry.instance), "hour": hour, "cell": str(cell)})
    return pd.DataFrame(rows, columns=["account_id", "region", "instance_id", "hour", "cell"])
