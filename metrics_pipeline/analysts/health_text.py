"""`metrics-pipeline health` on a terminal: the look-back's progress first, then a block per
instance that fits in 100 columns (the CSV, JSON and Parquet outputs keep every column of
`query.health_summary`, raw)."""

from __future__ import annotations

import pandas as pd

from metrics_pipeline.healing.progress import (
    WAITING_LINE,
    deployment_healing_runs,
    read_progress,
)
from metrics_pipeline.hours import utc_now
from metrics_pipeline.settings import StorageSettings, look_back_from_env

WIDTH = 100
GIB = 1024**3


def history_line(storage: StorageSettings) -> str:
    """How much of the gap sensor's look-back window is collected, and whether a healing run
    is queued or running (when DAGSTER_HOME names the deployment's Dagster instance)."""
    backfill_days, settle_delay = look_back_from_env()
    progress = read_progress(
        storage, utc_now(), backfill_days, settle_delay, deployment_healing_runs()
    )
    return progress.line() if progress else WAITING_LINE


def _number(value: float | None) -> str:
    if value is None or pd.isna(value):
        return "-"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    if abs(value) >= 1 or value == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _metric_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per metric; bytes in GiB, so that the widest figures fit."""
    rows = rows.reset_index(drop=True)
    in_bytes = rows["unit"] == "Bytes"
    scale = in_bytes.map({True: GIB, False: 1})
    figures = {
        name: [_number(value) for value in (rows[name].astype(float) / scale).tolist()]
        for name in ("minimum", "average", "maximum", "p95")
    }
    return pd.DataFrame(
        {
            "metric": rows["metric"],
            "unit": [
                "GiB" if b else (unit or "-")
                for b, unit in zip(in_bytes, rows["unit"], strict=True)
            ],
            **figures,
            "periods": rows["periods"],
            "missing": rows["hours_missing"],
            "empty": rows["hours_empty"],
        }
    )


def _wrapped(label: str, ranges: str) -> list[str]:
    """`label: ranges` in lines of at most WIDTH columns, broken between ranges only."""
    lines = [f"  {label}:"]
    for part in ranges.split(", "):
        if len(lines[-1]) + len(part) + 2 > WIDTH:
            lines[-1] += ","
            lines.append("    " + part)
        else:
            lines[-1] += (" " if lines[-1].endswith(":") else ", ") + part
    return lines


def health_text(summary: pd.DataFrame) -> str:
    """Per instance: a heading with its account, region and hours expected, its metrics'
    figures, and the hours missing (missing: no data though the pipeline should have it;
    empty: CloudWatch was asked after the hour settled and had nothing)."""
    if summary.empty:
        return "(no rows)"
    blocks = []
    for (account, region, instance), rows in summary.groupby(
        ["account_id", "region", "instance_id"], sort=True
    ):
        lines = [f"{instance} ({account}, {region}): {rows.hours_expected.max()} hours expected"]
        table = _metric_rows(rows).to_string(index=False)
        lines += ["  " + line for line in table.splitlines()]
        missing = {
            metric: hours
            for metric, hours in zip(rows["metric"], rows["missing_hours"], strict=True)
            if hours
        }
        if missing and len(set(missing.values())) == 1 and len(missing) == len(rows):
            lines += _wrapped("missing hours", next(iter(missing.values())))
        else:
            for metric, hours in missing.items():
                lines += _wrapped(f"missing hours of {metric}", hours)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
