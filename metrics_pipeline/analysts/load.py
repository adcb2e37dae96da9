"""What the databases were doing: Performance Insights' load by wait event, SQL digest,
database, user or host over a window, the top keys of each instance, and what changed
against a baseline window (before and after a deploy).

    from metrics_pipeline.analysts.load import top_load
    top_load("now-6h", "now", group="db.sql_tokenized", baseline=("now-30h", "now-24h"))

The load by user and by host, and the SQL text, name people: they are read only when
`personal` is asked (and kept by METRICS_PI_PERSONAL_RETENTION_DAYS)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime

import duckdb
import pandas as pd

from metrics_pipeline.analysts.query import (
    QueryError,
    _check_known,
    check_range,
    connect,
    parse_time,
)
from metrics_pipeline.catalog import PI_GROUPS, PI_SQL_GROUP, PI_STATEMENT_GROUP, PI_TOTAL
from metrics_pipeline.hours import naive_utc, utc_now
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.instances import read_inventory
from metrics_pipeline.warehouse.schema import table_exists
from metrics_pipeline.warehouse.tables import PI_LOAD, PI_PERSONAL_LOAD, PI_SQL, PI_STATEMENTS

GROUPS = {group.name: group for group in (*PI_GROUPS, PI_SQL_GROUP)}
DEFAULT_GROUP = "db.wait_event"
# The groups whose keys have a text: its table and the column of the key.
TEXTS = {
    PI_STATEMENT_GROUP: (PI_STATEMENTS.name, "digest_id"),
    PI_SQL_GROUP.name: (PI_SQL.name, "sql_id"),
}
MAX_TOP = 1000
KEY_COLUMNS = ["account_id", "region", "instance_id", "dimension_key"]


def _check_group(group: str, personal: bool) -> None:
    if group not in GROUPS:
        raise QueryError(
            f"group: '{group}' is not a Performance Insights group kept here; choose one of "
            f"{', '.join(GROUPS)}."
        )
    if GROUPS[group].personal and not personal:
        raise QueryError(
            f"group: {group} names people; ask for it with personal=True (--personal on the "
            "command line)."
        )


def _key_averages(
    conn: duckdb.DuckDBPyConnection,
    group: str,
    start: datetime,
    end: datetime,
    instances: Sequence[str],
    accounts: Sequence[str],
) -> pd.DataFrame:
    """Per instance and key of `group`: its average active sessions over the periods of
    [start, end) in which PI had the instance's load (a key absent from a period had none
    then), and its share of the instance's total."""
    table = PI_PERSONAL_LOAD if GROUPS[group].personal else PI_LOAD
    chosen = "(len($instances) = 0 OR list_contains($instances, instance_id)) AND " + (
        "(len($accounts) = 0 OR list_contains($accounts, account_id))"
    )
    return conn.execute(
        f"""
        WITH totals AS (
            SELECT account_id, region, instance_id, count(*) AS periods,
                   sum(active_sessions) AS total
            FROM {PI_LOAD.name}
            WHERE dimension_group = '{PI_TOTAL}' AND ts >= $start AND ts < $end AND {chosen}
            GROUP BY ALL
        )
        SELECT k.account_id, k.region, k.instance_id, k.dimension_key,
               any_value(k.key_type) AS key_type,
               sum(k.active_sessions) / any_value(t.periods) AS active_sessions,
               sum(k.active_sessions) / nullif(any_value(t.total), 0) AS share
        FROM {table.name} k JOIN totals t USING (account_id, region, instance_id)
        WHERE k.dimension_group = $group AND k.ts >= $start AND k.ts < $end
        GROUP BY ALL
        """,
        {
            "start": start,
            "end": end,
            "group": group,
            "instances": list(instances),
            "accounts": list(accounts),
        },
    ).df()


def top_load(
    start: str | datetime,
    end: str | datetime,
    group: str = DEFAULT_GROUP,
    instances: Sequence[str] | None = None,
    accounts: Sequence[str] | None = None,
    top: int = 10,
    baseline: tuple[str | datetime, str | datetime] | None = None,
    personal: bool = False,
    storage: StorageSettings | None = None,
    now: datetime | None = None,
    reader: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """Each instance's `top` keys of `group` over [start, end) by average active sessions,
    with their share of its load; with `baseline` (a window's start and end), the average
    then and the change, the top keys being those that changed most. SQL digests come with
    their text when `personal`. Read with `reader`, a sandboxed reader already open (the
    dashboard's), or else a new one."""
    storage = storage or StorageSettings.from_env()
    now = naive_utc(now) if now else utc_now()
    _check_group(group, personal)
    if not 1 <= top <= MAX_TOP:
        raise QueryError(f"top: {top} is not allowed; expected 1 to {MAX_TOP}.")
    retention, setting = (
        (storage.pi_personal_retention_days, "METRICS_PI_PERSONAL_RETENTION_DAYS")
        if GROUPS[group].personal
        else (storage.pi_retention_days, "METRICS_PI_RETENTION_DAYS")
    )
    windows = [
        check_range(
            parse_time("start", start, now), parse_time("end", end, now), retention, now, setting
        )
    ]
    if baseline is not None:
        windows.append(
            check_range(
                parse_time("baseline start", baseline[0], now),
                parse_time("baseline end", baseline[1], now),
                retention,
                now,
                setting,
            )
        )
    with nullcontext(reader) if reader is not None else connect(storage) as conn:
        if not table_exists(conn, PI_LOAD.name):
            raise QueryError(
                f"the warehouse has no {PI_LOAD.name} yet: the pipeline creates it when it "
                "next runs (schema version 6)."
            )
        inventory = read_inventory(conn)
        _check_known("instance", instances or [], [e.instance.instance_id for e in inventory])
        _check_known("account", accounts or [], sorted({e.instance.account_id for e in inventory}))
        frames = [
            _key_averages(conn, group, first, last, instances or [], accounts or [])
            for first, last in windows
        ]
        texts = TEXTS.get(group) if personal else None
        statements = (
            conn.execute(
                f"SELECT account_id, region, instance_id, {texts[1]} AS dimension_key, "
                f"statement FROM {texts[0]}"
            ).df()
            if texts and table_exists(conn, texts[0])
            else None
        )
    frame = frames[0]
    rank_by = "active_sessions"
    if baseline is not None:
        before = frames[1].rename(
            columns={"active_sessions": "baseline_sessions", "key_type": "baseline_key_type"}
        )
        frame = frame.drop(columns=["share"]).merge(
            before[[*KEY_COLUMNS, "baseline_key_type", "baseline_sessions"]],
            on=KEY_COLUMNS,
            how="outer",
        )
        frame["key_type"] = frame["key_type"].fillna(frame.pop("baseline_key_type"))
        frame[["active_sessions", "baseline_sessions"]] = frame[
            ["active_sessions", "baseline_sessions"]
        ].fillna(0.0)
        frame["change"] = frame["active_sessions"] - frame["baseline_sessions"]
        frame["magnitude"] = frame["change"].abs()
        rank_by = "magnitude"
    frame = (
        frame.sort_values(
            [*KEY_COLUMNS[:3], rank_by, "dimension_key"], ascending=[True] * 3 + [False, True]
        )
        .groupby(KEY_COLUMNS[:3], sort=False)
        .head(top)
        .drop(columns=["magnitude"], errors="ignore")
    )
    if statements is not None:
        frame = frame.merge(statements, on=KEY_COLUMNS, how="left")
    if GROUPS[group].key_type is None:  # only wait events have a type
        frame = frame.drop(columns=["key_type"])
    frame.insert(3, "dimension_group", group)
    return frame.reset_index(drop=True)
