"""Shapes of Dagster metadata shared by the assets."""

from collections.abc import Iterable, Sequence
from typing import Any

from dagster import (
    AssetExecutionContext,
    TableColumn,
    TableColumnConstraints,
    TableConstraints,
    TableSchema,
)

from metrics_pipeline.warehouse.resources import WAREHOUSE_POOL
from metrics_pipeline.warehouse.tables import TABLES, Table

# The one asset group of the pipeline's assets in the catalog.
GROUP = "rds"
# Who answers for the assets in the catalog (Dagster's `owners`: a team or an e-mail address).
OWNERS = ["team:rds-metrics"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table, which the Dagster UI renders in an asset's metadata."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def column_schema(table: Table) -> TableSchema:
    """The table's columns as the catalog shows them, from its declaration."""
    return TableSchema(
        columns=[
            TableColumn(
                c.name,
                c.type,
                description=c.description,
                constraints=TableColumnConstraints(nullable=not table.required(c)),
            )
            for c in table.columns
        ],
        constraints=TableConstraints(
            other=[f"primary key ({', '.join(table.primary_key)})"] if table.primary_key else []
        ),
    )


def table_metadata(table: str) -> dict[str, Any]:
    """Definition metadata of an asset stored in `table`: its name and its columns with their
    descriptions, from the table's declaration."""
    return {"dagster/table_name": table, "dagster/column_schema": column_schema(TABLES[table])}


def table_asset(table: str, *, reads_aws: bool = False) -> dict[str, Any]:
    """The `asset(...)` arguments every asset stored in a warehouse table shares: its group,
    kinds, owners, the table's metadata, and the pool of the warehouse's one writer."""
    return {
        "group_name": GROUP,
        "kinds": {"duckdb", "aws"} if reads_aws else {"duckdb"},
        "owners": OWNERS,
        "metadata": table_metadata(table),
        "pool": WAREHOUSE_POOL,
    }


def row_count_of_partition(context: AssetExecutionContext, rows: int) -> dict[str, int]:
    """Dagster's partition row count, when the run wrote one partition: a run over a range
    reports one materialization per partition with the same metadata."""
    single = len(context.partition_keys) == 1
    return {"dagster/partition_row_count": rows} if single else {}
