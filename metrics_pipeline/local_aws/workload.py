"""What Performance Insights sees of a simulated database, computed on demand like signals.py.

Each minute's load (average active sessions) is the DBLoad CloudWatch serves for that minute,
split among wait events, SQL statements, users, client hosts and databases by shares that
drift with the time of day and add up to the whole every minute. Nothing is stored: a window
costs a few numpy operations per key.

The splits are independent of one another (a user's sessions wait as everyone's do), so the
load of any combination of keys, one set per split, is the total times each split's share.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np

from metrics_pipeline.local_aws.signals import (
    DAY_MINUTES,
    MINUTE,
    Profile,
    minute_values,
    stable_key,
    uniform,
)

# The wait events of each engine family, (name, type); CPU first, its share being the CPU's.
WAIT_EVENTS = {
    "postgres": (
        ("CPU", "CPU"),
        ("IO:DataFileRead", "IO"),
        ("Lock:transactionid", "Lock"),
        ("LWLock:BufferMapping", "LWLock"),
        ("IO:WALWrite", "IO"),
        ("Client:ClientRead", "Client"),
    ),
    "mysql": (
        ("CPU", "CPU"),
        ("wait/io/file/innodb/innodb_data_file", "io"),
        ("wait/io/table/sql/handler", "io"),
        ("wait/synch/mutex/innodb/buf_pool_mutex", "synch"),
        ("wait/lock/table/sql/handler", "lock"),
        ("wait/io/socket/sql/client_connection", "io"),
    ),
    "sqlserver": (
        ("CPU", "CPU"),
        ("PAGEIOLATCH_SH", "Buffer IO"),
        ("LCK_M_X", "Lock"),
        ("WRITELOG", "Tran Log IO"),
        ("ASYNC_NETWORK_IO", "Network IO"),
    ),
}
# The statements every simulated database runs: a text with ? for each literal, and the
# literals. The report is longer than the 500 bytes PI returns of a statement.
STATEMENTS = (
    (
        "SELECT id, status, total FROM orders WHERE customer_id = ? "
        "ORDER BY created_at DESC LIMIT ?",
        ("48213", "20"),
    ),
    (
        "UPDATE inventory SET quantity = quantity - ? WHERE product_id = ? AND quantity >= ?",
        ("1", "90211", "1"),
    ),
    (
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (?, ?, ?, ?)",
        ("771023", "90211", "1", "19.99"),
    ),
    ("DELETE FROM sessions WHERE expires_at < ?", ("'2024-06-01 00:00:00'",)),
    (
        "SELECT c.id, c.name, c.email, c.country, c.segment, c.created_at, "
        "COUNT(o.id) AS orders, SUM(o.total) AS lifetime_value, AVG(o.total) AS average_order, "
        "MAX(o.created_at) AS last_order, MIN(o.created_at) AS first_order, "
        "SUM(CASE WHEN o.status = ? THEN 1 ELSE 0 END) AS returned_orders, "
        "SUM(CASE WHEN o.channel = ? THEN o.total ELSE 0 END) AS mobile_revenue "
        "FROM customers c JOIN orders o ON o.customer_id = c.id "
        "LEFT JOIN order_items i ON i.order_id = o.id "
        "LEFT JOIN products p ON p.id = i.product_id "
        "WHERE o.created_at >= ? AND o.created_at < ? AND o.status IN (?, ?, ?) "
        "AND p.category NOT IN (?, ?) "
        "GROUP BY c.id, c.name, c.email, c.country, c.segment, c.created_at "
        "HAVING SUM(o.total) > ? ORDER BY lifetime_value DESC, last_order DESC LIMIT ?",
        (
            "'returned'",
            "'mobile'",
            "'2024-01-01'",
            "'2025-01-01'",
            "'paid'",
            "'shipped'",
            "'delivered'",
            "'gift-cards'",
            "'samples'",
            "1000",
            "100",
        ),
    ),
)
USERS = ("app", "reporting", "admin")
HOSTS = ("10.0.1.17", "10.0.2.34", "10.0.3.51", "172.31.40.9")
# Two databases of the application's, and the engine's own.
DATABASES = ("shop", "analytics")
ENGINE_DATABASE = {"postgres": "postgres", "mysql": "mysql", "sqlserver": "master"}

# Each dimension group: the split its load comes from, and its dimensions. A group over the
# same split as another adds up that one's keys (db.wait_event_type those of db.wait_event).
GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "db.wait_event": ("waits", ("db.wait_event.name", "db.wait_event.type")),
    "db.wait_event_type": ("waits", ("db.wait_event_type.name",)),
    "db.sql_tokenized": (
        "sql",
        ("db.sql_tokenized.id", "db.sql_tokenized.db_id", "db.sql_tokenized.statement"),
    ),
    "db.sql": ("sql", ("db.sql.id", "db.sql.db_id", "db.sql.statement", "db.sql.tokenized_id")),
    "db.user": ("users", ("db.user.id", "db.user.name")),
    "db.host": ("hosts", ("db.host.id", "db.host.name")),
    "db": ("databases", ("db.name",)),
}
SPLIT_OF_DIMENSION = {d: split for split, dimensions in GROUPS.values() for d in dimensions}

Key = Mapping[str, str]  # a split's key: its value of every dimension of the groups over it


def family(engine: str) -> str:
    """The engine family whose wait events and placeholders an engine has."""
    if "postgres" in engine:
        return "postgres"
    return "sqlserver" if engine.startswith("sqlserver") else "mysql"


def _filled(text: str, values: tuple[str, ...]) -> str:
    first, *rest = text.split("?")
    return first + "".join(value + part for value, part in zip(values, rest, strict=True))


def _pi_id(text: str) -> str:
    """An identifier as PI makes them: a hash of the text."""
    return hashlib.sha1(text.encode()).hexdigest().upper()


def _db_id(text: str) -> str:
    """The engine's own identifier, or PI's stand-in for it (`pi-` and digits)."""
    return f"pi-{stable_key(text) % 10**10}"


def sql_key(text: str, literals: tuple[str, ...], engine_family: str) -> dict[str, str]:
    """A statement as both SQL groups see it: db.sql with its literals, db.sql_tokenized as
    the digest (PostgreSQL's numbered placeholders, ? elsewhere)."""
    placeholders = tuple(
        f"${n}" if engine_family == "postgres" else "?" for n in range(1, len(literals) + 1)
    )
    digest, full = _filled(text, placeholders), _filled(text, literals)
    return {
        "db.sql_tokenized.id": _pi_id(digest),
        "db.sql_tokenized.db_id": _db_id(digest),
        "db.sql_tokenized.statement": digest,
        "db.sql.id": _pi_id(full),
        "db.sql.db_id": _db_id(full),
        "db.sql.statement": full,
        "db.sql.tokenized_id": _pi_id(digest),
    }


@cache
def split_keys(engine: str) -> dict[str, tuple[Key, ...]]:
    """Each split's keys for an engine (shared: not to be changed)."""
    engine_family = family(engine)
    return {
        "waits": tuple(
            {
                "db.wait_event.name": name,
                "db.wait_event.type": kind,
                "db.wait_event_type.name": kind,
            }
            for name, kind in WAIT_EVENTS[engine_family]
        ),
        "sql": tuple(sql_key(text, literals, engine_family) for text, literals in STATEMENTS),
        "users": tuple(
            {"db.user.id": str(16384 + n), "db.user.name": user} for n, user in enumerate(USERS)
        ),
        "hosts": tuple({"db.host.id": _db_id(host), "db.host.name": host} for host in HOSTS),
        "databases": tuple(
            {"db.name": name} for name in (*DATABASES, ENGINE_DATABASE[engine_family])
        ),
    }


def shares(key: int, count: int, minutes: np.ndarray) -> np.ndarray:
    """(minute, key) shares adding up to 1 each minute: a weight of each key's own, swinging
    over the day out of step with the others', and some noise."""
    keys = np.arange(count)
    weight = 0.05 + uniform(key, keys) ** 2
    phase = uniform(key ^ 0xA5A5, keys)
    day = (minutes % DAY_MINUTES / DAY_MINUTES)[:, None]
    swing = 1 + 0.5 * np.sin(2 * np.pi * (day + phase))
    noise = np.column_stack([uniform(stable_key(key, k), minutes) for k in range(count)])
    raw = weight * swing * (0.85 + 0.3 * noise)
    return np.asarray(raw / raw.sum(axis=1, keepdims=True))


@dataclass(frozen=True)
class Workload:
    """A database's load over consecutive minutes, and how each split divides it."""

    first_minute: int
    present: np.ndarray  # the minutes PI has data for
    total: np.ndarray
    keys: dict[str, tuple[Key, ...]]
    shares: dict[str, np.ndarray]  # (minute, key) per split


def workload(profile: Profile, engine: str, minutes: np.ndarray, present: np.ndarray) -> Workload:
    """The load of `minutes` (consecutive minute numbers): DBLoad, its CPU wait the share
    CPUUtilization says, the other waits and the other splits by `shares`."""
    keys = split_keys(engine)

    def split(name: str, count: int) -> np.ndarray:
        return shares(stable_key(profile.seed, profile.instance_id, "pi", name), count, minutes)

    cpu = minute_values(profile, "CPUUtilization", minutes) / 100
    waits = split("waits", len(keys["waits"]) - 1) * (1 - cpu)[:, None]
    return Workload(
        first_minute=int(minutes[0]),
        present=present,
        total=minute_values(profile, "DBLoad", minutes),
        keys=keys,
        shares={
            "waits": np.column_stack([cpu, waits]),
            **{name: split(name, len(keys[name])) for name in keys if name != "waits"},
        },
    )


def matching(keys: tuple[Key, ...], dimension: str, value: str) -> np.ndarray:
    return np.array([key[dimension] == value for key in keys])


def group_keys(keys: tuple[Key, ...], dimensions: tuple[str, ...]) -> list[tuple[Key, np.ndarray]]:
    """A group's distinct keys (its dimensions' values), each with the split's keys it adds up."""
    values = [tuple(key[d] for d in dimensions) for key in keys]
    return [
        (dict(zip(dimensions, distinct, strict=True)), np.array([v == distinct for v in values]))
        for distinct in dict.fromkeys(values)
    ]


Masks = Mapping[str, np.ndarray]  # per split, the keys selected (a split without one: all)


def narrowed(selected: Masks, split: str, mask: np.ndarray) -> dict[str, np.ndarray]:
    """`selected`, keeping of `split`'s keys only those `mask` keeps too."""
    return {**selected, split: selected[split] & mask if split in selected else mask}


def both(first: Masks, second: Masks) -> dict[str, np.ndarray]:
    """What both select."""
    selected = dict(first)
    for split, mask in second.items():
        selected = narrowed(selected, split, mask)
    return selected


def load(work: Workload, selected: Masks) -> np.ndarray:
    """Per minute, the load of the sessions whose keys are selected."""
    result = work.total
    for name, mask in selected.items():
        result = result * work.shares[name][:, mask].sum(axis=1)
    return result


STATISTICS = ("avg", "min", "max", "sum")


def periods(
    work: Workload, values: np.ndarray, start: int, end: int, period: int, statistic: str
) -> tuple[np.ndarray, np.ndarray]:
    """(period start epoch seconds, value) of each period of [start, end) with data: the
    statistic of its minutes; a period shorter than a minute is its minute's value."""
    if period < MINUTE:
        samples = np.arange(start, end, period) // MINUTE - work.first_minute
        grid, mask = values[samples][:, None], work.present[samples][:, None]
    else:
        first = start // MINUTE - work.first_minute
        count = (end - start) // MINUTE
        grid = values[first : first + count].reshape(-1, period // MINUTE)
        mask = work.present[first : first + count].reshape(-1, period // MINUTE)
    if statistic == "min":
        out = np.where(mask, grid, np.inf).min(axis=1)
    elif statistic == "max":
        out = np.where(mask, grid, -np.inf).max(axis=1)
    else:
        out = np.where(mask, grid, 0.0).sum(axis=1)
        if statistic == "avg":
            out = out / np.maximum(mask.sum(axis=1), 1)
    has_data = mask.any(axis=1)
    return np.arange(start, end, period)[has_data], out[has_data]
