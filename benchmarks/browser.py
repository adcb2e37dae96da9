"""Debian's Chromium, headless, driven through its chromedriver: what the dashboard's
benchmark measures pages with, and the browser tests drive (metrics_pipeline_tests/browser.py)."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def chromium_paths() -> tuple[str, str] | None:
    """Chromium and its driver, when both are installed."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


def start_chromium(width: int = 1400, height: int = 900) -> Chrome:
    """A new headless Chromium that logs its console and its network; FileNotFoundError when
    it is not installed (scripts/test.sh installs it)."""
    paths = chromium_paths()
    if paths is None:
        raise FileNotFoundError("chromium and chromedriver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in (*FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(paths[1]), options=options)
