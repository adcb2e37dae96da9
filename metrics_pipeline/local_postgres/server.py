"""Starts a local PostgreSQL: the Dagster instance's storage and the DuckLake catalog of the
scale-out stack, on one machine.

    python -m metrics_pipeline.local_postgres --folder .scale-out/postgres --port 5432

PostgreSQL refuses to run as root, so as root its binaries run as an unprivileged user
(`nobody` unless --os-user names another) that owns the data folder.
Trust authentication on 127.0.0.1 only: the server is for one machine's tests and demos.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

SUPERUSER = "metrics"
# The databases the scale-out stack uses: Dagster's runs, events and schedules; the lake's catalog.
DATABASES = ("dagster", "lake")


@dataclass(frozen=True)
class LocalPostgres:
    folder: Path
    port: int
    os_user: str | None
    # The postmaster, a child of this process and in its process group: whoever stops the
    # group stops it too (pg_ctl would have detached it into a session of its own).
    process: subprocess.Popen[bytes] = field(compare=False, repr=False)

    def dsn(self, database: str) -> str:
        """A libpq connection string (the form DuckDB's postgres extension takes)."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """A fast shutdown (SIGINT: clients disconnected, everything committed kept)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


DEFAULT_OS_USER = "nobody"


def _binaries() -> Path:
    """The pgserver wheel's PostgreSQL, found without importing the package (whose import
    creates folders in the user's home)."""
    spec = find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The local PostgreSQL needs the pgserver package: reinstall.")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _as_user(os_user: str | None) -> dict:
    """subprocess arguments that run a PostgreSQL binary as `os_user` (None: as this process)."""
    if not os_user:
        return {}
    account = pwd.getpwnam(os_user)
    return {
        "user": account.pw_uid,
        "group": account.pw_gid,
        "extra_groups": [],
        "env": {**os.environ, "LC_ALL": "C", "HOME": str(Path.cwd())},
        "cwd": "/",
    }


def _run(os_user: str | None, binary: str, *args: object) -> str:
    done = subprocess.run(
        [str(_binaries() / binary), *map(str, args)],
        capture_output=True,
        text=True,
        **_as_user(os_user),
    )
    if done.returncode != 0:
        raise RuntimeError(f"{binary} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def start(
    folder: Path,
    port: int = 0,
    databases: tuple[str, ...] = DATABASES,
    os_user_if_root: str = DEFAULT_OS_USER,
) -> LocalPostgres:
    """A running server whose data lives in `folder` (created, or reused from an earlier start),
    with `databases` created."""
    os_user = os_user_if_root if os.geteuid() == 0 else None
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    if os_user:
        account = pwd.getpwnam(os_user)
        for path in (folder, *folder.rglob("*")):
            os.chown(path, account.pw_uid, account.pw_gid)
        reachable = subprocess.run(["test", "-w", str(folder)], user=account.pw_uid, check=False)
        if reachable.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL runs as {os_user} (it refuses root), who cannot reach {folder}: "
                "choose a folder whose parents others may traverse, e.g. under /tmp."
            )
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        _run(os_user, "initdb", "-D", data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8")
    server = _start_postmaster(folder, port or free_port(), os_user)
    existing = _run(
        os_user, "psql", "-h", "127.0.0.1", "-p", server.port, "-U", SUPERUSER, "-d", "postgres",
        "-Atc", "SELECT datname FROM pg_database",
    ).split()  # fmt: skip
    for database in databases:
        if database not in existing:
            _run(
                os_user, "createdb", "-h", "127.0.0.1", "-p", server.port, "-U", SUPERUSER, database
            )
    return server


def _start_postmaster(folder: Path, port: int, os_user: str | None) -> LocalPostgres:
    """The postmaster as this process's child, once it accepts connections."""
    command = [
        str(_binaries() / "postgres"), "-D", str(folder / "data"), "-p", str(port),
        "-h", "127.0.0.1", "-k", str(folder), "-c", "max_connections=200",
    ]  # fmt: skip
    with (folder / "server.log").open("ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, **_as_user(os_user)
        )
    server = LocalPostgres(folder, port, os_user, process)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        ready = subprocess.run(
            [str(_binaries() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
            check=False,
        )
        if ready.returncode == 0:
            return server
        time.sleep(0.1)
    if process.poll() is None:
        process.kill()
        process.wait()
    log_tail = (folder / "server.log").read_text(errors="replace").strip().splitlines()[-3:]
    raise RuntimeError(f"PostgreSQL did not start: {' | '.join(log_tail)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m metrics_pipeline.local_postgres",
        description="A PostgreSQL on 127.0.0.1 with the databases "
        + " and ".join(DATABASES)
        + " (trust authentication: for one machine only).",
    )
    parser.add_argument("--folder", type=Path, default=Path(".scale-out/postgres"))
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument(
        "--os-user",
        default=DEFAULT_OS_USER,
        help="who runs PostgreSQL when started as root (it refuses root)",
    )
    args = parser.parse_args(argv)
    server = start(args.folder.resolve(), args.port, os_user_if_root=args.os_user)
    print(f"PostgreSQL on {server.url('<database>')} (databases: {', '.join(DATABASES)})")
    print(f"  DuckLake catalog: METRICS_WAREHOUSE=ducklake:postgres:{server.dsn('lake')}")
    print("Ctrl-C stops it.", flush=True)
    # Stopped by Ctrl-C, a TERM or a HUP, whether started in a terminal or in the background
    # (where SIGINT starts out ignored); or when its postgres stops on its own.
    stopping = threading.Event()
    for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop_signal, lambda *_: stopping.set())
    try:
        while not stopping.wait(1) and server.process.poll() is None:
            pass
    finally:
        server.stop()
