"""Charts as self-contained files for a ticket or a slide (SVG or PNG), drawn by matplotlib's
Agg backend: no browser, no network."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt
import pandas as pd

FILE_FORMATS = ("svg", "png")


def write_metric_chart(
    frame: pd.DataFrame, title: str, unit: str | None, out: IO[bytes], fmt: str
) -> None:
    """The average as a line over the minimum-to-maximum band (where `frame` has them), as a
    file of `fmt` written to `out`."""
    if fmt not in FILE_FORMATS:
        raise ValueError(f"format: '{fmt}' is not a chart format; choose svg or png.")
    frame = frame.sort_values("ts")
    figure, axes = plt.subplots(figsize=(10, 4), dpi=100)
    try:
        if {"minimum", "maximum"} <= set(frame.columns):
            axes.fill_between(
                frame["ts"], frame["minimum"], frame["maximum"], alpha=0.2, label="min to max"
            )
        axes.plot(frame["ts"], frame["average"], label="average", gid="average")
        axes.set_title(title)
        axes.set_ylabel(unit or "")
        axes.legend(loc="upper left")
        figure.autofmt_xdate()
        figure.savefig(out, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    finally:
        plt.close(figure)


def chart_format(path: Path, asked: str | None) -> str:
    """The format asked for, else the file's suffix."""
    fmt = asked or path.suffix.lstrip(".").lower()
    if fmt not in FILE_FORMATS:
        raise ValueError(
            f"output: cannot tell a chart format from '{path.name}'; name it .svg or .png, "
            "or pass --format svg|png."
        )
    return fmt
