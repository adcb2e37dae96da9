"""Starts a local PostgreSQL: the Dagster instance's storage and the DuckLake catalog of the
scale-out stack, on one machine.

    python -m metrics_pipeline.local_postgres --folder .scale-out/postgres --port 5432

Three roles, as a real deployment has:
- `metrics`, the superuser, only for setting the server up: it connects through the server's
  own socket (in a folder only the server's OS user may enter), authenticated by that OS user
  (peer), never over TCP;
- `metrics_writer`, the pipeline's: owns the databases `dagster` and `lake`, not superuser;
- `metrics_reader`, the analysts': may connect to the lake's databases only and read their
  tables (SELECT), nothing else.
Both log in on 127.0.0.1 only, with passwords (SCRAM) kept in `<folder>/<role>.pgpass`, one
file per role that only this OS user may read: point libpq's PGPASSFILE at it.

PostgreSQL refuses to run as root, so as root its binaries run as an unprivileged user
(`nobody` unless --os-user names another), which owns the data folder and the socket's folder
only: the authentication files and passwords stay the starting user's, so the server's user
cannot change who may log in. Nothing is ever chowned recursively, nor through a symlink.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

SUPERUSER = "metrics"
WRITER = "metrics_writer"
READER = "metrics_reader"
# The databases the scale-out stack uses: Dagster's runs, events and schedules; the lake's catalog.
DATABASES = ("dagster", "lake")
# A lake's catalog database is named `lake` or `lake_<suffix>`; only those admit the reader.
LAKE_DATABASE = re.compile(r"lake(_\w+)?")
# Analysts' connections at once (each query may open a few): a reader cannot take every slot.
READER_CONNECTION_LIMIT = 64
MAX_CONNECTIONS = 200
DEFAULT_OS_USER = "nobody"


@dataclass(frozen=True)
class LocalPostgres:
    folder: Path
    port: int
    os_user: str | None
    # The postmaster, a child of this process and in its process group: whoever stops the
    # group stops it too (pg_ctl would have detached it into a session of its own).
    process: subprocess.Popen[bytes] = field(compare=False, repr=False)

    def dsn(self, database: str, role: str = WRITER) -> str:
        """A libpq connection string (the form DuckDB's postgres extension takes), without the
        password: libpq reads it from PGPASSFILE (passfile(role))."""
        return f"host=127.0.0.1 port={self.port} user={role} dbname={database}"

    def url(self, database: str, role: str = WRITER) -> str:
        return f"postgresql://{role}@127.0.0.1:{self.port}/{database}"

    def passfile(self, role: str) -> Path:
        """The role's password in libpq's password file format (PGPASSFILE)."""
        return self.folder / f"{role}.pgpass"

    def password(self, role: str) -> str:
        return _read_password(self.passfile(role))

    def create_lake_database(self, name: str) -> None:
        """A new catalog database: the writer owns it, the reader may connect and read it."""
        if not LAKE_DATABASE.fullmatch(name):
            raise ValueError(f"a lake's database is named lake or lake_<letters, digits>: {name}")
        _superuser_sql(self, "postgres", f"CREATE DATABASE {name} OWNER {WRITER}")
        _grant(self, name)

    def stop(self) -> None:
        """A fast shutdown (SIGINT: clients disconnected, everything committed kept)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _binaries() -> Path:
    """The pgserver wheel's PostgreSQL, found without importing the package (whose import
    creates folders in the user's home)."""
    spec = find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The local PostgreSQL needs pgserver, from the project's local extra: "
            "pip install -e '.[local]'"
        )
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


def _run(os_user: str | None, binary: str, *args: object, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(_binaries() / binary), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        **_as_user(os_user),
    )
    if done.returncode != 0:
        raise RuntimeError(f"{binary} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _superuser_sql(server: LocalPostgres, database: str, sql: str) -> str:
    """SQL as the superuser, through the server's socket (given on stdin: no password or
    statement shows in the process list)."""
    return _run(
        server.os_user, "psql", "-h", server.folder / "run", "-p", server.port, "-U", SUPERUSER,
        "-d", database, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-f", "-", stdin=sql,
    )  # fmt: skip


def _private_folder(path: Path, account: pwd.struct_passwd | None) -> None:
    """`path` a real folder (never a symlink) that only the server's OS user may enter."""
    path.mkdir(mode=0o700, exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise RuntimeError(f"The local PostgreSQL's {path} must be a folder, not a link.")
    if account:
        os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
    os.chmod(path, 0o700, follow_symlinks=False)


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Writes `path` afresh, refusing a symlink there (O_NOFOLLOW)."""
    if path.is_symlink():
        path.unlink()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), mode)
        file.write(text)


def _read_password(passfile: Path) -> str:
    return passfile.read_text().strip().rsplit(":", 1)[1]


def _password(passfile: Path, role: str) -> str:
    """The role's password: kept from an earlier start, or a new random one."""
    if passfile.exists() and not passfile.is_symlink():
        return _read_password(passfile)
    password = secrets.token_urlsafe(24)  # letters, digits, - and _: nothing to escape
    _write_private(passfile, f"127.0.0.1:*:*:{role}:{password}\n")
    return password


def _os_user_name(os_user: str | None) -> str:
    return os_user or pwd.getpwuid(os.geteuid()).pw_name


def _authentication_files(folder: Path, os_user: str | None) -> tuple[Path, Path]:
    """pg_hba.conf and pg_ident.conf, the starting user's (the server's user reads them)."""
    hba = folder / "pg_hba.conf"
    ident = folder / "pg_ident.conf"
    _write_private(
        hba,
        "# TYPE  DATABASE        USER            ADDRESS         METHOD\n"
        f"local   all             {SUPERUSER}         peer map=server\n"
        f"host    all             {WRITER}  127.0.0.1/32    scram-sha-256\n"
        f"host    /^{LAKE_DATABASE.pattern}$  {READER}  127.0.0.1/32    scram-sha-256\n",
        0o644,
    )
    _write_private(ident, f"server  {_os_user_name(os_user)}  {SUPERUSER}\n", 0o644)
    return hba, ident


def _setup_roles(server: LocalPostgres, databases: tuple[str, ...]) -> None:
    writer = _password(server.passfile(WRITER), WRITER)
    reader = _password(server.passfile(READER), READER)
    existing = _superuser_sql(server, "postgres", "SELECT datname FROM pg_database").split()
    statements = [
        f"DO $$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        for role in (WRITER, READER)
    ]
    statements += [
        f"ALTER ROLE {WRITER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
        f"NOBYPASSRLS PASSWORD '{writer}';",
        f"ALTER ROLE {READER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
        f"NOBYPASSRLS CONNECTION LIMIT {READER_CONNECTION_LIMIT} PASSWORD '{reader}';",
        # No role connects where it is not granted: neither to these nor to databases to come.
        "REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 FROM PUBLIC;",
    ]
    statements += [
        f"CREATE DATABASE {database} OWNER {WRITER};"
        for database in databases
        if database not in existing
    ]
    _superuser_sql(server, "postgres", "\n".join(statements))
    for database in databases:
        _grant(server, database)


def _grant(server: LocalPostgres, database: str) -> None:
    """Who may connect to `database`: the writer; the reader too for a lake's catalog, with
    SELECT on its tables, present and future, and nothing more."""
    statements = [
        f"REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC;",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {WRITER};",
    ]
    if LAKE_DATABASE.fullmatch(database):
        statements += [
            f"GRANT CONNECT ON DATABASE {database} TO {READER};",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER};",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {WRITER} IN SCHEMA public "
            f"GRANT SELECT ON TABLES TO {READER};",
        ]
    _superuser_sql(server, database, "\n".join(statements))


def start(
    folder: Path,
    port: int = 0,
    databases: tuple[str, ...] = DATABASES,
    os_user_if_root: str = DEFAULT_OS_USER,
) -> LocalPostgres:
    """A running server whose data lives in `folder` (created, or reused from an earlier start),
    with `databases` created and the writer and reader roles set up."""
    os_user = os_user_if_root if os.geteuid() == 0 else None
    account = pwd.getpwnam(os_user) if os_user else None
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Owner-only; as root the server's user may pass through to its own two folders.
    os.chmod(folder, 0o711 if account else 0o700)
    data, run = folder / "data", folder / "run"
    _private_folder(data, account)
    _private_folder(run, account)  # the socket and the server's log
    if account:
        reachable = subprocess.run(["test", "-w", str(run)], user=account.pw_uid, check=False)
        if reachable.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL runs as {os_user} (it refuses root), who cannot reach {folder}: "
                "choose a folder whose parents others may traverse, e.g. under /tmp."
            )
    if not (data / "PG_VERSION").exists():
        if any(data.iterdir()):
            raise RuntimeError(f"{data} holds files but no PostgreSQL data: remove it.")
        _run(os_user, "initdb", "-D", data, "-U", SUPERUSER, "--auth=reject", "-E", "UTF8")
    hba, ident = _authentication_files(folder, os_user)
    server = _start_postmaster(folder, port or free_port(), os_user, hba, ident)
    _setup_roles(server, databases)
    return server


def _start_postmaster(
    folder: Path, port: int, os_user: str | None, hba: Path, ident: Path
) -> LocalPostgres:
    """The postmaster as this process's child, once it accepts connections."""
    run = folder / "run"
    command = [
        str(_binaries() / "postgres"), "-D", str(folder / "data"), "-p", str(port),
        "-h", "127.0.0.1", "-k", str(run), "-c", f"max_connections={MAX_CONNECTIONS}",
        "-c", f"hba_file={hba}", "-c", f"ident_file={ident}",
        "-c", "unix_socket_permissions=0700",
    ]  # fmt: skip
    log_path = run / "server.log"
    with log_path.open("ab") as log:
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
    log_tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
    raise RuntimeError(f"PostgreSQL did not start: {' | '.join(log_tail)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m metrics_pipeline.local_postgres",
        description="A PostgreSQL on 127.0.0.1 with the databases "
        + " and ".join(DATABASES)
        + f", the pipeline's role {WRITER} and the analysts' read-only {READER} (passwords "
        "in <folder>/<role>.pgpass): for one machine's tests and demos.",
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
    print(f"PostgreSQL on {server.url('<database>', '<role>')} (databases: {', '.join(DATABASES)})")
    print(f"  the pipeline: PGPASSFILE={server.passfile(WRITER)}")
    print(f"    METRICS_WAREHOUSE=ducklake:postgres:{server.dsn('lake', WRITER)}")
    print(f"  analysts (read-only): PGPASSFILE={server.passfile(READER)}")
    print(f"    METRICS_WAREHOUSE=ducklake:postgres:{server.dsn('lake', READER)}")
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
