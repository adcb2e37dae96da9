"""`metrics-pipeline`: read, export and back up the warehouse from a terminal.

Every reading command opens the published snapshot, so it runs safely while the pipeline
collects. Errors in what was typed print one line naming the argument and exit with 2; a
warehouse that cannot be read (none at that path yet, damaged, locked too long) or a query
stopped at its memory or time limit, with 1; Ctrl-C, one line and 130.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from metrics_pipeline.analysts import health_text, query
from metrics_pipeline.analysts.charts import FILE_FORMATS, MAX_LINES, chart_format, write_chart
from metrics_pipeline.analysts.load import DEFAULT_GROUP, GROUPS, top_load
from metrics_pipeline.analysts.outputs import Output, OutputRefused, checked_target, open_output
from metrics_pipeline.analysts.query import (
    FORMATS,
    TIER_TABLES,
    QueryError,
    QueryStopped,
    WarehouseUnavailable,
)
from metrics_pipeline.hours import utc_now
from metrics_pipeline.maintenance.backups import (
    BackupError,
    RestoreFailed,
    create_backup,
    find_backup,
    list_backups,
    prune_backups,
    restore_backup,
)
from metrics_pipeline.settings import (
    ConfigError,
    StorageSettings,
    duckdb_memory_limit_for,
    read_value,
    settings_for,
    variable,
)
from metrics_pipeline.warehouse.lake import LakeError
from metrics_pipeline.warehouse.lake_migration import LakeMigrationError, copy_snapshot_into_lake
from metrics_pipeline.warehouse.tables import TIERS

PROG = "metrics-pipeline"
USAGE_ERROR = 2  # what was typed cannot be done, as argparse's own errors
FAILED = 1
INTERRUPTED = 130
# The commands that only read, whose process is held to the query memory bound.
READING_COMMANDS = ("instances", "metrics", "extract", "plot", "health", "load", "query")


class CommandFailed(Exception):
    """The command was right but the warehouse or the disk failed it (exit code 1)."""


def _warehouse_help() -> str:
    try:
        storage = StorageSettings.from_env()
    except ConfigError:
        return "a warehouse DuckDB file to read instead of the configured warehouse"
    configured = storage.lake.label if storage.lake else str(storage.duckdb_path)
    return f"a warehouse DuckDB file to read instead of the configured one (here {configured})"


def _warehouse_option() -> argparse.ArgumentParser:
    """--warehouse, accepted after any command too (its default there must not override)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--warehouse",
        type=Path,
        default=argparse.SUPPRESS,
        help=_warehouse_help(),
    )
    return parent


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"'{raw}' is not allowed; expected seconds > 0")
    return value


def _output_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, parents=[_warehouse_option()])
    parent.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        help="table (default on a terminal), csv, json, parquet or duckdb (a DuckDB file "
        "that DuckDB 1.2 and newer open); default: from the --output suffix",
    )
    parent.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write to this new file (owner-only) instead of stdout; its folder must exist",
    )
    parent.add_argument(
        "--force",
        action="store_true",
        help="replace the --output file if it exists (never the warehouse, its snapshot, "
        "a backup or a DuckDB file; never through a symbolic link)",
    )
    return parent


def _range_options(default_start: str) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--start",
        default=default_start,
        help=f"UTC, ISO 8601 (2026-11-26T08:00), 'now' or relative (now-6h, now-3d); "
        f"default {default_start}",
    )
    parent.add_argument("--end", default="now", help="same forms as --start; default now")
    parent.add_argument(
        "-i",
        "--instance",
        action="append",
        dest="instances",
        metavar="ID",
        help="an instance id; repeat for several (default: all)",
    )
    parent.add_argument(
        "-a",
        "--account",
        action="append",
        dest="accounts",
        metavar="ACCOUNT_ID",
        help="an AWS account id; repeat for several (default: all)",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Query, export and back up the RDS metrics warehouse. Reads the snapshot "
        "the pipeline publishes after each write, so it never blocks collection.",
    )
    parser.add_argument(
        "--warehouse",
        type=Path,
        default=None,
        help=_warehouse_help(),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    output = _output_options()

    commands.add_parser(
        "instances", parents=[output], help="list the instances and the span of their data"
    )
    commands.add_parser("metrics", parents=[output], help="list the metrics held")

    extract = commands.add_parser(
        "extract",
        parents=[_range_options("now-24h"), output],
        help="every period of a time range, for one instance or all",
    )
    extract.add_argument(
        "-m", "--metric", action="append", dest="metrics", help="a metric; repeat for several"
    )
    extract.add_argument(
        "--wide", action="store_true", help="one row per instance and period, a column per metric"
    )
    extract.add_argument(
        "--tier",
        choices=TIERS,
        help="the tier to read: raw periods, CloudWatch's hourly statistics, or days (default: "
        "raw when the range starts within METRICS_RETENTION_DAYS, else hourly)",
    )

    plot = commands.add_parser(
        "plot",
        parents=[_range_options("now-24h"), _warehouse_option()],
        help="a chart of a metric over a time range as an SVG or PNG file (no browser, no "
        "network): each instance's average over its minimum-to-maximum band",
    )
    plot.add_argument("-m", "--metric", required=True, help="the metric to draw")
    plot.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="the new file to write (owner-only); its folder must exist",
    )
    plot.add_argument(
        "-f", "--format", choices=FILE_FORMATS, help="svg or png; default: from the --output suffix"
    )
    plot.add_argument(
        "--force",
        action="store_true",
        help="replace the --output file if it exists (never the warehouse, its snapshot, "
        "a backup or a DuckDB file; never through a symbolic link)",
    )
    plot.add_argument("--tier", choices=TIERS, help="as for extract")

    commands.add_parser(
        "health",
        parents=[_range_options("now-3d"), output],
        help="per instance: min/avg/max/p95 of the main metrics and the hours missing",
    )

    load = commands.add_parser(
        "load",
        parents=[_range_options("now-1h"), output],
        help="Performance Insights: each instance's top wait events, SQL digests, databases, "
        "users or hosts by average active sessions",
    )
    load.add_argument(
        "--by",
        default=DEFAULT_GROUP,
        choices=list(GROUPS),
        help=f"the dimension group (default {DEFAULT_GROUP})",
    )
    load.add_argument(
        "--top", type=int, default=10, help="keys per instance, 1 to 1000 (default 10)"
    )
    load.add_argument(
        "--baseline-start",
        help="with --baseline-end: compare with this window (before a deploy); the keys that "
        "changed most come first",
    )
    load.add_argument("--baseline-end", help="the baseline window's end")
    load.add_argument(
        "--personal",
        action="store_true",
        help="also what names people: the SQL digests' text, the load by user or host",
    )

    sql = commands.add_parser(
        "query", parents=[output], help="run one read-only SQL query (SELECT)"
    )
    sql.add_argument("sql", help="the SELECT statement, quoted")

    warehouse = _warehouse_option()
    backup = commands.add_parser(
        "backup", parents=[warehouse], help="create, list, prune or restore backups"
    )
    actions = backup.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "create",
        parents=[warehouse],
        help="back up the latest snapshot now (safe while collecting)",
    )
    actions.add_parser("list", parents=[output], help="list backups, newest first")
    actions.add_parser(
        "prune", parents=[warehouse], help="delete backups older than METRICS_BACKUP_KEEP_DAYS"
    )
    restore = actions.add_parser(
        "restore",
        parents=[warehouse],
        help="replace the warehouse's rows with a backup's (one transaction)",
    )
    restore.add_argument("name", help="the backup's name, as `backup list` shows it")
    restore.add_argument(
        "--yes", action="store_true", help="confirm: every table's current rows are replaced"
    )
    restore.add_argument(
        "--force",
        action="store_true",
        help="restore even while Dagster shows runs in progress or a writer holds the "
        "warehouse (then wait for it up to --lock-timeout)",
    )
    restore.add_argument(
        "--unverified",
        action="store_true",
        help="restore a backup made before backups carried checksums (it cannot be verified)",
    )
    commands.add_parser(
        "migrate-to-lake",
        parents=[warehouse],
        help="copy the DuckDB warehouse into the empty DuckLake of METRICS_WAREHOUSE "
        "(row counts and checksums compared)",
    )
    restore.add_argument(
        "--lock-timeout",
        type=_positive_seconds,
        help="seconds to wait for a running collection to release the warehouse "
        f"(default: {variable('lock_timeout_seconds')})",
    )
    return parser


def _storage(args: argparse.Namespace) -> StorageSettings:
    if args.warehouse is None:
        return StorageSettings.from_env()
    path = args.warehouse.expanduser().resolve()
    if path.is_dir():
        raise QueryError(f"--warehouse: '{path}' is a directory; expected a DuckDB file.")
    # --warehouse names a DuckDB file: the lake settings do not apply to it.
    overridden = ("METRICS_DUCKDB_PATH", "METRICS_WAREHOUSE", "METRICS_LAKE_DATA_PATH")
    environment = {k: v for k, v in os.environ.items() if k not in overridden}
    return replace(
        StorageSettings.from_env(environment), duckdb_path=path, warehouse=None, lake_data_path=None
    )


def _output(args: argparse.Namespace) -> Output | None:
    """--output, refused before any row is read when it cannot be written as asked."""
    if args.output is None:
        return None
    storage = _storage(args)
    kept = [
        storage.duckdb_path,
        storage.duckdb_path.with_name(storage.duckdb_path.name + ".wal"),
        storage.snapshot_path,
        storage.snapshot_path.with_name(storage.snapshot_path.name + ".wal"),
        storage.backups_path,
    ]
    if storage.lake is not None and not storage.lake.on_s3:
        kept.append(Path(storage.lake.data_path))
    output = Output(args.output, args.force, tuple(kept))
    checked_target(output)
    return output


def _emit(frame: pd.DataFrame, args: argparse.Namespace) -> None:
    fmt = query.format_for(args.output, args.format)
    _print(query.write_frame(frame, fmt, _output(args)))


def _print(text: str) -> None:
    if text:
        print(text, end="" if text.endswith("\n") else "\n")


def _backup(args: argparse.Namespace, storage: StorageSettings) -> None:
    folder = storage.backups_path
    now = utc_now().replace(microsecond=0)
    if args.action == "create":
        backup = create_backup(storage.read_source, folder, now)
        print(f"Backed up {sum(backup.rows.values())} row(s) to {backup.path}")
    elif args.action == "list":
        skipped: list[str] = []
        backups = list_backups(folder, skipped)
        for problem in skipped:
            print(f"skipped {problem}", file=sys.stderr)
        frame = pd.DataFrame(
            [
                {
                    "name": b.name,
                    "created_at": b.created_at,
                    "rows": sum(b.rows.values()),
                    "bytes": b.size_bytes,
                    "path": str(b.path),
                }
                for b in backups
            ],
            columns=["name", "created_at", "rows", "bytes", "path"],
        )
        _emit(frame, args)
    elif args.action == "prune":
        expired = prune_backups(folder, storage.backup_keep_days, now)
        print(
            f"Deleted {len(expired)} backup(s) older than {storage.backup_keep_days} day(s)"
            + (f": {', '.join(b.name for b in expired)}" if expired else "")
        )
    else:
        backup = find_backup(folder, args.name)
        if not args.yes:
            raise BackupError(
                f"restore replaces every row of the warehouse {storage.duckdb_path} with "
                f"backup {backup.name}; add --yes to confirm."
            )
        # Imported here: Dagster takes seconds to import and only a restore writes.
        from dagster import Failure

        from metrics_pipeline.warehouse.resources import WarehouseResource

        if not args.force:
            _refuse_while_runs_write()
        wait = args.lock_timeout or storage.lock_timeout_seconds
        carried = settings_for(WarehouseResource, storage)
        # Without --force a held lock means a writer at work: refuse at once.
        carried["lock_timeout_seconds"] = wait if args.force else 0.01
        warehouse = WarehouseResource(
            **carried,
            database=str(storage.duckdb_path),
            connection_config={"memory_limit": _writer_memory_limit()},
        )
        try:
            with warehouse.connect() as conn:
                restored = restore_backup(conn, backup, verify=not args.unverified)
        except Failure as failure:
            description = failure.description or str(failure)
            if not args.force and "locked by another process" in description:
                raise CommandFailed(
                    f"restore: the warehouse {storage.duckdb_path} is being written by another "
                    "process (a collection in progress?); nothing was restored. Try again when "
                    f"it is done, or add --force to wait up to {wait:g} s for it."
                ) from None
            raise CommandFailed(description) from None
        print(
            f"Restored {sum(restored.values())} row(s) from {backup.name} "
            f"({', '.join(f'{t} {n}' for t, n in restored.items())})"
        )


def _writer_memory_limit() -> str:
    """METRICS_DUCKDB_MEMORY_LIMIT, as the pipeline's writers use it (restore and
    migrate-to-lake write in chunks that fit it)."""
    limit = read_value("duckdb_memory_limit")
    return limit or duckdb_memory_limit_for(read_value("chunk_datapoints"))


def _refuse_while_runs_write() -> None:
    """A restore under a running collection would silently remove what the run writes while
    Dagster shows those hours as materialized: refuse while the Dagster instance of this
    deployment (DAGSTER_HOME) shows runs in progress."""
    if not os.environ.get("DAGSTER_HOME"):
        return
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    in_progress = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(statuses=in_progress), limit=20)
    if runs:
        listed = ", ".join(f"{run.job_name} {run.run_id[:8]}" for run in runs)
        raise CommandFailed(
            f"restore: {len(runs)} run(s) in progress in Dagster ({listed}); a restore now would "
            "remove what they write. Try again when they finish, or add --force."
        )


def what_was_read(storage: StorageSettings, args: argparse.Namespace) -> str:
    """The warehouse a command read and the setting that chose it: a shell without the lake's
    settings reads the DuckDB file, and says so."""
    if storage.lake is not None:
        if os.environ.get("METRICS_WAREHOUSE"):
            return f"read the lake {storage.lake.label} (METRICS_WAREHOUSE)"
        return (
            f"read the lake {storage.lake.label} (the default; METRICS_WAREHOUSE and "
            "METRICS_DUCKDB_PATH are not set)"
        )
    if args.warehouse is not None:
        chosen_by = "--warehouse"
    elif os.environ.get("METRICS_DUCKDB_PATH"):
        chosen_by = "METRICS_DUCKDB_PATH"
    else:
        chosen_by = "the default; METRICS_WAREHOUSE and METRICS_DUCKDB_PATH are not set"
    return f"read the DuckDB file {storage.duckdb_path} ({chosen_by})"


def _bound_memory(storage: StorageSettings) -> None:
    """Holds this process's private memory (RLIMIT_DATA) to query.process_memory_bound: what
    DuckDB's own limit does not cover then fails as an out-of-memory error, not by taking
    the machine's memory."""
    # pyarrow's default allocator (mimalloc) reserves a GiB of address space at its first
    # batch, which the bound counts though little of it is used: the C library's allocator
    # takes what it uses.
    pa.set_memory_pool(pa.system_memory_pool())
    bound = query.process_memory_bound(storage)
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        bound = min(bound, hard)
    if soft == resource.RLIM_INFINITY or soft > bound:
        resource.setrlimit(resource.RLIMIT_DATA, (bound, hard))


def run(args: argparse.Namespace, own_process: bool = False) -> None:
    """Runs the command; in `own_process` (the installed command, not a caller's Python) a
    reading command's process is held to its memory bound."""
    storage = _storage(args)
    if own_process and args.command in READING_COMMANDS:
        _bound_memory(storage)
    output = _output(args) if "output" in args else None  # refused before any row is read
    if args.command == "instances":
        _emit(query.list_instances(storage), args)
    elif args.command == "metrics":
        _emit(query.list_metrics(storage), args)
    elif args.command == "extract":
        fmt = query.format_for(args.output, args.format)
        text, choice = query.export_metrics(
            args.start, args.end, args.instances, args.metrics, args.wide, fmt, output,
            storage, accounts=args.accounts, tier=args.tier,
        )  # fmt: skip
        _print(text)
        print(f"{PROG}: extract {choice.line()}", file=sys.stderr)
    elif args.command == "plot":
        _plot(args, storage, output)
    elif args.command == "health":
        _health(
            query.health_summary(
                args.start, args.end, args.instances, storage, accounts=args.accounts
            ),
            args,
            storage,
        )
    elif args.command == "load":
        _emit(_load(args, storage), args)
    elif args.command == "query":
        fmt = query.format_for(args.output, args.format)
        _print(query.export_sql(args.sql, fmt, output, storage))
    elif args.command == "migrate-to-lake":
        _migrate_to_lake(storage)
    else:
        _backup(args, storage)
    if args.command in READING_COMMANDS:
        print(f"{PROG}: {what_was_read(storage, args)}", file=sys.stderr)


def _plot(args: argparse.Namespace, storage: StorageSettings, output: Output | None) -> None:
    """The chart of the selection, refused by name before anything is written when it cannot
    be drawn: an unknown format, nothing to draw, too many instances for one chart."""
    if output is None:
        raise QueryError("output: name the chart's file with --output (.svg or .png).")
    try:
        fmt = chart_format(args.output, args.format)
    except ValueError as error:
        raise QueryError(str(error)) from None
    frame = query.extract_metrics(
        args.start, args.end, args.instances, [args.metric], storage=storage,
        accounts=args.accounts, tier=args.tier,
    )  # fmt: skip
    tier = str(frame.attrs["tier"])
    if frame.empty:
        raise QueryError(
            f"metric: no {args.metric} in the {tier} tier for this range and selection; "
            "nothing to draw."
        )
    time_column = TIER_TABLES[tier].time_column or "ts"
    keys = ["account_id", "region", "instance_id"]
    grouped = {key: part for key, part in frame.groupby(keys)}
    if len(grouped) > MAX_LINES:
        raise QueryError(
            f"instance: the selection holds {len(grouped)} instances; a chart draws at most "
            f"{MAX_LINES}; choose them with --instance (and --account)."
        )
    repeated = len({instance_id for _, _, instance_id in grouped}) < len(grouped)
    lines = {
        (f"{i} ({a}, {r})" if repeated else str(i)): part.rename(columns={time_column: "ts"})
        for (a, r, i), part in grouped.items()
    }
    unit = frame["unit"].dropna().iloc[0] if frame["unit"].notna().any() else None
    with open_output(output) as out:
        write_chart(lines, f"{args.metric} ({tier} tier)", unit, out, fmt)
    print(
        f"{PROG}: wrote {args.output} ({len(lines)} instance(s), {len(frame)} periods)",
        file=sys.stderr,
    )


def _load(args: argparse.Namespace, storage: StorageSettings) -> pd.DataFrame:
    given = [args.baseline_start is not None, args.baseline_end is not None]
    if any(given) and not all(given):
        missing = "--baseline-end" if given[0] else "--baseline-start"
        raise QueryError(f"{missing}: give --baseline-start and --baseline-end together.")
    return top_load(
        args.start, args.end, args.by, args.instances, args.accounts, args.top,
        (args.baseline_start, args.baseline_end) if all(given) else None,
        args.personal, storage,
    )  # fmt: skip


def _health(summary: pd.DataFrame, args: argparse.Namespace, storage: StorageSettings) -> None:
    """The look-back's progress first: above the terminal's table, or on stderr when stdout
    carries CSV or JSON (which stay parseable)."""
    line = health_text.history_line(storage)
    if query.format_for(args.output, args.format) == "table" and args.output is None:
        _print(f"{line}\n{health_text.health_text(summary)}")
        return
    print(line, file=sys.stderr if args.output is None else sys.stdout)
    _emit(summary, args)


def _migrate_to_lake(storage: StorageSettings) -> None:
    configured = StorageSettings.from_env()
    lake = configured.lake
    if lake is None:
        raise ConfigError(
            "migrate-to-lake: METRICS_WAREHOUSE and METRICS_LAKE_DATA_PATH name the lake to "
            "move the DuckDB warehouse into; set both."
        )
    # Imported here: Dagster takes seconds to import and only this command writes a lake.
    from dagster import Failure

    from metrics_pipeline.warehouse.resources import WarehouseResource

    target = WarehouseResource(
        **settings_for(WarehouseResource, configured),
        database=str(storage.duckdb_path),
        connection_config={"memory_limit": _writer_memory_limit()},
    )
    try:
        with target.connect() as conn:
            moved = copy_snapshot_into_lake(
                conn, storage.snapshot_path, lambda step: print(step, file=sys.stderr)
            )
    except Failure as failure:
        raise CommandFailed(failure.description or str(failure)) from None
    except (LakeError, LakeMigrationError) as error:
        raise CommandFailed(f"migrate-to-lake: {error}") from None
    except duckdb.Error as error:  # DuckDB's hints follow on further lines
        raise CommandFailed(f"migrate-to-lake: {str(error).strip().splitlines()[0]}") from None
    rows = sum(fingerprint.rows for fingerprint in moved.values())
    print(
        f"Moved {rows} row(s) of {len(moved)} table(s) from {storage.duckdb_path} into "
        f"the lake {lake.label}; every table's row count and checksum match."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # Without argv this is the command's own process; with it, a caller's (a test, a
        # notebook), whose memory is the caller's to bound.
        run(args, own_process=argv is None)
    except (WarehouseUnavailable, QueryStopped) as error:
        return _fail(parser, error, FAILED)
    except (QueryError, OutputRefused, BackupError, ConfigError) as error:
        return _fail(parser, error, USAGE_ERROR)
    except (CommandFailed, RestoreFailed, duckdb.Error, OSError) as error:
        return _fail(parser, error, FAILED)
    except MemoryError:
        bound = query.process_memory_bound(_storage(args)) // 2**20
        return _fail(
            parser,
            f"out of memory: the command reached its bound of {bound} MiB "
            "(METRICS_QUERY_MEMORY_LIMIT and what Python needs besides); narrow the query or "
            "raise the limit",
            FAILED,
        )
    except KeyboardInterrupt:
        return _fail(parser, "interrupted", INTERRUPTED)
    return 0


def _fail(parser: argparse.ArgumentParser, error: object, code: int) -> int:
    if isinstance(error, BrokenPipeError):  # `... | head` stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    print(f"{parser.prog}: error: {error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
