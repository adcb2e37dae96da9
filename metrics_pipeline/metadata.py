"""Shapes of Dagster metadata shared by the assets."""

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import duckdb
from dagster import TableColumn, TableColumnConstraints, TableSchema

from metrics_pipeline.warehouse.schema import SCHEMA_SQL


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table, which the Dagster UI renders in an asset's metadata."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@cache
def table_schema(table: str) -> TableSchema:
    """The table's columns as the catalog shows them, read from the DDL above (run in an
    in-memory DuckDB), so the UI cannot drift from the warehouse."""
    with duckdb.connect(":memory:") as conn:
        conn.execute(SCHEMA_SQL)
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable = 'NO' FROM information_schema.columns "
            "WHERE table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
    return TableSchema(
        columns=[
            TableColumn(name, data_type, constraints=TableColumnConstraints(nullable=not required))
            for name, data_type, required in columns
        ]
    )


def table_metadata(table: str) -> dict[str, Any]:
    """Definition metadata of an asset stored in `table`: its name and columns."""
    return {"dagster/table_name": table, "dagster/column_schema": table_schema(table)}
