"""What a restore and a move into the lake cost in memory: the peak resident memory of
`metrics-pipeline backup restore` and `metrics-pipeline migrate-to-lake` on a warehouse of
`--rows` rows of rds_metrics, each command in a child process of its own (wait4()'s maxrss),
beside DuckDB's memory limit.

    .venv/bin/python -m benchmarks.maintenance                     # 30 million rows
    .venv/bin/python -m benchmarks.maintenance --rows 2000000

The lake is a local PostgreSQL and a moto S3 server on loopback (benchmarks/backends.py).
Nothing is asserted here: test_backups.py and test_lake.py check the memory bounds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from benchmarks.backends import lake_servers
from metrics_pipeline.catalog import RDS_INSTANCE_DEFAULTS, RDS_METRIC_UNITS
from metrics_pipeline.settings import DEFAULT_CHUNK_DATAPOINTS, duckdb_memory_limit_for
from metrics_pipeline.warehouse.resources import WarehouseResource

CLI = str(Path(sys.executable).with_name("metrics-pipeline"))
GENERATED_PER_TRANSACTION = 1_000_000


def generate(warehouse: WarehouseResource, rows: int, instances: int) -> None:
    """`rows` rows of the default metrics of `instances` instances every 5 minutes, random
    values, a transaction per million rows (the primary key's memory), then published."""
    with warehouse.connect():
        pass  # the schema
    metrics = ", ".join(f"('{m}', '{RDS_METRIC_UNITS[m]}')" for m in RDS_INSTANCE_DEFAULTS)
    per_instance = len(RDS_INSTANCE_DEFAULTS)
    series = instances * per_instance
    with duckdb.connect(warehouse.database) as conn:
        for first in range(0, rows, GENERATED_PER_TRANSACTION):
            last = min(rows, first + GENERATED_PER_TRANSACTION)
            conn.execute(
                f"""
                INSERT INTO rds_metrics
                SELECT TIMESTAMP '2026-10-01' + to_minutes((n // $series) * 5), '123456789012',
                       'us-east-1', 'db-' || (n % $series // {per_instance}), m.metric,
                       m.unit, random() * 100, random(), random() * 100, random() * 500, 5,
                       TIMESTAMP '2026-11-01'
                FROM range($first, $last) r(n)
                JOIN (SELECT row_number() OVER () - 1 AS k, * FROM (VALUES {metrics})
                      v(metric, unit)) m ON m.k = n % {per_instance}
                """,
                {"series": series, "first": first, "last": last},
            )
    with warehouse.connect():
        pass  # published


def measured(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Runs the command in a child process: its seconds and peak resident memory (MiB)."""
    began = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - began
    stderr = child.stderr.read().decode() if child.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[1:])} failed: {stderr.strip()}")
    return seconds, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.maintenance", description=__doc__)
    parser.add_argument("--rows", type=int, default=30_000_000)
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument(
        "--memory-limit",
        default=duckdb_memory_limit_for(DEFAULT_CHUNK_DATAPOINTS),
        help="METRICS_DUCKDB_MEMORY_LIMIT for both commands (default: the pipeline's)",
    )
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="metrics-maintenance-") as temp:
        folder = Path(temp)
        file = WarehouseResource(database=str(folder / "file" / "metrics.duckdb"))
        began = time.perf_counter()
        generate(file, args.rows, args.instances)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - began:.0f} s", flush=True)
        env = {
            **os.environ,
            "METRICS_DUCKDB_PATH": file.database,
            "METRICS_DUCKDB_MEMORY_LIMIT": args.memory_limit,
        }
        env.pop("DAGSTER_HOME", None)
        results.append(("backup create", *measured([CLI, "backup", "create"], env)))
        [name] = [p.name for p in file.backups_path.iterdir() if not p.name.startswith(".")]
        restore = [CLI, "backup", "restore", name, "--yes"]
        results.append(("backup restore", *measured(restore, env)))
        print(f"{results[-1][0]}: {results[-1][1]:.0f} s, {results[-1][2]:.0f} MiB", flush=True)
        with lake_servers(folder) as lake:
            lake_env = {
                **os.environ,  # with the S3 server's endpoint and credentials now
                **{k: v for k, v in env.items() if k.startswith("METRICS_")},
                "METRICS_WAREHOUSE": lake.catalog,
                "METRICS_LAKE_DATA_PATH": lake.data_path,
            }
            lake_env.pop("DAGSTER_HOME", None)
            results.append(("migrate-to-lake", *measured([CLI, "migrate-to-lake"], lake_env)))
    print(
        f"\n{args.rows:,} rows of rds_metrics ({args.instances} instances × "
        f"{len(RDS_INSTANCE_DEFAULTS)} metrics), METRICS_DUCKDB_MEMORY_LIMIT={args.memory_limit}"
    )
    print("| command | seconds | peak resident memory (MiB) |")
    print("|---|---|---|")
    for command, seconds, peak in results:
        print(f"| {command} | {seconds:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
