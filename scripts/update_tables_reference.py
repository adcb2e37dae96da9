"""Rewrites the column reference in docs/analysts.md from the tables' declarations."""

from pathlib import Path

from metrics_pipeline.warehouse.tables import TABLES, Table

PAGE = Path(__file__).resolve().parent.parent / "docs" / "analysts.md"
BEGIN = (
    "<!-- generated from metrics_pipeline/warehouse/tables.py "
    "by scripts/update_tables_reference.py -->\n"
)
END = "<!-- end of generated column reference -->"


def table_reference(table: Table) -> str:
    facts = [f"key ({', '.join(f'`{name}`' for name in table.primary_key)})"]
    if table.time_column:
        facts.append(f"retention trims it by `{table.time_column}`")
    if table.derived:
        facts.append("derived: computed again from the other tables")
    rows = [
        f"| {c.name} | {c.type} | {'' if table.required(c) else 'yes'} | {c.description} |"
        for c in table.columns
    ]
    return "\n".join(
        [
            f"`{table.name}`: {'; '.join(facts)}.",
            "",
            "| column | type | NULL | |",
            "|---|---|---|---|",
            *rows,
        ]
    )


def column_reference() -> str:
    return "\n\n".join(table_reference(table) for table in TABLES.values()) + "\n\n"


def with_reference(page: str) -> str:
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not (begin and end):
        raise SystemExit(f"{PAGE}: the markers of the generated column reference are missing")
    return head + BEGIN + column_reference() + END + tail


if __name__ == "__main__":
    PAGE.write_text(with_reference(PAGE.read_text()))
