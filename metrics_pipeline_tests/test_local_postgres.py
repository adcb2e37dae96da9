"""`python -m metrics_pipeline.local_postgres`, as start.sh runs it: in the background of a
script (where SIGINT starts out ignored), stopped by Ctrl-C, TERM or HUP, its postgres with
it; and the postmaster in the launcher's process group, so stopping that group stops it."""

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from metrics_pipeline_tests.helpers import PROJECT_ROOT, free_port, wait_for

pytestmark = pytest.mark.scale_out


@pytest.fixture
def folder() -> Iterator[Path]:
    """In the system's temporary folder: as root PostgreSQL runs as another user, who cannot
    reach pytest's private ones."""
    path = Path(tempfile.mkdtemp(prefix="metrics-local-postgres-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_the_launcher_in_a_scripts_background_stops_its_postgres(
    folder: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    log = folder / "launcher.log"
    # As start.sh's background commands: a non-interactive shell starts them ignoring SIGINT.
    script = subprocess.Popen(
        [
            "bash",
            "-c",
            '"$@" & echo $! > "$0.pid"; wait',
            str(folder / "launcher"),
            sys.executable,
            "-u",
            "-m",
            "metrics_pipeline.local_postgres",
            "--folder",
            str(folder / "postgres"),
            "--port",
            str(port),
        ],
        cwd=PROJECT_ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: "Ctrl-C stops it." in log.read_text(), 120, "the launcher's banner")
        launcher = int((folder / "launcher.pid").read_text())
        postmaster = int((folder / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
        with psycopg2.connect(f"host=127.0.0.1 port={port} user=metrics dbname=lake") as conn:
            assert conn.server_version >= 160000
        # In the launcher's process group, below it: not detached as pg_ctl would.
        assert os.getpgid(postmaster) == os.getpgid(launcher)
        assert Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(
            launcher
        )

        os.kill(launcher, stop_signal)
        script.wait(timeout=60)
        wait_for(lambda: not alive(postmaster), 30, "the postmaster to exit")
        assert not alive(launcher)
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(f"host=127.0.0.1 port={port} user=metrics dbname=lake")
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
        subprocess.run(["pkill", "-KILL", "-s", str(script.pid)], check=False)
