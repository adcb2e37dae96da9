"""Writes an instance's Performance Insights hours: its load rows, its digests (once each) and
its fetch log, replaced together in one transaction, so that a write again of the same hours
leaves the same rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import pyarrow as pa

from metrics_pipeline.hours import HOUR, is_settled
from metrics_pipeline.insights.answers import Answer, LoadRow
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.sql import in_transaction
from metrics_pipeline.warehouse.tables import (
    PI_FETCHES,
    PI_LOAD,
    PI_PERSONAL_LOAD,
    PI_SQL,
    PI_STATEMENTS,
    Table,
)


@dataclass(frozen=True)
class HourFetched:
    """An hour of an instance, and whether PI still keeps it (an hour it no longer keeps is
    final: nothing can be fetched of it again)."""

    start: datetime
    kept: bool = True


@dataclass(frozen=True)
class PiWrite:
    rows_written: int
    rows_replaced: int
    digests: int
    settled_hours: int


def _load_table(instance: Instance, rows: Sequence[LoadRow], collected_at: datetime) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "ts": row.ts,
                **vars(instance),
                "dimension_group": row.group,
                "dimension_key": row.key,
                "key_type": row.key_type,
                "active_sessions": row.active_sessions,
                "collected_at": collected_at,
            }
            for row in rows
        ],
        schema=PI_LOAD.arrow_schema(),
    )


def _merge_texts(conn: duckdb.DuckDBPyConnection, table: Table, rows: str) -> None:
    """Merges `rows` into `table` (keyed by the instance and its fifth column, the text's id):
    a text seen before keeps its first period, gains the later last one, and keeps the
    longer text (a whole one over the 500 bytes PI cut it at)."""
    key, other, text = table.column_names[3:6]
    columns = ", ".join(table.column_names)
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE pi_merged_texts AS
        SELECT n.account_id, n.region, n.instance_id, n.{key},
               coalesce(n.{other}, o.{other}) AS {other},
               CASE WHEN length(coalesce(o.{text}, '')) > length(coalesce(n.{text}, ''))
                    THEN o.{text} ELSE n.{text} END AS {text},
               least(n.first_seen, coalesce(o.first_seen, n.first_seen)) AS first_seen,
               greatest(n.last_seen, coalesce(o.last_seen, n.last_seen)) AS last_seen
        FROM {rows} n LEFT JOIN {table.name} o USING (account_id, region, instance_id, {key})
        """
    )
    conn.execute(
        f"""
        DELETE FROM {table.name} s USING pi_merged_texts m
        WHERE s.account_id = m.account_id AND s.region = m.region
          AND s.instance_id = m.instance_id AND s.{key} = m.{key}
        """
    )
    conn.execute(f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM pi_merged_texts")
    conn.execute("DROP TABLE pi_merged_texts")


def replace_pi_hours(
    conn: duckdb.DuckDBPyConnection,
    instance: Instance,
    hours: Sequence[HourFetched],
    answer: Answer,
    fetched_at: datetime,
    settle_delay: timedelta,
    run_id: str,
) -> PiWrite:
    """Replaces `instance`'s load rows and fetch log entries of `hours` (consecutive), and
    merges the digests into rds_pi_statements (the first and last period each had load)."""
    start, end = hours[0].start, hours[-1].start + HOUR
    key = {**vars(instance), "start": start, "end": end}
    where = "account_id = $account_id AND region = $region AND instance_id = $instance_id"
    settled = [not h.kept or is_settled(h.start, fetched_at, settle_delay) for h in hours]
    per_hour: dict[datetime, int] = {}
    for row in answer.rows:
        hour = row.ts.replace(minute=0, second=0, microsecond=0)
        per_hour[hour] = per_hour.get(hour, 0) + 1
    fetches = pa.Table.from_pylist(
        [
            {
                "hour": h.start,
                **vars(instance),
                "fetched_at": fetched_at,
                "datapoints": per_hour.get(h.start, 0),
                "settled": final,
                "run_id": run_id,
            }
            for h, final in zip(hours, settled, strict=True)
        ],
        schema=PI_FETCHES.arrow_schema(),
    )
    tables = {
        "pi_load_rows": _load_table(instance, answer.of(personal=False), fetched_at),
        "pi_personal_rows": _load_table(instance, answer.of(personal=True), fetched_at),
        "pi_fetched_hours": fetches,
        "pi_digests": pa.Table.from_pylist(
            [{**vars(instance), **vars(d)} for d in answer.digests],
            schema=PI_STATEMENTS.arrow_schema(),
        ),
        "pi_sql_texts": pa.Table.from_pylist(
            [{**vars(instance), **vars(t)} for t in answer.sql], schema=PI_SQL.arrow_schema()
        ),
    }
    for name, table in tables.items():
        conn.register(name, table)

    def write() -> PiWrite:
        replaced = written = 0
        for table, rows in ((PI_LOAD, "pi_load_rows"), (PI_PERSONAL_LOAD, "pi_personal_rows")):
            [(gone,)] = conn.execute(
                f"DELETE FROM {table.name} WHERE {where} AND ts >= $start AND ts < $end", key
            ).fetchall()
            [(added,)] = conn.execute(f"INSERT INTO {table.name} SELECT * FROM {rows}").fetchall()
            replaced, written = replaced + gone, written + added
        conn.execute(
            f"DELETE FROM {PI_FETCHES.name} WHERE {where} AND hour >= $start AND hour < $end", key
        )
        conn.execute(f"INSERT INTO {PI_FETCHES.name} SELECT * FROM pi_fetched_hours")
        _merge_texts(conn, PI_STATEMENTS, "pi_digests")
        _merge_texts(conn, PI_SQL, "pi_sql_texts")
        return PiWrite(int(written), int(replaced), len(answer.digests), sum(settled))

    try:
        return in_transaction(conn, write)
    finally:
        for name in tables:
            conn.unregister(name)
