"""The dashboard in a real browser: a warehouse collected from the local AWS, the dashboard
served by its own process (python -m metrics_pipeline.dashboard), each page opened in Chromium
until its charts are drawn. What a chart plots is compared with what the local AWS's
generator holds (read directly, not through the reading code), the console must stay free of
errors and no request may leave loopback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest

from metrics_pipeline.hours import HOUR
from metrics_pipeline.local_aws.workload import workload
from metrics_pipeline.rightsizing.classes import instance_class
from metrics_pipeline_tests.browser import (
    ARTIFACTS,
    beyond_loopback,
    chromium,
    console_errors,
    requested_urls,
)
from metrics_pipeline_tests.dashboard_stack import PERIOD, Served, dashboard_stack

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("dashboard_browser")]

MINUTE = 60
# An instance of the default fleet with Performance Insights on.
WRITER = "shop-aurora-1"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with dashboard_stack(tmp_path_factory.mktemp("dashboard"), hours=2) as stack:
        yield stack


PLOTTED = """
const plots = document.querySelectorAll(arguments[0] + ' .js-plotly-plot');
if (plots.length === 0 || !plots[0]._fullData || !plots[0].querySelector('.main-svg')) {
  return null;
}
const list = (v) => (v == null ? null : Array.from(v, (e) => (e && e.length !== undefined
  && typeof e !== 'string' ? Array.from(e) : e)));
return plots[0]._fullData.map((t) => ({name: t.name, x: list(t.x), y: list(t.y), z: list(t.z)}));
"""


def plotted(browser: Any, path: str, selector: str, screenshot: str) -> list[dict[str, Any]]:
    """The traces the chart under `selector` draws on the page at `path`, once drawn."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(path)
    traces = WebDriverWait(browser, 60, poll_frequency=0.5).until(
        lambda b: b.execute_script(PLOTTED, selector)
    )
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / screenshot))
    return list(traces)


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("T", " ")[:19])


def by_name(traces: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {trace["name"]: trace for trace in traces}


def test_each_page_plots_what_the_local_aws_served_offline(served: Served) -> None:
    writer = served.simulated(WRITER)
    key = f"{writer.account_id}/{writer.region}/{WRITER}"
    cpu = served.averages(WRITER, "CPUUtilization")
    # Two hours of periods: the writer existed and ran throughout.
    assert len(cpu) == 2 * 3600 // PERIOD
    with chromium() as browser:
        # Instance: the CPU's average, minute by minute, as served.
        query = urlencode({"instance": key, "range": "day"})
        instance = by_name(
            plotted(browser, f"{served.url}/instance?{query}", "#metric-CPUUtilization",
                    "dashboard_instance.png")
        )  # fmt: skip
        average = instance["average"]
        drawn = dict(zip(map(moment, average["x"]), average["y"], strict=True))
        assert drawn.keys() == cpu.keys()
        assert np.allclose([drawn[t] for t in cpu], list(cpu.values()))
        # Its Performance Insights load, stacked: the wait events add up to the total load.
        load = plotted(browser, f"{served.url}/instance?{query}", "#pi-load", "dashboard_pi.png")
        first = int(served.hours[0].replace(tzinfo=UTC).timestamp()) // MINUTE
        minutes = np.arange(first, first + 120, dtype=np.int64)
        total = workload(
            served.local.simulator.profile(writer.account_id, writer.region, WRITER),
            writer.engine, minutes, np.ones(120, dtype=bool),
        ).total  # fmt: skip
        stacked: dict[datetime, float] = {}
        for trace in load:
            for x, y in zip(trace["x"], trace["y"], strict=True):
                stacked[moment(x)] = stacked.get(moment(x), 0.0) + y
        stamps = [served.hours[0] + timedelta(minutes=m) for m in range(120)]
        assert np.allclose([stacked.get(ts, 0.0) for ts in stamps], total)

        # Fleet: the heatmap's cell of the writer's day is the p95 of its minutes that day.
        fleet = plotted(browser, f"{served.url}/", "#fleet-heatmap", "dashboard_fleet.png")
        [heat] = fleet
        row = heat["y"].index(WRITER)
        for column, day in enumerate(heat["x"]):
            minutes_of_day = [v for t, v in cpu.items() if t.date() == moment(day).date()]
            assert heat["z"][row][column] == pytest.approx(np.percentile(minutes_of_day, 95))

        # Coverage: the writer's two collected hours are collected, the rest missing.
        [cells] = plotted(browser, f"{served.url}/coverage", "#coverage", "dashboard_coverage.png")
        row = next(n for n, label in enumerate(cells["y"]) if label.startswith(f"{WRITER} ("))
        states = {moment(x): cells["z"][row][n] for n, x in enumerate(cells["x"])}
        assert {h for h, code in states.items() if code == 0} == set(served.hours)
        assert {code for h, code in states.items() if h not in served.hours} == {2}

        errors = console_errors(browser)
        leaving = beyond_loopback(requested_urls(browser))
    assert errors == []
    assert leaving == []


def test_the_rightsizing_chart_is_the_evidence_against_the_class(served: Served) -> None:
    import duckdb

    with duckdb.connect(str(served.folder / "metrics.duckdb"), read_only=True) as conn:
        flagged = conn.execute(
            "SELECT account_id, region, instance_id, instance_class, verdict FROM rds_rightsizing "
            "WHERE verdict IN ('over-provisioned', 'under-provisioned') AND cluster_role IS NULL "
            "ORDER BY instance_id"
        ).fetchall()
    account_id, region, instance_id, class_name, _ = flagged[0]
    known = instance_class(class_name)
    assert known is not None
    cpu = served.averages(instance_id, "CPUUtilization")
    with chromium() as browser:
        query = urlencode({"instance": f"{account_id}/{region}/{instance_id}"})
        traces = by_name(
            plotted(browser, f"{served.url}/rightsizing?{query}", "#evidence-chart",
                    "dashboard_rightsizing.png")
        )  # fmt: skip
        errors = console_errors(browser)
        leaving = beyond_loopback(requested_urls(browser))
    used = traces["vCPUs in use"]
    for x, y in zip(used["x"], used["y"], strict=True):
        hour = moment(x)
        minutes = [v for t, v in cpu.items() if hour <= t < hour + HOUR]
        assert y == pytest.approx(np.percentile(minutes, 95) * known.vcpus / 100)
    assert [moment(x) for x in used["x"]] == served.hours
    assert traces[f"{class_name} (now): {known.vcpus:g}"]["y"] == [known.vcpus, known.vcpus]
    assert errors == []
    assert leaving == []


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ({"instance": "' OR 1=1 --", "range": "day"}, "is not in the inventory"),
        ({"instance": "../../etc/passwd", "range": "day"}, "is not in the inventory"),
        ({"instance": "x" * 5000, "range": "day"}, "is not in the inventory"),
        ({"range": "year"}, "range: 'year' is not offered"),
        ({"range": "day"}, "instance: choose one"),
    ],
)
def test_a_hostile_address_gets_a_message_not_a_chart(
    served: Served, query: dict[str, str], shown: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as browser:
        browser.get(f"{served.url}/instance?{urlencode(query)}")
        text = WebDriverWait(browser, 60, poll_frequency=0.5).until(
            lambda b: "".join(e.text for e in b.find_elements(By.CLASS_NAME, "message"))
        )
        errors = console_errors(browser)
    assert shown in text
    assert errors == []
