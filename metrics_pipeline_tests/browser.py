"""The browser the UI tests drive: Debian's Chromium through its chromedriver, headless, with
its console and network logged. Missing, it fails a test in CI (where scripts/test.sh
installs it) and skips it elsewhere."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from benchmarks.browser import chromium_paths, start_chromium
from metrics_pipeline_tests.helpers import PROJECT_ROOT

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
LOOPBACK = ("127.0.0.1", "localhost")


@contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator[Chrome]:
    if chromium_paths() is None:
        if os.environ.get("CI"):
            pytest.fail(
                "Debian's chromium and chromium-driver are required (scripts/test.sh installs them)"
            )
        pytest.skip("chromium/chromedriver not installed (scripts/test.sh installs them as root)")
    browser = start_chromium(width, height)
    try:
        yield browser
    finally:
        browser.quit()


def console_errors(browser: Chrome) -> list[str]:
    """The console's errors since the last call."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def requested_urls(browser: Chrome) -> list[str]:
    """Every URL the page requested since the last call (the network log)."""
    urls = []
    for entry in browser.get_log("performance"):
        message: dict[str, Any] = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def beyond_loopback(urls: list[str]) -> list[str]:
    """The URLs that leave this machine (a data: or blob: URL does not)."""
    return [
        url
        for url in urls
        if urlsplit(url).scheme not in ("data", "blob", "about")
        and urlsplit(url).hostname not in LOOPBACK
    ]
