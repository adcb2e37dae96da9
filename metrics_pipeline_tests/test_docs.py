"""The docs match the code: the configuration reference is the settings model's, every link
between the README and the docs pages leads somewhere, and the documented queries answer
right on a warehouse of two accounts."""

import ast
import importlib.util
import re
from pathlib import Path

import pandas as pd
import pytest

from metrics_pipeline.analysts import query
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.sql import in_transaction
from metrics_pipeline_tests.helpers import PROJECT_ROOT
from metrics_pipeline_tests.known_data import seed
from metrics_pipeline_tests.moto_fleet import ACCOUNT_ID

OTHER_ACCOUNT = "222222222222"

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_setting_is_in_the_configuration_reference() -> None:
    code = "".join(p.read_text() for p in (PROJECT_ROOT / "metrics_pipeline").rglob("*.py"))
    read = set(re.findall(r'"(METRICS_[A-Z_]+)"', code))
    reference = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(METRICS_[A-Z_]+)` \|", reference, re.M))
    assert read == documented


def test_the_configuration_reference_is_generated_from_the_settings_model() -> None:
    spec = importlib.util.spec_from_file_location(
        "update_settings_reference", PROJECT_ROOT / "scripts" / "update_settings_reference.py"
    )
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    page = script.PAGE.read_text()
    assert script.with_reference(page) == page, (
        "docs/operations.md differs from the settings model: run "
        "python scripts/update_settings_reference.py"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_lead_somewhere(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: no heading for {target}"


def documented_queries() -> list[str]:
    """The SQL the analysts' page and the README show: SQL blocks, `metrics-pipeline query`
    commands and `query.run_sql(...)` calls."""
    found = []
    for page in (PROJECT_ROOT / "docs" / "analysts.md", PROJECT_ROOT / "README.md"):
        text = page.read_text()
        found += re.findall(r"```sql\n(.*?)```", text, re.S)
        found += re.findall(r'metrics-pipeline query "([^"]+)"', text)
        for call in re.findall(r"run_sql\(((?:\s*\"[^\"]*\")+)\s*\)", text):
            found.append(ast.literal_eval(f"({call.strip()})"))
    return found


def test_the_documented_queries_keep_two_accounts_instances_apart(tmp_path: Path) -> None:
    """scripts/start.sh runs two accounts, each with an orders-db: every documented query
    about instances answers for each account what it answers with that account alone."""
    alone = WarehouseResource(database=str(tmp_path / "alone" / "metrics.duckdb"))
    both = WarehouseResource(database=str(tmp_path / "both" / "metrics.duckdb"))
    seed(alone)
    seed(both)
    with both.connect() as conn:  # another account's orders-db, with other values

        def add_account() -> None:
            for table, changed in (
                ("rds_instances", ""),
                ("rds_metrics", ", average * 3 + 11 AS average, maximum * 2 AS maximum"),
            ):
                conn.execute(
                    f"INSERT INTO {table} SELECT * REPLACE ('{OTHER_ACCOUNT}' AS account_id"
                    f"{changed}) FROM {table} WHERE instance_id = 'orders-db'"
                )

        in_transaction(conn, add_account)

    checked = 0
    for sql in documented_queries():
        if "instance_id" not in sql:
            continue
        try:
            expected = query.run_sql(sql, StorageSettings(duckdb_path=Path(alone.database)))
        except query.QueryError as error:
            assert "does not exist" in str(error)  # a report table the seed does not write
            continue
        got = query.run_sql(sql, StorageSettings(duckdb_path=Path(both.database)))
        assert "account_id" in got.columns, f"no account_id, accounts merged in:\n{sql}"
        mine = got[got["account_id"] == ACCOUNT_ID]
        pd.testing.assert_frame_equal(
            mine.sort_values(list(mine.columns)).reset_index(drop=True),
            expected.sort_values(list(expected.columns)).reset_index(drop=True),
            obj=sql,
        )
        checked += 1
    assert checked >= 6
