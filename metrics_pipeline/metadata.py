"""Shapes of Dagster metadata shared by the assets."""

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import duckdb
from dagster import TableColumn, TableColumnConstraints, TableSchema

from metrics_pipeline.warehouse.schema import SCHEMA_SQL

# Who answers for the assets in the catalog (Dagster's `owners`: a team or an e-mail address).
OWNERS = ["team:rds-metrics"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table, which the Dagster UI renders in an asset's metadata."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@cache
def _warehouse_columns() -> dict[str, list[tuple[str, str, bool]]]:
    """Every table's columns (name, type, required), from the warehouse's DDL run once in an
    in-memory DuckDB: the catalog cannot drift from the warehouse."""
    with duckdb.connect(":memory:") as conn:
        conn.execute(SCHEMA_SQL)
        rows = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable = 'NO' "
            "FROM information_schema.columns ORDER BY table_name, ordinal_position"
        ).fetchall()
    columns: dict[str, list[tuple[str, str, bool]]] = {}
    for table, *column in rows:
        columns.setdefault(table, []).append(tuple(column))  # type: ignore[arg-type]
    return columns


def table_schema(table: str) -> TableSchema:
    """The table's columns as the catalog shows them."""
    return TableSchema(
        columns=[
            TableColumn(name, data_type, constraints=TableColumnConstraints(nullable=not required))
            for name, data_type, required in _warehouse_columns()[table]
        ]
    )


def table_metadata(table: str) -> dict[str, Any]:
    """Definition metadata of an asset stored in `table`: its name and columns."""
    return {"dagster/table_name": table, "dagster/column_schema": table_schema(table)}
