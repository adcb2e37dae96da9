"""Small SQL helpers every writer uses: one transaction (serialised with other machines'
writers on a lake, run again when it lost to another commit), one literal."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import Any

import duckdb

# A transaction that lost to another writer's commit is run this many times in all.
CONFLICT_ATTEMPTS = 8

# The lock a lake connection's writes take (lake.WriteLock.held), by connection.
_write_locks: dict[int, Callable[[], AbstractContextManager[None]]] = {}


class ConflictError(RuntimeError):
    """A write lost to other writers' commits every time it was tried."""


@contextmanager
def writes_locked_by(
    conn: duckdb.DuckDBPyConnection, lock: Callable[[], AbstractContextManager[None]]
) -> Iterator[None]:
    """Every in_transaction on `conn` inside the block holds `lock()` from begin to commit."""
    _write_locks[id(conn)] = lock
    try:
        yield
    finally:
        _write_locks.pop(id(conn), None)


def in_transaction(conn: duckdb.DuckDBPyConnection, statements: Callable[[], Any]) -> Any:
    """Runs `statements` in one transaction and commits it; all or nothing."""
    lock = _write_locks.get(id(conn), nullcontext)

    def attempt() -> Any:
        with lock():
            conn.begin()
            try:
                result = statements()
                conn.commit()
            except BaseException:
                with suppress(duckdb.Error):  # a failed commit has ended the transaction
                    conn.rollback()
                raise
            return result

    return retry_conflicts(attempt)


def is_conflict(error: BaseException) -> bool:
    return isinstance(error, duckdb.TransactionException) and "conflict" in str(error).lower()


def retry_conflicts(
    attempt: Callable[[], Any],
    attempts: int = CONFLICT_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Runs `attempt` (a whole transaction) again when its commit lost to another writer's
    (DuckLake checks at commit), after a jittered, doubling pause; one clear error when
    every attempt lost. A DuckDB file has one writer and never gets here twice."""
    for number in range(1, attempts + 1):
        try:
            return attempt()
        except duckdb.TransactionException as error:
            if not is_conflict(error):
                raise
            if number == attempts:
                last = str(error).strip().splitlines()[-1]
                raise ConflictError(
                    f"The write lost to other writers' commits {attempts} times in a row "
                    f"({last}); nothing was written. Other runs are writing the same "
                    "tables: run it again."
                ) from None
            sleep(min(0.05 * 2**number, 5.0) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def sql_literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"
