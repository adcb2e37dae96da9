"""The dashboard's pages as images for docs/analysts.md, from the browser test's stack (the
local AWS's default fleet, its last six settled hours collected):

    .venv/bin/python scripts/dashboard_screenshots.py   # the pages' images, into docs/images/
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.browser import start_chromium  # noqa: E402
from metrics_pipeline_tests.dashboard_stack import dashboard_stack  # noqa: E402

IMAGES = PROJECT_ROOT / "docs" / "images"
WRITER = "shop-aurora-1"  # the default fleet's Aurora writer, with Performance Insights on
DRAWN = """
return Array.from(document.querySelectorAll('.js-plotly-plot'))
  .filter((p) => p._fullData && p.querySelector('.main-svg')).length;
"""


def settled_charts(browser: object, seconds: float = 1.5) -> int:
    """The charts drawn once their number has not changed for `seconds`."""
    last, since = -1, time.monotonic()
    while True:
        drawn = browser.execute_script(DRAWN)  # type: ignore[attr-defined]
        if drawn != last:
            last, since = drawn, time.monotonic()
        elif drawn and time.monotonic() - since >= seconds:
            return int(drawn)
        time.sleep(0.2)


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="dashboard-screenshots-") as folder,
        dashboard_stack(Path(folder), hours=6) as stack,
    ):
        writer = stack.simulated(WRITER)
        key = f"{writer.account_id}/{writer.region}/{WRITER}"
        pages = {
            "fleet": "/",
            "instance": "/instance?" + urlencode({"instance": key, "range": "day"}),
            "coverage": "/coverage",
            "rightsizing": "/rightsizing",
        }
        browser = start_chromium(1280, 1400)
        try:
            for name, path in pages.items():
                browser.get(stack.url + path)
                charts = settled_charts(browser)
                image = IMAGES / f"dashboard-{name}.png"
                browser.save_screenshot(str(image))
                print(f"{image.relative_to(PROJECT_ROOT)}: {charts} chart(s)")
        finally:
            browser.quit()


if __name__ == "__main__":
    main()
