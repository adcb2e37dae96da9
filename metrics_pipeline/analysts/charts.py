"""Charts as self-contained files for a ticket or a slide (SVG or PNG), drawn by matplotlib's
Agg backend: no browser, no network. `metrics-pipeline plot` writes them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import IO

import pandas as pd

FILE_FORMATS = ("svg", "png")
# More lines than this read as noise, not as a chart.
MAX_LINES = 12


def write_chart(
    lines: Mapping[str, pd.DataFrame], title: str, unit: str | None, out: IO[bytes], fmt: str
) -> None:
    """Each line's average over time, over its minimum-to-maximum band where its frame has one
    (columns ts, average, and optionally minimum and maximum), as a file of `fmt` written to
    `out`. Each line's path carries its label as its id."""
    if fmt not in FILE_FORMATS:
        raise ValueError(f"format: '{fmt}' is not a chart format; choose svg or png.")
    # Imported here: the other commands start without matplotlib.
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: files only, never a window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 4), dpi=100)
    try:
        for label, frame in lines.items():
            frame = frame.sort_values("ts")
            if {"minimum", "maximum"} <= set(frame.columns):
                axes.fill_between(frame["ts"], frame["minimum"], frame["maximum"], alpha=0.15)
            axes.plot(frame["ts"], frame["average"], label=label, gid=label)
        axes.set_title(title)
        axes.set_ylabel(unit or "")
        axes.legend(loc="upper left", fontsize="small")
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
