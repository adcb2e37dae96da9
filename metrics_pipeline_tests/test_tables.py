"""The tables' declarations are what every storage kind creates, what the catalog shows and
what retention trims."""

import importlib.util
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from metrics_pipeline.collection.store import record_run, record_run_parts
from metrics_pipeline.maintenance.retention import drop_rows_before
from metrics_pipeline.rightsizing.assets import replace_report
from metrics_pipeline.warehouse.lake import LAKE_ALIAS, Lake, open_lake
from metrics_pipeline.warehouse.migrations import prepare_schema
from metrics_pipeline.warehouse.schema import ensure_schema
from metrics_pipeline.warehouse.tables import (
    HOURLY_TIER,
    INSIGHTS_TIER,
    PERSONAL_TIER,
    RAW_TIER,
    RIGHTSIZING,
    RUN_PARTS,
    TABLES,
    VERSIONS,
    Column,
    Table,
)
from metrics_pipeline_tests.helpers import PROJECT_ROOT, definitions_for_tests

NOW = datetime(2026, 11, 20, 12, 0)


@pytest.fixture(params=["file", "lake"])
def new_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A connection to a warehouse this build has just created: a DuckDB file, or a DuckLake
    (its catalog a local DuckDB file: the DDL is the same as on PostgreSQL)."""
    if request.param == "file":
        conn = duckdb.connect(str(tmp_path / "metrics.duckdb"))
    else:
        lake = Lake(f"ducklake:{tmp_path / 'catalog.ducklake'}", f"{tmp_path / 'data'}/")
        conn = open_lake(lake, read_only=False)
    try:
        prepare_schema(conn, lambda version: None, NOW)
        yield conn
    finally:
        conn.close()


def test_a_new_warehouse_has_exactly_the_declared_tables(new_warehouse: Any) -> None:
    conn = new_warehouse
    [(kind,)] = conn.execute(
        "SELECT type FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    keys = kind != "ducklake"  # DuckLake has no primary keys
    columns: dict[str, list[tuple[str, str, bool]]] = {}
    for table, name, data_type, is_nullable in conn.execute(
        "SELECT c.table_name, c.column_name, c.data_type, c.is_nullable = 'YES' "
        "FROM information_schema.columns c JOIN information_schema.tables t "
        "USING (table_catalog, table_schema, table_name) "
        "WHERE t.table_type = 'BASE TABLE' AND c.table_catalog = current_database() "
        "ORDER BY c.table_name, c.ordinal_position"
    ).fetchall():
        columns.setdefault(table, []).append((name, data_type, is_nullable))
    primary_keys = {
        table: tuple(names)
        for table, names in conn.execute(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
            "WHERE database_name = current_database() AND constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    }
    declared = [*TABLES.values(), VERSIONS]

    def may_be_null(table: Table, column: Column) -> bool:
        return column.nullable and not (keys and column.name in table.primary_key)

    assert columns == {
        table.name: [(c.name, c.type, may_be_null(table, c)) for c in table.columns]
        for table in declared
    }
    assert primary_keys == (
        {table.name: table.primary_key for table in declared if table.primary_key} if keys else {}
    )
    if not keys:
        partitioned = conn.execute(
            f"SELECT t.table_name, c.column_name, list(p.transform ORDER BY p.partition_key_index) "
            f"FROM __ducklake_metadata_{LAKE_ALIAS}.ducklake_partition_column p "
            f"JOIN __ducklake_metadata_{LAKE_ALIAS}.ducklake_table t USING (table_id) "
            f"JOIN __ducklake_metadata_{LAKE_ALIAS}.ducklake_column c "
            "ON c.table_id = p.table_id AND c.column_id = p.column_id GROUP BY ALL"
        ).fetchall()
        assert sorted(partitioned) == sorted(
            (table.name, table.time_column, ["year", "month", "day"])
            for table in TABLES.values()
            if table.lake_files_per_day
        )


def test_every_table_asset_describes_each_column_of_its_table(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "metrics.duckdb")) as conn:
        ensure_schema(conn)
        real: dict[str, list[tuple[str, str, bool]]] = {}
        for table, name, data_type, nullable in conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable = 'YES' "
            "FROM information_schema.columns ORDER BY table_name, ordinal_position"
        ).fetchall():
            real.setdefault(table, []).append((name, data_type, nullable))
    graph = definitions_for_tests().resolve_asset_graph()
    shown = {
        node.metadata["dagster/table_name"]: node.metadata["dagster/column_schema"]
        for key in graph.get_all_asset_keys()
        for node in [graph.get(key)]
        if "dagster/table_name" in node.metadata
    }

    assert len(shown) == 7
    for table, schema in shown.items():
        assert [(c.name, c.type, c.constraints.nullable) for c in schema.columns] == real[table]
        undescribed = [c.name for c in schema.columns if not (c.description or "").strip()]
        assert undescribed == [], table


def _value(column: Column, moment: datetime, label: str) -> Any:
    """A value of the column's type: `moment` for a timestamp, `label` for text."""
    return {
        "VARCHAR": label,
        "BOOLEAN": True,
        "INTEGER": 1,
        "BIGINT": 1,
        "DOUBLE": 1.0,
        "TIMESTAMP": moment,
        "MAP(VARCHAR, VARCHAR)": {"team": label},
    }[column.type]


def test_retention_trims_the_time_series_of_the_tiers_it_is_given_and_only_those(
    tmp_path: Path,
) -> None:
    """Each table gets an old row and a recent one (every timestamp old, or recent): retention
    of the raw and hourly tiers drops the old row of each of their tables with a time column,
    and of no other table (the daily tier's is not given: it is kept)."""
    old, recent, cutoff = datetime(2020, 1, 1), datetime(2026, 11, 20), datetime(2026, 1, 1)
    with duckdb.connect(str(tmp_path / "metrics.duckdb")) as conn:
        ensure_schema(conn)
        for table in TABLES.values():
            for moment, label in ((old, "old"), (recent, "recent")):
                conn.execute(
                    f"INSERT INTO {table.name} VALUES ({', '.join('?' for _ in table.columns)})",
                    [_value(column, moment, label) for column in table.columns],
                )

        trims = drop_rows_before(conn, {RAW_TIER: cutoff, HOURLY_TIER: cutoff})

        kept = {
            table.name: conn.execute(f"SELECT count(*) FROM {table.name}").fetchall()[0][0]
            for table in TABLES.values()
        }
    with_time = {name for name, table in TABLES.items() if table.time_column}
    assert with_time == {
        "rds_metrics",
        "rds_metric_fetches",
        "rds_cluster_metrics",
        "rds_cluster_metric_fetches",
        "rds_metrics_hourly",
        "rds_metric_hourly_fetches",
        "rds_metrics_daily",
        "pipeline_runs",
        "rds_pi_load",
        "rds_pi_load_personal",
        "rds_pi_statements",
        "rds_pi_sql",
        "rds_pi_fetches",
    }
    # The daily tier's retention is forever; Performance Insights' tiers are not given.
    with_time -= {
        "rds_metrics_daily",
        *(t.name for t in TABLES.values() if t.tier in (INSIGHTS_TIER, PERSONAL_TIER)),
    }
    assert {(trim.table, trim.rows) for trim in trims} == {(name, 1) for name in with_time}
    assert kept == {name: 1 if name in with_time else 2 for name in TABLES}


def test_performance_insights_retention_trims_its_load_and_what_names_people_apart(
    tmp_path: Path,
) -> None:
    """METRICS_PI_RETENTION_DAYS's tier holds the load by wait event, digest and database and
    its fetch log; METRICS_PI_PERSONAL_RETENTION_DAYS's the load by user and host and the SQL
    text: each cutoff trims its own tables only."""
    old, recent, cutoff = datetime(2020, 1, 1), datetime(2026, 11, 20), datetime(2026, 1, 1)
    with duckdb.connect(str(tmp_path / "metrics.duckdb")) as conn:
        ensure_schema(conn)
        for table in TABLES.values():
            for moment, label in ((old, "old"), (recent, "recent")):
                conn.execute(
                    f"INSERT INTO {table.name} VALUES ({', '.join('?' for _ in table.columns)})",
                    [_value(column, moment, label) for column in table.columns],
                )
        insights = {trim.table for trim in drop_rows_before(conn, {INSIGHTS_TIER: cutoff})}
        personal = {trim.table for trim in drop_rows_before(conn, {PERSONAL_TIER: cutoff})}
        kept = {
            name: conn.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0] for name in TABLES
        }
    assert insights == {"rds_pi_load", "rds_pi_fetches"}
    assert personal == {"rds_pi_load_personal", "rds_pi_statements", "rds_pi_sql"}
    assert kept == {name: 1 if name in insights | personal else 2 for name in TABLES}


def test_a_figure_without_a_column_is_refused_by_name(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "metrics.duckdb")) as conn:
        ensure_schema(conn)
        figures = {"run_id": "r1", "asset": "rds_metrics", "window_start": NOW,
                   "window_end": NOW, "finished_at": NOW, "cache_hits": 3}  # fmt: skip
        with pytest.raises(ValueError, match=r"^pipeline_runs has no column cache_hits$"):
            record_run(conn, figures)
        part = {
            **dict.fromkeys(RUN_PARTS.column_names[1:-1], 1),
            "error": None,
            "retries": 1,
        }
        with pytest.raises(ValueError, match=r"^pipeline_run_parts has no column retries$"):
            record_run_parts(conn, "r1", "rds_metrics", [part])
        assert conn.execute("SELECT count(*) FROM pipeline_runs").fetchall() == [(0,)]


def test_a_report_of_no_instance_replaces_the_last_one_and_a_stray_field_is_refused(
    tmp_path: Path,
) -> None:
    with duckdb.connect(str(tmp_path / "metrics.duckdb")) as conn:
        ensure_schema(conn)
        row = {column.name: _value(column, NOW, "x") for column in RIGHTSIZING.columns}
        replace_report(conn, [row])
        assert conn.execute("SELECT instance_id FROM rds_rightsizing").fetchall() == [("x",)]
        with pytest.raises(ValueError, match=r"^rds_rightsizing has no column cpu_p90$"):
            replace_report(conn, [{**row, "cpu_p90": 1.0}])
        assert conn.execute("SELECT count(*) FROM rds_rightsizing").fetchall() == [(1,)]

        replace_report(conn, [])

        assert conn.execute("SELECT count(*) FROM rds_rightsizing").fetchall() == [(0,)]


def test_the_column_reference_of_the_docs_is_generated_from_the_declarations() -> None:
    spec = importlib.util.spec_from_file_location(
        "update_tables_reference", PROJECT_ROOT / "scripts" / "update_tables_reference.py"
    )
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    page = script.PAGE.read_text()
    assert script.with_reference(page) == page, (
        "docs/analysts.md differs from the tables' declarations: run "
        "python scripts/update_tables_reference.py"
    )
    for table in TABLES.values():
        for column in table.columns:
            assert f"\n| {column.name} | {column.type} |" in page


def test_the_hourly_history_view_takes_the_hourly_tier_and_fills_its_missing_hours_from_raw(
    tmp_path: Path,
) -> None:
    """10:00 exists only as raw periods (summed into the hour, no percentiles); 11:00 is in
    both tiers and is taken from the hourly tier alone."""
    raw = (
        "INSERT INTO rds_metrics VALUES "
        "(?, '1', 'r', 'db', 'CPUUtilization', 'Percent', ?, ?, ?, ?, ?, ?)"
    )
    with duckdb.connect(str(tmp_path / "metrics.duckdb")) as conn:
        ensure_schema(conn)
        conn.executemany(
            raw,
            [
                (datetime(2026, 11, 1, 10, 5), 10.0, 5.0, 20.0, 30.0, 3.0, NOW),
                (datetime(2026, 11, 1, 10, 10), 20.0, 4.0, 40.0, 100.0, 5.0, NOW),
                (datetime(2026, 11, 1, 11, 10), 99.0, 99.0, 99.0, 99.0, 1.0, NOW),
            ],
        )
        conn.execute(
            "INSERT INTO rds_metrics_hourly VALUES ('2026-11-01 11:00', '1', 'r', 'db', "
            "'CPUUtilization', 'Percent', 30, 1, 60, 360, 12, 28, 50, 55, 59, ?)",
            [NOW],
        )
        rows = conn.execute(
            "SELECT hour, average, minimum, maximum, sum, sample_count, p95, tier "
            "FROM rds_hourly_history ORDER BY hour"
        ).fetchall()
    assert rows == [
        (datetime(2026, 11, 1, 10), 130.0 / 8, 4.0, 40.0, 130.0, 8.0, None, "raw"),
        (datetime(2026, 11, 1, 11), 30.0, 1.0, 60.0, 360.0, 12.0, 55.0, "hourly"),
    ]
