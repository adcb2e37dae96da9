"""The local PostgreSQL of the scale-out stack and its tests: logins with passwords, the
superuser on the server's own socket only, an owner-only folder, and nothing chowned through a
symlink planted in it.

The launcher as start.sh runs it: in the background of a script (where SIGINT starts out
ignored), stopped by Ctrl-C, TERM or HUP, its postgres with it; and the postmaster in the
launcher's process group, so stopping that group stops it."""

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from metrics_pipeline.local_postgres import server as local_postgres
from metrics_pipeline.local_postgres.server import READER, SUPERUSER, WRITER, LocalPostgres
from metrics_pipeline_tests.helpers import PROJECT_ROOT, free_port, wait_for

pytestmark = pytest.mark.scale_out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_logins_need_the_roles_password_and_the_superuser_has_none(
    postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSFILE")
    for role, database in ((WRITER, "dagster"), (READER, "lake")):
        with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
            psycopg2.connect(postgres.dsn(database, role))
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(postgres.dsn(database, role), password="guess")
        psycopg2.connect(postgres.dsn(database, role), password=postgres.password(role)).close()
    with pytest.raises(
        psycopg2.OperationalError,
        match=re.escape(
            'no pg_hba.conf entry for host "127.0.0.1", user "metrics", database "postgres"'
        ),
    ):
        psycopg2.connect(postgres.dsn("postgres", SUPERUSER), password="anything")
    with (
        psycopg2.connect(postgres.dsn("dagster"), password=postgres.password(WRITER)) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchall() == [(False,)]


@pytest.mark.e2e
def test_the_folder_is_the_owners_alone(postgres: LocalPostgres) -> None:
    folder = postgres.folder
    # As root, the server's user must pass through the folder to its own two.
    assert mode(folder) == (0o711 if os.geteuid() == 0 else 0o700)
    for private in (folder / "data", folder / "run"):
        assert mode(private) == 0o700
    for passfile in (postgres.passfile(WRITER), postgres.passfile(READER)):
        assert mode(passfile) == 0o600
        assert passfile.stat().st_uid == os.geteuid()
    # The authentication files are the starting user's, not the server's.
    assert (folder / "pg_hba.conf").stat().st_uid == os.geteuid()


@pytest.fixture
def stopped_server() -> Iterator[LocalPostgres]:
    folder = Path(tempfile.mkdtemp(prefix="metrics-postgres-"))
    server = local_postgres.start(folder, databases=("lake",))
    server.stop()
    yield server
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.e2e
@pytest.mark.skipif(os.geteuid() != 0, reason="only root starts the server as another user")
def test_a_restart_follows_no_symlink_planted_in_the_folder(
    stopped_server: LocalPostgres, tmp_path: Path
) -> None:
    """What the server's user (or its superuser, through COPY ... TO PROGRAM) could plant,
    pointing at a file only root may read: the next start as root leaves that file alone."""
    folder = stopped_server.folder
    target = tmp_path / "root-only"
    target.write_text("root's\n")
    target.chmod(0o600)
    for planted in (folder / "data" / "planted", folder / "run" / "planted"):
        planted.symlink_to(target)
    (folder / "pg_hba.conf").unlink()
    (folder / "pg_hba.conf").symlink_to(target)

    restarted = local_postgres.start(folder, stopped_server.port, databases=("lake",))
    try:
        assert (target.stat().st_uid, mode(target), target.read_text()) == (0, 0o600, "root's\n")
        assert not (folder / "pg_hba.conf").is_symlink()  # written afresh, not through it
        psycopg2.connect(restarted.dsn("lake", READER), password=restarted.password(READER)).close()
    finally:
        restarted.stop()


@pytest.mark.e2e
def test_a_data_folder_that_is_a_symlink_is_refused(
    stopped_server: LocalPostgres, tmp_path: Path
) -> None:
    folder = stopped_server.folder
    (folder / "data").rename(tmp_path / "data")
    (folder / "data").symlink_to(tmp_path / "data")
    with pytest.raises(RuntimeError, match="data must be a folder, not a link"):
        local_postgres.start(folder, stopped_server.port, databases=("lake",))


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


@pytest.mark.e2e
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
        with psycopg2.connect(
            f"host=127.0.0.1 port={port} user={WRITER} dbname=lake",
            passfile=str(folder / "postgres" / f"{WRITER}.pgpass"),
        ) as conn:
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
            psycopg2.connect(f"host=127.0.0.1 port={port} user={WRITER} dbname=lake", password="x")
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
        subprocess.run(["pkill", "-KILL", "-s", str(script.pid)], check=False)
