"""The project's local AWS with a generated fleet, in a process of its own, for the
benchmarks: its CPU is not theirs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class LocalAws:
    endpoint: str
    pid: int

    def cpu_seconds(self) -> float:
        """The CPU time the server has used so far (user and system, from /proc): on a shared
        machine, the part of a benchmark's wall time that was the simulator's."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def local_aws(
    instances: int, folder: Path, age_days: int = 30, pi_days: int | None = None
) -> Iterator[LocalAws]:
    """The local AWS serving `instances` generated instances created `age_days` ago, with
    Performance Insights on (kept `pi_days`) when set."""
    port = free_port()
    log = folder / f"local_aws_{instances}.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "metrics_pipeline.local_aws", "--port", str(port),
             "--fleet-size", str(instances), "--fleet-age-days", str(age_days),
             "--new-instance-after", "0", "--late-minutes", "0",
             *(["--fleet-pi-days", str(pi_days)] if pi_days else [])],
            cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "local AWS on" not in log.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the local AWS did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield LocalAws(f"http://127.0.0.1:{port}", server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
