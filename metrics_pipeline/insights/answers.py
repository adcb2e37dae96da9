"""What to ask Performance Insights for an instance's hour, and what its answer becomes: rows of
load per period and key, a group's remainder beyond PI's limit as `other`, and each SQL digest
once. Pure: no client, no warehouse."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from metrics_pipeline.catalog import (
    PI_GROUPS,
    PI_LOAD_METRIC,
    PI_OTHER,
    PI_SQL_GROUP,
    PI_STATEMENT_GROUP,
    PI_TOTAL,
    PiGroup,
)

# PI's most keys per group (DimensionGroup.Limit) and entries per page (MaxResults): both 25.
GROUP_LIMIT = 25
MAX_RESULTS = 25
# A group's keys may add up to a little more than the total (each value is rounded by PI).
SUM_TOLERANCE = 1e-6


def metric_queries(groups: Sequence[PiGroup] = PI_GROUPS) -> list[dict[str, Any]]:
    """One GetResourceMetrics query per group (PI allows 15 a call): each answers with the
    instance's total load and that of the group's top keys."""
    return [
        {
            "Metric": PI_LOAD_METRIC,
            "GroupBy": {"Group": g.name, "Dimensions": g.dimensions, "Limit": GROUP_LIMIT},
        }
        for g in groups
    ]


@dataclass(frozen=True)
class LoadRow:
    ts: datetime  # naive UTC, the period's start
    group: str
    key: str
    key_type: str | None
    active_sessions: float


@dataclass(frozen=True)
class Digest:
    digest_id: str
    db_id: str | None
    statement: str | None
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True)
class SqlText:
    """A statement with its literals (the group db.sql), under its digest."""

    sql_id: str
    digest_id: str | None
    statement: str | None
    first_seen: datetime
    last_seen: datetime


T = TypeVar("T", Digest, SqlText)


def _merged(known: Sequence[T], new: Sequence[T]) -> list[T]:
    """Each text once (by its id, the first field), from its first to its last period with
    load; the longer text kept."""
    seen: dict[str, T] = {getattr(t, fields(t)[0].name): t for t in known}
    for text in new:
        key = getattr(text, fields(text)[0].name)
        old = seen.get(key)
        seen[key] = (
            text
            if old is None
            else replace(
                text,
                statement=max(text.statement or "", old.statement or "", key=len) or None,
                first_seen=min(old.first_seen, text.first_seen),
                last_seen=max(old.last_seen, text.last_seen),
            )
        )
    return list(seen.values())


@dataclass
class Answer:
    """An instance's load over a window as rows, and the digests (and statements with their
    literals, when collected) that had load in it."""

    rows: list[LoadRow] = field(default_factory=list)
    digests: list[Digest] = field(default_factory=list)
    sql: list[SqlText] = field(default_factory=list)

    def add(self, part: Answer) -> None:
        """`part`'s rows, and its texts merged with those already seen (each once)."""
        self.rows += part.rows
        self.digests = _merged(self.digests, part.digests)
        self.sql = _merged(self.sql, part.sql)

    def of(self, personal: bool) -> list[LoadRow]:
        """The rows of the groups that name people, or of the others (the total included)."""
        return [row for row in self.rows if (row.group in PERSONAL_GROUPS) == personal]


PERSONAL_GROUPS = frozenset(g.name for g in (*PI_GROUPS, PI_SQL_GROUP) if g.personal)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _points(entry: Mapping[str, Any], start: datetime, end: datetime) -> dict[datetime, float]:
    """An entry's periods of [start, end) that have a value (PI leaves out the value of a
    period it has no data for)."""
    points = {}
    for point in entry.get("DataPoints", []):
        ts = _naive(point["Timestamp"])
        if "Value" in point and start <= ts < end:
            points[ts] = float(point["Value"])
    return points


def _group_of(dimensions: Mapping[str, str], groups: Sequence[PiGroup]) -> PiGroup | None:
    return next((g for g in groups if g.key in dimensions), None)


def read_answer(
    entries: Iterable[Mapping[str, Any]],
    start: datetime,
    end: datetime,
    groups: Sequence[PiGroup] = PI_GROUPS,
) -> Answer:
    """The rows of GetResourceMetrics' MetricList (every page's, in order; periods aligned to
    their start) within [start, end).

    The total comes once per query: it is kept once. Where a group returned its limit of keys,
    what the total holds beyond their sum is stored as the key `other`; where it returned
    fewer, its keys are all of the load and no `other` is stored."""
    total: dict[datetime, float] = {}
    keys: dict[str, list[tuple[Mapping[str, str], dict[datetime, float]]]] = defaultdict(list)
    for entry in entries:
        dimensions = entry["Key"].get("Dimensions") or {}
        points = _points(entry, start, end)
        if not dimensions:
            total.update(points)
            continue
        group = _group_of(dimensions, groups)
        if group is not None:
            keys[group.name].append((dimensions, points))
    answer = Answer()
    answer.rows += [LoadRow(ts, PI_TOTAL, "", None, value) for ts, value in sorted(total.items())]
    for group in groups:
        listed = keys.get(group.name, [])
        summed: dict[datetime, float] = defaultdict(float)
        for dimensions, points in listed:
            key_type = dimensions.get(group.key_type) if group.key_type else None
            for ts, value in sorted(points.items()):
                answer.rows.append(LoadRow(ts, group.name, dimensions[group.key], key_type, value))
                summed[ts] += value
        if len(listed) >= GROUP_LIMIT:
            answer.rows += [
                LoadRow(ts, group.name, PI_OTHER, None, value - summed[ts])
                for ts, value in sorted(total.items())
                if value - summed[ts] > SUM_TOLERANCE
            ]
        if group.name == PI_STATEMENT_GROUP:
            answer.digests += _texts(listed, group, Digest)
        elif group.name == PI_SQL_GROUP.name:
            answer.sql += _texts(listed, group, SqlText)
    return answer


def _texts(
    listed: Sequence[tuple[Mapping[str, str], Mapping[datetime, float]]],
    group: PiGroup,
    kind: type[T],
) -> list[T]:
    """The group's texts that had load: its key, its other dimension (a digest's engine id,
    a statement's digest) and its text (the group's last dimension)."""
    other, statement = group.extra
    texts = []
    for dimensions, points in listed:
        loaded = sorted(ts for ts, value in points.items() if value > 0)
        if loaded:
            texts.append(
                kind(
                    dimensions[group.key],
                    dimensions.get(other),
                    dimensions.get(statement),
                    loaded[0],
                    loaded[-1],
                )
            )
    return texts


def sum_problems(rows: Sequence[LoadRow]) -> list[str]:
    """Where a group's keys (its `other` included) add up to more than the instance's total
    of the same period: PI's keys are parts of the total, so this is never right."""
    total = {row.ts: row.active_sessions for row in rows if row.group == PI_TOTAL}
    summed: dict[tuple[str, datetime], float] = defaultdict(float)
    for row in rows:
        if row.group != PI_TOTAL:
            summed[(row.group, row.ts)] += row.active_sessions
    return [
        f"{group} at {ts:%Y-%m-%d %H:%M}: keys {value:.6g} > total {total.get(ts, 0.0):.6g}"
        for (group, ts), value in sorted(summed.items())
        if value > total.get(ts, 0.0) + SUM_TOLERANCE * max(1.0, value)
    ]
