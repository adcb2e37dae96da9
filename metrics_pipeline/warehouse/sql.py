"""Small SQL helpers every writer uses: one transaction, one literal."""

from __future__ import annotations

from typing import Any

import duckdb


def in_transaction(conn: duckdb.DuckDBPyConnection, statements: Any) -> Any:
    conn.begin()
    try:
        result = statements()
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return result


def sql_literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"
