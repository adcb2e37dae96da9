"""The inventory's history: every version of every instance, kept when the instance is gone, a
new version for a class change and for a name used again by another database."""

from datetime import datetime, timedelta
from typing import Any

import duckdb
import pytest

from metrics_pipeline.collection import store
from metrics_pipeline.collection.store import record_history, upsert_instances
from metrics_pipeline.warehouse.migrations import SCHEMA_VERSION
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import VERSION_TABLE
from metrics_pipeline.warehouse.tables import (
    CLUSTER_PLACE,
    CLUSTERS,
    DBI_RESOURCE_ID,
    INSTANCE_HISTORY,
    INSTANCES,
    PERFORMANCE_INSIGHTS,
)

pytestmark = pytest.mark.storage_neutral

T0 = datetime(2026, 11, 20, 10, 0)
HISTORY_COLUMNS = (
    "instance_id, dbi_resource_id, create_time, instance_class, engine_version, valid_from, "
    "last_seen"
)


def described(
    instance_id: str,
    dbi_resource_id: str | None,
    instance_class: str = "db.r6g.large",
    created: datetime = T0 - timedelta(days=400),
) -> dict[str, Any]:
    """An instance as discovery reports it (collection/inventory.py's record)."""
    return {
        "account_id": "123456789012",
        "region": "us-east-1",
        "instance_id": instance_id,
        "engine": "postgres",
        "engine_version": "16.4",
        "instance_class": instance_class,
        "allocated_storage_gb": 100,
        "multi_az": False,
        "status": "available",
        "create_time": created,
        "tags": {"team": "shop"},
        "dbi_resource_id": dbi_resource_id,
    }


def history(warehouse: WarehouseResource) -> list[tuple[Any, ...]]:
    with warehouse.connect() as conn:
        return conn.execute(
            f"SELECT {HISTORY_COLUMNS} FROM {INSTANCE_HISTORY.name} ORDER BY instance_id, "
            "valid_from"
        ).fetchall()


def test_each_version_is_kept_from_its_first_discovery_to_its_last(
    warehouse: WarehouseResource,
) -> None:
    old = T0 - timedelta(days=400)
    recreated = T0 + timedelta(hours=2, minutes=30)
    seen = [T0 + timedelta(hours=h) for h in range(4)]
    discoveries = [
        [described("orders-db", "db-A"), described("users-db", "db-U")],
        [described("orders-db", "db-A"), described("users-db", "db-U")],
        # users-db is deleted; orders-db moves to a larger class.
        [described("orders-db", "db-A", "db.r6g.xlarge")],
        # orders-db is deleted and another database is created under its name.
        [described("orders-db", "db-B", "db.t3.medium", recreated)],
    ]
    for seen_at, records in zip(seen, discoveries, strict=True):
        with warehouse.connect() as conn:
            upsert_instances(conn, records, seen_at)
    with warehouse.connect() as conn:  # the same discovery again changes nothing
        upsert_instances(conn, discoveries[-1], seen[-1])

    assert history(warehouse) == [
        ("orders-db", "db-A", old, "db.r6g.large", "16.4", seen[0], seen[1]),
        ("orders-db", "db-A", old, "db.r6g.xlarge", "16.4", seen[2], seen[2]),
        ("orders-db", "db-B", recreated, "db.t3.medium", "16.4", seen[3], seen[3]),
        ("users-db", "db-U", old, "db.r6g.large", "16.4", seen[0], seen[1]),
    ]
    with warehouse.connect() as conn:
        inventory = conn.execute(
            f"SELECT instance_id, {DBI_RESOURCE_ID.name}, instance_class, first_seen, last_seen "
            f"FROM {INSTANCES.name} ORDER BY instance_id"
        ).fetchall()
    assert inventory == [
        ("orders-db", "db-B", "db.t3.medium", seen[0], seen[3]),
        ("users-db", "db-U", "db.r6g.large", seen[0], seen[1]),
    ]


def test_a_version_2_warehouse_starts_the_history_with_what_its_inventory_knows(
    warehouse: WarehouseResource,
) -> None:
    first, last = T0, T0 + timedelta(hours=5)
    with warehouse.connect() as conn:
        upsert_instances(conn, [described("orders-db", None)], first)
        upsert_instances(conn, [described("orders-db", None)], last)
        # As schema version 2 left it: no identifier, no history, no cluster.
        conn.execute(f"DROP TABLE {INSTANCE_HISTORY.name}")
        conn.execute(f"DROP TABLE {CLUSTERS.name}")
        for column in (DBI_RESOURCE_ID, *CLUSTER_PLACE, *PERFORMANCE_INSIGHTS):
            conn.execute(f"ALTER TABLE {INSTANCES.name} DROP COLUMN {column.name}")
        conn.execute(f"DELETE FROM {VERSION_TABLE} WHERE version > 2")

    warehouse.prepare()

    old = T0 - timedelta(days=400)
    assert history(warehouse) == [("orders-db", None, old, "db.r6g.large", "16.4", first, last)]
    with warehouse.connect() as conn:
        [(version,)] = conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchall()
        assert version == SCHEMA_VERSION == 6
        # The next discovery brings the identifier into the same version.
        upsert_instances(conn, [described("orders-db", "db-A")], last + timedelta(hours=1))
    assert history(warehouse) == [
        ("orders-db", "db-A", old, "db.r6g.large", "16.4", first, last + timedelta(hours=1))
    ]


def test_a_discovery_that_fails_while_recording_history_leaves_both_tables_as_they_were(
    warehouse: WarehouseResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = T0
    with warehouse.connect() as conn:
        upsert_instances(conn, [described("orders-db", "db-A")], first)

    def history_then_crash(conn: duckdb.DuckDBPyConnection, seen_at: datetime) -> None:
        record_history(conn, seen_at)
        raise OSError("No space left on device")

    monkeypatch.setattr(store, "record_history", history_then_crash)
    with warehouse.connect() as conn, pytest.raises(OSError, match="No space left"):
        upsert_instances(
            conn,
            [described("orders-db", "db-A", "db.r6g.xlarge"), described("users-db", "db-U")],
            first + timedelta(hours=1),
        )

    old = T0 - timedelta(days=400)
    assert history(warehouse) == [("orders-db", "db-A", old, "db.r6g.large", "16.4", first, first)]
    with warehouse.connect() as conn:
        inventory = conn.execute(
            f"SELECT instance_id, instance_class, last_seen FROM {INSTANCES.name}"
        ).fetchall()
    assert inventory == [("orders-db", "db.r6g.large", first)]
