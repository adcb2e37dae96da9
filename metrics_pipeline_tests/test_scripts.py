"""scripts/test.sh's preparation, run for real with the system tools it calls replaced on PATH
(no root or network needed): the browser test needs both Chromium and its chromedriver."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from metrics_pipeline_tests.helpers import PROJECT_ROOT


def tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "installed", [("chromium",), ("chromedriver",), ()], ids=["no_driver", "no_browser", "none"]
)
def test_test_sh_installs_the_browser_and_its_driver_when_either_is_missing(
    tmp_path: Path, installed: tuple[str, ...]
) -> None:
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    calls = tmp_path / "apt-get.calls"
    for name in installed:
        tool(bin_folder, name, "exit 0")
    tool(bin_folder, "id", "echo 0")  # as root, as in CI
    # apt-get records what it is asked; its install stops the script there (nothing else runs).
    tool(bin_folder, "apt-get", f'echo "$*" >> {calls}; [ "$1" = update ]')
    os.symlink(shutil.which("dirname"), bin_folder / "dirname")

    done = subprocess.run(
        [shutil.which("bash"), "scripts/test.sh"],
        cwd=PROJECT_ROOT,
        env={"PATH": str(bin_folder)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1, done.stderr
    assert calls.read_text().splitlines() == [
        "update -qq",
        "install -y -qq chromium chromium-driver",
    ]
