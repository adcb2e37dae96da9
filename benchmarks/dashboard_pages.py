"""How long the dashboard takes to draw its fleet and instance pages, in a real browser.

    .venv/bin/python -m benchmarks.dashboard_pages                 # 500 instances, 7 days
    .venv/bin/python -m benchmarks.dashboard_pages --instances 50 --days 2

A lake on this machine (start.sh's default warehouse) gets `--days` of the raw tier at 300 s
for every instance and default metric through the pipeline's writer (benchmarks.tick_growth's
fill); the dashboard is served by its own process (python -m metrics_pipeline.dashboard), as
start.sh serves it. Each page is loaded once to warm, then `--repeats` times: the time from
asking for the page to its charts drawn (every chart's SVG in place). The baseline, measured
the same way in the same run, is the app's page without a chart: what the browser and Dash
take whatever the data.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from benchmarks.analyst_queries import seed_inventory
from benchmarks.browser import start_chromium
from benchmarks.local_fleet import free_port
from benchmarks.tick_growth import fill, storage_env, warehouse_of
from metrics_pipeline.analysts.query import list_metrics
from metrics_pipeline.dashboard.app import FLEET_PAGE_ROWS
from metrics_pipeline.settings import StorageSettings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 2.0
# Drawn: each chart's plot holds its SVG, and as many charts as the page has.
DRAWN = """
const plots = Array.from(document.querySelectorAll(arguments[0] + ' .js-plotly-plot'));
const drawn = plots.filter((p) => p._fullData && p.querySelector('.main-svg')).length;
const messages = document.querySelectorAll('.message').length;
return drawn >= arguments[1] || (arguments[1] === 0 && messages > 0);
"""


@contextmanager
def served(env: dict[str, str], folder: Path) -> Iterator[str]:
    """The dashboard in its own process, on a free loopback port; its address."""
    port = free_port()
    log = folder / "dashboard.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "metrics_pipeline.dashboard", "--port", str(port)],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "dashboard on" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def draw_seconds(browser: Any, url: str, selector: str, charts: int, repeats: int) -> list[float]:
    """Seconds from asking for `url` to `charts` charts drawn under `selector`, after a first
    load that warms the server's and the browser's caches."""
    times = []
    for attempt in range(repeats + 1):
        browser.get("about:blank")
        began = time.perf_counter()
        browser.get(url)
        while not browser.execute_script(DRAWN, selector, charts):
            if time.perf_counter() - began > 120:
                raise RuntimeError(f"{url}: {charts} chart(s) not drawn in 120 s")
            time.sleep(0.02)
        if attempt:
            times.append(time.perf_counter() - began)
    return times


def measure_pages(root: Path, instances: int, days: int, repeats: int) -> dict[str, Any]:
    """The fleet's and an instance's page: median seconds to drawn, and the baseline's."""
    warehouse = warehouse_of("local_lake", root)
    seed_inventory(warehouse, instances)
    filled = fill(warehouse, root, days, 0)
    env = {**os.environ, **storage_env("local_lake", root)}
    env.pop("DAGSTER_HOME", None)
    metrics = len(list_metrics(StorageSettings.from_env(env)))
    with served(env, root) as url:
        browser = start_chromium()
        try:
            pages = {
                "baseline": draw_seconds(browser, f"{url}/none", "#page", 0, repeats),
                "fleet": draw_seconds(
                    browser, f"{url}/", "#page", 1 + min(FLEET_PAGE_ROWS, instances), repeats
                ),
                "instance": draw_seconds(
                    browser,
                    f"{url}/instance?"
                    + urlencode({"instance": "123456789012/us-east-1/db-0", "range": "week"}),
                    "#instance-charts",
                    metrics,
                    repeats,
                ),
            }
        finally:
            browser.quit()
    medians = {name: statistics.median(times) for name, times in pages.items()}
    return {
        "instances": instances,
        "days": days,
        "rows": filled.get("rds_metrics", 0),
        "metrics": metrics,
        **{f"{name}_seconds": round(seconds, 3) for name, seconds in medians.items()},
        **{
            f"{name}_to_baseline": round(medians[name] / medians["baseline"], 1)
            for name in ("fleet", "instance")
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dashboard-pages-") as folder:
        measured = measure_pages(Path(folder), args.instances, args.days, args.repeats)
    print(json.dumps(measured))


if __name__ == "__main__":
    main()
