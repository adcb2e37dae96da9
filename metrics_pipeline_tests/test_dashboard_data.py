"""What the dashboard reads, through the analysts' reader: a metric from the tier that holds
the range, and the inventory's moments (creation, class changes)."""

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from metrics_pipeline.analysts.query import QueryError
from metrics_pipeline.dashboard.data import Reader, SharedReader, inventory_markers, metric_series
from metrics_pipeline.dashboard.figures import Marker
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.resources import WarehouseResource

pytestmark = pytest.mark.storage_neutral


def storage_of(warehouse: WarehouseResource) -> StorageSettings:
    return StorageSettings(
        duckdb_path=Path(warehouse.database),
        warehouse=warehouse.lake_catalog or None,
        lake_data_path=warehouse.lake_data_path or None,
    )


NOW = datetime(2026, 12, 1, 12, 7)
ORDERS = Instance("123456789012", "us-east-1", "orders-db")
CREATED = datetime(2026, 10, 1, 9, 30)
RESIZED = datetime(2026, 11, 30, 8, 0)


@pytest.fixture
def reader(warehouse: WarehouseResource) -> Reader:
    warehouse.prepare()
    key = vars(ORDERS)
    with warehouse.connect() as conn:
        conn.execute(
            "INSERT INTO rds_instances (account_id, region, instance_id, instance_class, "
            "create_time, first_seen, last_seen) VALUES "
            "($account_id, $region, $instance_id, 'db.r6g.xlarge', $created, $created, $now)",
            {**key, "created": CREATED, "now": NOW},
        )
        for valid_from, klass in ((CREATED, "db.r6g.large"), (RESIZED, "db.r6g.xlarge")):
            conn.execute(
                "INSERT INTO rds_instance_history (account_id, region, instance_id, "
                "instance_class, valid_from, last_seen) VALUES "
                "($account_id, $region, $instance_id, $class, $from, $from)",
                {**key, "class": klass, "from": valid_from},
            )
        for n in range(3):
            conn.execute(
                "INSERT INTO rds_metrics (ts, account_id, region, instance_id, metric, unit, "
                "average, minimum, maximum, collected_at) VALUES "
                "($ts, $account_id, $region, $instance_id, 'CPUUtilization', 'Percent', "
                "$avg, $avg - 1, $avg + 1, $now)",
                {**key, "ts": NOW - timedelta(minutes=65 - 5 * n), "avg": 10.0 * n, "now": NOW},
            )
    return Reader(storage_of(warehouse))


def test_a_recent_range_is_read_from_the_raw_tier_in_time_order(reader: Reader) -> None:
    read = metric_series(ORDERS, "CPUUtilization", "now-2h", "now", reader, NOW)
    assert read.choice.tier == "raw" and read.unit == "Percent"
    assert read.of("CPUUtilization").to_dict("list") == {
        "ts": [NOW - timedelta(minutes=m) for m in (65, 60, 55)],
        "average": [0.0, 10.0, 20.0],
        "minimum": [-1.0, 9.0, 19.0],
        "maximum": [1.0, 11.0, 21.0],
    }


def test_the_inventory_says_when_it_was_created_and_resized(reader: Reader) -> None:
    assert inventory_markers(ORDERS, reader) == [
        Marker(CREATED, "created"),
        Marker(RESIZED, "db.r6g.large → db.r6g.xlarge"),
    ]


def test_a_range_outside_every_tier_is_refused_by_name(reader: Reader) -> None:
    with pytest.raises(QueryError, match=r"end \(2026-11-01 00:00\) must be after start"):
        metric_series(ORDERS, "CPUUtilization", "2026-11-02", "2026-11-01", reader, NOW)


def test_the_instance_page_draws_the_stored_values_and_says_what_it_read(
    reader: Reader,
) -> None:
    from metrics_pipeline.dashboard.app import instance_charts

    key = "123456789012/us-east-1/orders-db"
    [chart], line = instance_charts(reader, key, "day", NOW)
    assert chart.id == "metric-CPUUtilization"
    assert {trace.name: list(trace.y) for trace in go.Figure(chart.figure).data}["average"] == [
        0.0,
        10.0,
        20.0,
    ]
    assert line.startswith("read the raw tier (rds_metrics)")
    # The resize of yesterday is within the week, the creation is not.
    [chart], _ = instance_charts(reader, key, "week", NOW)
    assert [a.text for a in go.Figure(chart.figure).layout.annotations] == [
        "db.r6g.large → db.r6g.xlarge"
    ]


@pytest.mark.parametrize(
    ("instance", "span", "refused"),
    [
        (None, "day", "instance: choose one (account/region/id)."),
        ("123456789012/us-east-1/orders-db' OR '1'='1", "day", "is not in the inventory"),
        ("123456789012/us-east-1/orders-db; DROP TABLE rds_metrics", "day", "not in the inventory"),
        ("../../../etc/passwd", "day", "is not in the inventory"),
        ("123456789012/us-east-1/" + "x" * 10_000, "day", "…' is not in the inventory"),
        ("123456789012/us-east-1/orders-db", "now-1y", "range: 'now-1y' is not offered"),
        ("123456789012/us-east-1/orders-db", None, "range: 'None' is not offered"),
    ],
)
def test_hostile_parameters_get_one_line_and_read_nothing(
    reader: Reader, instance: str | None, span: str | None, refused: str
) -> None:
    from metrics_pipeline.dashboard.app import instance_charts

    [shown], line = instance_charts(reader, instance, span, NOW)
    assert refused in shown.children and len(shown.children) < 200
    assert line == ""
    # The table is still there, as it was.
    [again], _ = instance_charts(reader, "123456789012/us-east-1/orders-db", "day", NOW)
    assert {trace.name: list(trace.y) for trace in go.Figure(again.figure).data}["average"] == [
        0.0,
        10.0,
        20.0,
    ]


def test_the_fleet_heatmap_holds_each_instances_daily_p95(warehouse: WarehouseResource) -> None:
    """Two accounts each with an orders-db (labelled with account and region), one users-db;
    each cell the p95 of that day's period averages, computed here from what was stored."""
    from metrics_pipeline.dashboard.data import daily_p95
    from metrics_pipeline.dashboard.figures import heatmap_figure

    warehouse.prepare()
    stored: dict[tuple[str, datetime], list[float]] = {}
    days = [datetime(2026, 11, 30), datetime(2026, 12, 1)]
    subjects = [("111111111111", "orders-db"), ("222222222222", "orders-db"),
                ("111111111111", "users-db")]  # fmt: skip
    with warehouse.connect() as conn:
        for s, (account, instance_id) in enumerate(subjects):
            for d, day in enumerate(days):
                for n in range(12):
                    value = float((s + 1) * 10 + d * 5 + n)
                    ts = day + timedelta(minutes=5 * n)
                    stored.setdefault((f"{account}/{instance_id}", day), []).append(value)
                    conn.execute(
                        "INSERT INTO rds_metrics (ts, account_id, region, instance_id, metric, "
                        "average, collected_at) VALUES (?, ?, 'us-east-1', ?, "
                        "'CPUUtilization', ?, ?)",
                        [ts, account, instance_id, value, NOW],
                    )
    frame = daily_p95("CPUUtilization", 2, Reader(storage_of(warehouse)), NOW)
    figure = heatmap_figure(frame, "CPUUtilization", "Percent")
    [heatmap] = figure.data
    assert list(heatmap.y) == [
        "orders-db (111111111111, us-east-1)",
        "orders-db (222222222222, us-east-1)",
        "users-db",
    ]
    assert [pd.Timestamp(x) for x in heatmap.x] == days
    expected = [
        [float(np.percentile(stored[(f"{a}/{i}", day)], 95)) for day in days] for a, i in subjects
    ]
    assert np.allclose(heatmap.z, expected)
    assert heatmap.z.shape == (3, 2)


def test_the_shared_reader_sees_a_write_once_it_is_older_than_its_age(
    warehouse: WarehouseResource, reader: Reader
) -> None:
    clock = [0.0]
    shared = SharedReader(reader.storage, timedelta(seconds=30), clock=lambda: clock[0])

    def rows() -> int:
        with shared.cursor() as conn:
            [(count,)] = conn.execute("SELECT count(*) FROM rds_metrics").fetchall()
        return int(count)

    try:
        before = rows()
        with warehouse.connect() as conn:
            conn.execute(
                "INSERT INTO rds_metrics (ts, account_id, region, instance_id, metric, average, "
                "collected_at) VALUES ($now, '123456789012', 'us-east-1', 'orders-db', "
                "'FreeableMemory', 1.0, $now)",
                {"now": NOW},
            )
        clock[0] = 30.0
        assert rows() == before  # still the reader opened at 0
        clock[0] = 30.5
        assert rows() == before + 1
    finally:
        shared.close()
