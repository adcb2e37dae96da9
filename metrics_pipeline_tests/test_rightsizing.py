"""The rightsizing report on data with known answers: percentiles, extremes, the storage
trend and the longer windows' figures are computed here by hand (numpy, linear interpolation),
never read back from the code under test."""

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    evaluate_automation_conditions,
    instance_for_test,
    materialize,
)

from metrics_pipeline.hours import floor_hour
from metrics_pipeline.rightsizing.assets import (
    Evidence,
    Finding,
    RightsizingConfig,
    Verdict,
    assess,
    days_until_full,
    rightsizing_report,
)
from metrics_pipeline.rightsizing.windows import WINDOW_DAYS, read_windows, windows_markdown
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import ensure_schema
from metrics_pipeline.warehouse.tables import HOURLY, RIGHTSIZING_WINDOWS
from metrics_pipeline_tests.helpers import definitions_for_tests, make_collection

pytestmark = pytest.mark.storage_neutral

defs = definitions_for_tests()

MIB, GIB = 1024**2, 1024**3
PERIOD = timedelta(minutes=5)


def evidence(**figures: Any) -> Evidence:
    """A fully covered, unremarkable instance, with `figures` changed."""
    unremarkable: dict[str, Any] = {
        "account_id": "1", "region": "us-east-1", "instance_id": "db",
        "instance_class": "db.m5.large", "engine": "postgres", "periods": 864, "coverage": 1.0,
        "cpu_p95": 50.0, "connections_p95": 100.0, "freeable_memory_min_mib": 4096.0,
        "swap_max_mib": 0.0, "disk_queue_p95": 1.0, "free_storage_gib": 500.0,
        "storage_trend_gib_per_day": -1.0,
    }  # fmt: skip
    return Evidence(**{**unremarkable, **figures})


def test_unremarkable_instance_is_ok() -> None:
    assert assess(evidence(), RightsizingConfig()) == Finding(Verdict.OK, False, ())


def test_over_provisioned_needs_low_cpu_and_few_connections() -> None:
    thresholds = RightsizingConfig(cpu_low_pct=15, connections_low=5)
    assert assess(evidence(cpu_p95=12.34, connections_p95=3.0), thresholds) == Finding(
        Verdict.OVER, False, ("CPU p95 12.3% < 15%", "connections p95 3.0 < 5")
    )
    for busier in (
        {"cpu_p95": 15.0, "connections_p95": 3.0},
        {"cpu_p95": 12.34, "connections_p95": 5.0},
        {"cpu_p95": 12.34, "connections_p95": None},  # unknown connections prove nothing
    ):
        assert assess(evidence(**busier), thresholds).verdict is Verdict.OK


@pytest.mark.parametrize(
    ("figures", "reason"),
    [
        ({"cpu_p95": 95.26}, "CPU p95 95.3% > 90%"),
        ({"freeable_memory_min_mib": 300.0}, "freeable memory min 300.0 MiB < 512 MiB"),
        ({"swap_max_mib": 128.0}, "swap max 128.0 MiB > 100 MiB"),
        ({"disk_queue_p95": 4.5}, "disk queue p95 4.5 > 4"),
    ],
)
def test_each_sign_of_pressure_makes_under_provisioned(
    figures: dict[str, float], reason: str
) -> None:
    thresholds = RightsizingConfig(
        cpu_high_pct=90, freeable_memory_low_mib=512, swap_high_mib=100, disk_queue_high=4
    )
    assert assess(evidence(**figures), thresholds) == Finding(Verdict.UNDER, False, (reason,))
    [(name, _)] = figures.items()
    at_the_limit = {
        "cpu_p95": 90, "freeable_memory_min_mib": 512, "swap_max_mib": 100, "disk_queue_p95": 4,
    }[name]  # fmt: skip
    assert assess(evidence(**{name: at_the_limit}), thresholds).verdict is Verdict.OK


def test_pressure_outweighs_an_idle_cpu_and_every_reason_is_listed() -> None:
    starved = evidence(
        cpu_p95=5.0, connections_p95=1.0, freeable_memory_min_mib=100.0, swap_max_mib=300.0
    )
    assert assess(starved, RightsizingConfig()) == Finding(
        Verdict.UNDER,
        False,
        ("freeable memory min 100.0 MiB < 256 MiB", "swap max 300.0 MiB > 256 MiB"),
    )


def test_days_until_full_follows_the_trend() -> None:
    assert days_until_full(30.0, -2.0) == 15.0
    assert days_until_full(0.0, -1.0) == 0.0
    for free, trend in [(30.0, 0.0), (30.0, 0.5), (None, -1.0), (30.0, None)]:
        assert days_until_full(free, trend) is None


def test_storage_at_risk_within_the_horizon_whatever_the_verdict() -> None:
    thresholds = RightsizingConfig(storage_horizon_days=10, cpu_low_pct=20, connections_low=20)
    filling = evidence(
        cpu_p95=10.0, connections_p95=2.0, free_storage_gib=25.0, storage_trend_gib_per_day=-2.5
    )
    assert assess(filling, thresholds) == Finding(
        Verdict.OVER,
        True,
        (
            "CPU p95 10.0% < 20%",
            "connections p95 2.0 < 20",
            "free storage 25.0 GiB falling 2.50 GiB/day: full in 10.0 days <= 10",
        ),
    )
    slower = evidence(free_storage_gib=25.0, storage_trend_gib_per_day=-2.4)  # 10.4 days
    assert assess(slower, thresholds) == Finding(Verdict.OK, False, ())


def test_too_little_data_decides_nothing() -> None:
    young = evidence(
        periods=432, coverage=0.5, cpu_p95=99.0, free_storage_gib=1.0, storage_trend_gib_per_day=-5
    )
    assert assess(young, RightsizingConfig(min_coverage=0.8)) == Finding(
        Verdict.INSUFFICIENT_DATA, False, ("CPU data for 50% of the window < 80%",)
    )


def test_report_waits_for_collection_and_writes_in_the_warehouse_pool() -> None:
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("rightsizing_report")).parent_keys == {
        AssetKey("rds_instances"),
        AssetKey("rds_metrics"),
        AssetKey("rds_metrics_hourly"),
    }
    assert defs.resolve_assets_def("rightsizing_report").op.pool == "duckdb_warehouse"


# The seeded fleet: every series ends at the newest 5-minute boundary and goes back 863
# periods (the window holds 864), so it lies inside the trailing three days of a report made
# in the next five minutes.
K = np.arange(863)
YOUNG_K = np.arange(288)  # one day
IDLE_CPU = 3 + 9 * ((K * 7) % 11) / 10
IDLE_CONNECTIONS = (K % 4) + 1.0
BUSY_CPU = 55 + 40 * ((K * 13) % 17) / 16 + 0.3 * (K % 3)
BUSY_CONNECTIONS = 50.0 + K % 10
BUSY_MEMORY = (300 + 10 * (K % 6)) * MIB
BUSY_MEMORY_MIN = BUSY_MEMORY - (150 - K % 7) * MIB
BUSY_SWAP = (100 + (K % 50)) * MIB
BUSY_SWAP_MAX = BUSY_SWAP * 2
BUSY_DISK_QUEUE = 8.0 + K % 9
STEADY_MEMORY = 2 * GIB + (K % 3) * 100 * MIB
STEADY_SWAP = (K % 4) * MIB
# Free storage: busy-db falls exactly 2 GiB a day to 20 GiB now; steady-db 1 GiB a day to
# 300 GiB; idle-db grows 0.5 GiB a day to 400 GiB (a purge).
DAYS_AGO = K * PERIOD / timedelta(days=1)


def seed(warehouse: WarehouseResource, anchor: datetime) -> None:
    """Writes through the pipeline's writer connection, which publishes the snapshot."""
    rows: list[dict[str, Any]] = []

    def add(
        instance: str, metric: str, average: Any, minimum: Any = None, maximum: Any = None
    ) -> None:
        for k, value in enumerate(average):
            rows.append(
                {
                    "ts": anchor - int(k) * PERIOD, "account_id": "1", "region": "us-east-1",
                    "instance_id": instance, "metric": metric, "average": float(value),
                    "minimum": None if minimum is None else float(minimum[k]),
                    "maximum": None if maximum is None else float(maximum[k]),
                    "collected_at": anchor,
                }
            )  # fmt: skip

    for instance in ("busy-db", "stopped-db", "gone-db"):
        add(instance, "CPUUtilization", BUSY_CPU)
        add(instance, "DatabaseConnections", BUSY_CONNECTIONS)
        add(instance, "FreeableMemory", BUSY_MEMORY, minimum=BUSY_MEMORY_MIN)
        add(instance, "SwapUsage", BUSY_SWAP, maximum=BUSY_SWAP_MAX)
        add(instance, "DiskQueueDepth", BUSY_DISK_QUEUE)
        add(instance, "FreeStorageSpace", (20 + 2 * DAYS_AGO) * GIB)
    add("idle-db", "CPUUtilization", IDLE_CPU)
    add("idle-db", "DatabaseConnections", IDLE_CONNECTIONS)
    add("idle-db", "FreeableMemory", np.full(K.size, 8.0 * GIB), minimum=np.full(K.size, 7.5 * GIB))
    add("idle-db", "SwapUsage", np.zeros(K.size), maximum=np.zeros(K.size))
    add("idle-db", "DiskQueueDepth", 0.05 + 0.01 * (K % 5))
    add("idle-db", "FreeStorageSpace", (400 - 0.5 * DAYS_AGO) * GIB)
    add("steady-db", "CPUUtilization", 40.0 + K % 20)
    add("steady-db", "DatabaseConnections", 60.0 + K % 7)
    # Only averages, as when Minimum and Maximum are not collected.
    add("steady-db", "FreeableMemory", STEADY_MEMORY)
    add("steady-db", "SwapUsage", STEADY_SWAP)
    add("steady-db", "DiskQueueDepth", 1 + (K % 3) * 0.5)
    add("steady-db", "FreeStorageSpace", (300 + DAYS_AGO) * GIB)
    add("young-db", "CPUUtilization", np.full(YOUNG_K.size, 95.0))
    with warehouse.connect() as conn:
        ensure_schema(conn)
        conn.register("seeded", pa.Table.from_pylist(rows))
        conn.execute("INSERT INTO rds_metrics BY NAME SELECT * FROM seeded")
        # Older than the window: swap that would make idle-db under-provisioned.
        conn.execute(
            "INSERT INTO rds_metrics (ts, account_id, region, instance_id, metric, average, "
            "maximum, collected_at) VALUES (?, '1', 'us-east-1', 'idle-db', 'SwapUsage', ?, ?, ?)",
            [anchor - timedelta(days=3, hours=1), 4.0 * GIB, 4.0 * GIB, anchor],
        )
        discovered = anchor - timedelta(minutes=3)
        for instance, klass, engine, status, last_seen in [
            ("idle-db", "db.r6g.2xlarge", "postgres", "available", discovered),
            ("busy-db", "db.t3.micro", "mysql", "available", discovered),
            ("steady-db", "db.m5.large", "postgres", "backing-up", discovered),
            ("young-db", "db.t3.small", "mariadb", "available", discovered),
            ("silent-db", "db.t3.small", "postgres", "available", discovered),
            ("stopped-db", "db.m5.large", "postgres", "stopped", discovered),
            ("gone-db", "db.m5.large", "postgres", "available", discovered - timedelta(hours=1)),
        ]:
            conn.execute(
                "INSERT INTO rds_instances (account_id, region, instance_id, engine, "
                "instance_class, status, first_seen, last_seen) "
                "VALUES ('1', 'us-east-1', ?, ?, ?, ?, ?, ?)",
                [instance, engine, klass, status, anchor - timedelta(days=30), last_seen],
            )


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def newest_period(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)


def report_rows(warehouse: WarehouseResource) -> list[tuple]:
    with warehouse.reader() as conn:
        return conn.execute(
            """
            SELECT instance_id, instance_class, engine, verdict, storage_at_risk, reasons,
                   periods, coverage, cpu_p95, connections_p95, freeable_memory_min_mib,
                   swap_max_mib, disk_queue_p95, free_storage_gib, storage_trend_gib_per_day,
                   storage_days_left
            FROM rds_rightsizing ORDER BY instance_id
            """
        ).fetchall()


def p95(values: np.ndarray) -> float:
    return float(np.percentile(values, 95))


def test_report_flags_the_seeded_fleet_with_its_evidence(warehouse: WarehouseResource) -> None:
    started = now()
    seed(warehouse, newest_period(started))
    result = materialize(
        [rightsizing_report], resources={"collection": make_collection(), "warehouse": warehouse}
    )
    finished = now()
    assert result.success

    cpu, memory, swap, queue = (
        p95(BUSY_CPU), BUSY_MEMORY_MIN.min() / MIB, BUSY_SWAP_MAX.max() / MIB,
        p95(BUSY_DISK_QUEUE),
    )  # fmt: skip
    busy_reasons = (
        f"CPU p95 {cpu:.1f}% > 80%; freeable memory min {memory:.1f} MiB < 256 MiB; "
        f"swap max {swap:.1f} MiB > 256 MiB; disk queue p95 {queue:.1f} > 10; "
        "free storage 20.0 GiB falling 2.00 GiB/day: full in 10.0 days <= 14"
    )
    idle_reasons = (
        f"CPU p95 {p95(IDLE_CPU):.1f}% < 20%; connections p95 {p95(IDLE_CONNECTIONS):.1f} < 20"
    )
    full = K.size / 864
    expected = [
        ("busy-db", "db.t3.micro", "mysql", "under-provisioned", True, busy_reasons, K.size,
         full, cpu, p95(BUSY_CONNECTIONS), memory, swap, queue, 20.0, -2.0, 10.0),
        ("idle-db", "db.r6g.2xlarge", "postgres", "over-provisioned", False, idle_reasons,
         K.size, full, p95(IDLE_CPU), p95(IDLE_CONNECTIONS), 7.5 * 1024, 0.0,
         p95(0.05 + 0.01 * (K % 5)), 400.0, 0.5, None),
        ("silent-db", "db.t3.small", "postgres", "insufficient data", False,
         "CPU data for 0% of the window < 80%", 0, 0.0, None, None, None, None, None, None,
         None, None),
        ("steady-db", "db.m5.large", "postgres", "ok", False, "", K.size, full,
         p95(40.0 + K % 20), p95(60.0 + K % 7), STEADY_MEMORY.min() / MIB,
         STEADY_SWAP.max() / MIB, p95(1 + (K % 3) * 0.5), 300.0, -1.0, 300.0),
        ("young-db", "db.t3.small", "mariadb", "insufficient data", False,
         "CPU data for 33% of the window < 80%", YOUNG_K.size, YOUNG_K.size / 864, 95.0, None,
         None, None, None, None, None, None),
    ]  # fmt: skip
    rows = report_rows(warehouse)
    assert [row[:6] for row in rows] == [row[:6] for row in expected]
    for row, wanted in zip(rows, expected, strict=True):
        assert row[6:] == pytest.approx(wanted[6:]), row[0]

    with warehouse.reader() as conn:
        [(report_time, window_start, window_end)] = conn.execute(
            "SELECT DISTINCT report_time, window_start, window_end FROM rds_rightsizing"
        ).fetchall()
    assert started <= report_time <= finished
    assert (window_start, window_end) == (report_time - timedelta(days=3), report_time)

    metadata = result.asset_materializations_for_node("rightsizing_report")[0].metadata
    counts = {name: metadata[name].value for name in (
        "instances_assessed", "over_provisioned", "under_provisioned", "storage_at_risk",
        "insufficient_data",
    )}  # fmt: skip
    assert counts == {
        "instances_assessed": 5, "over_provisioned": 1, "under_provisioned": 1,
        "storage_at_risk": 1, "insufficient_data": 2,
    }  # fmt: skip
    with warehouse.reader() as conn:
        [(rows,)] = conn.execute("SELECT count(*) FROM rds_rightsizing").fetchall()
    assert metadata["dagster/row_count"].value == rows == 5
    assert metadata["dashboard"].value == "http://127.0.0.1:8050/rightsizing"  # the default
    table = metadata["flagged"].value.splitlines()
    assert table[0].startswith("| instance | region | class | verdict | storage at risk |")
    assert table[2:] == [
        f"| busy-db | us-east-1 | db.t3.micro | under-provisioned | yes | {cpu:.1f} | "
        f"{p95(BUSY_CONNECTIONS):.1f} | {memory:.1f} | {swap:.1f} | {queue:.1f} | 20.0 | "
        f"-2.00 | 10.0 | {busy_reasons} |",
        f"| idle-db | us-east-1 | db.r6g.2xlarge | over-provisioned | no | {p95(IDLE_CPU):.1f} | "
        f"{p95(IDLE_CONNECTIONS):.1f} | 7680.0 | 0.0 | {p95(0.05 + 0.01 * (K % 5)):.1f} | "
        f"400.0 | 0.50 | - | {idle_reasons} |",
    ]


def test_operators_thresholds_replace_the_report(warehouse: WarehouseResource) -> None:
    started = now()
    seed(warehouse, newest_period(started))
    resources = {"collection": make_collection(), "warehouse": warehouse}
    assert materialize([rightsizing_report], resources=resources).success
    stricter = {"cpu_low_pct": 2.0, "storage_horizon_days": 9.0, "min_coverage": 0.3}
    result = materialize(
        [rightsizing_report],
        resources=resources,
        run_config={"ops": {"rightsizing_report": {"config": stricter}}},
    )
    assert result.success
    verdicts = [row[:5] for row in report_rows(warehouse)]
    assert verdicts == [
        ("busy-db", "db.t3.micro", "mysql", "under-provisioned", False),  # 10 days > 9
        ("idle-db", "db.r6g.2xlarge", "postgres", "ok", False),  # CPU p95 above 2 %
        ("silent-db", "db.t3.small", "postgres", "insufficient data", False),
        ("steady-db", "db.m5.large", "postgres", "ok", False),
        ("young-db", "db.t3.small", "mariadb", "under-provisioned", False),  # 1/3 > 0.3
    ]
    metadata = result.asset_materializations_for_node("rightsizing_report")[0].metadata
    assert (metadata["over_provisioned"].value, metadata["storage_at_risk"].value) == (0, 0)


def test_a_fleet_with_nothing_serving_empties_the_report(warehouse: WarehouseResource) -> None:
    seed(warehouse, newest_period(now()))
    resources = {"collection": make_collection(), "warehouse": warehouse}
    assert materialize([rightsizing_report], resources=resources).success
    with warehouse.connect() as conn:
        conn.execute("UPDATE rds_instances SET status = 'stopped'")
    result = materialize([rightsizing_report], resources=resources)
    assert result.success
    assert report_rows(warehouse) == []
    metadata = result.asset_materializations_for_node("rightsizing_report")[0].metadata
    assert metadata["instances_assessed"].value == 0
    assert len(metadata["flagged"].value.splitlines()) == 2  # the header only


def test_the_window_never_reaches_past_retention(tmp_path: Path) -> None:
    warehouse = WarehouseResource(database=str(tmp_path / "metrics.duckdb"), retention_days=2)
    seed(warehouse, newest_period(now()))
    result = materialize(
        [rightsizing_report], resources={"collection": make_collection(), "warehouse": warehouse}
    )
    metadata = result.asset_materializations_for_node("rightsizing_report")[0].metadata
    start, end = (
        datetime.fromisoformat(metadata[key].value) for key in ("window_start", "window_end")
    )
    assert end - start == timedelta(days=2)


# The longer windows, from the hourly tier. long-db has 40 days of hours (960) ending with the
# hour before the report's; young-db 5 days (120), with percentiles not collected and one hour
# without an average; stopped-db long-db's hours but stopped; silent-db nothing. CPU follows
# the ISO weekday (Wednesday busiest, Sunday quietest), with Fridays of the last 14 days 40
# points busier and one spike 500 hours back.
HOURS = 40 * 24
LONG_K = np.arange(HOURS)
YOUNG_HOURS = np.arange(5 * 24)
WEEKDAY_CPU = {1: 30.0, 2: 45.0, 3: 60.0, 4: 40.0, 5: 35.0, 6: 10.0, 7: 5.0}
SPIKE_K = 500


@dataclass(frozen=True)
class Series:
    """What was seeded for one instance: each hour with its hourly statistics."""

    hours: list[datetime]
    cpu_average: np.ndarray
    cpu_p95: np.ndarray | None
    cpu_p99: np.ndarray | None
    connections_p95: np.ndarray | None
    memory_minimum: list[float | None] | None  # bytes
    memory_average: np.ndarray | None


def long_series(newest: datetime) -> Series:
    hours = [newest - int(k) * HOUR for k in LONG_K]
    recent_friday = np.array(
        [h.isoweekday() == 5 and newest - h < timedelta(days=14) for h in hours]
    )
    average = (
        np.array([WEEKDAY_CPU[h.isoweekday()] for h in hours])
        + 5 * ((LONG_K * 7) % 13) / 13
        + 40 * recent_friday
    )
    average[SPIKE_K] = 99.0
    p95 = average + 10 + LONG_K % 5
    minimum: list[float | None] = [float((1024 + (k * 11) % 97) * MIB) for k in LONG_K]
    minimum[3] = None  # Minimum not returned that hour: its average counts
    memory_average = np.array([(2048 + k % 50) * MIB for k in LONG_K], dtype=float)
    memory_average[3] = 900.0 * MIB
    minimum[900] = 512.0 * MIB  # 37.5 days back: in the 90-day window only
    return Series(
        hours, average, p95, p95 + 3 + LONG_K % 3, 20.0 + LONG_K % 30, minimum, memory_average
    )


def young_series(newest: datetime) -> Series:
    hours = [newest - int(k) * HOUR for k in YOUNG_HOURS]
    average = np.array([10.0 * h.isoweekday() + (h.hour % 4) for h in hours])
    return Series(hours, average, None, None, None, None, None)


HOUR = timedelta(hours=1)


def seed_hourly(warehouse: WarehouseResource, newest: datetime) -> dict[str, Series]:
    """The hourly tier and the inventory of the windows' fleet; what was seeded, by instance."""
    fleet = {
        "long-db": long_series(newest),
        "young-db": young_series(newest),
        "stopped-db": long_series(newest),
    }
    rows: list[dict[str, Any]] = []

    def add(instance: str, metric: str, hour: datetime, **statistics: Any) -> None:
        rows.append(
            {
                **dict.fromkeys(HOURLY.column_names),
                "hour": hour, "account_id": "1", "region": "us-east-1", "instance_id": instance,
                "metric": metric, "collected_at": newest, **statistics,
            }
        )  # fmt: skip

    def number(values: Any, k: int) -> float | None:
        return None if values is None or values[k] is None else float(values[k])

    for instance, s in fleet.items():
        for k, hour in enumerate(s.hours):
            add(
                instance, "CPUUtilization", hour, average=float(s.cpu_average[k]),
                p95=number(s.cpu_p95, k), p99=number(s.cpu_p99, k),
            )  # fmt: skip
            if s.connections_p95 is not None:
                add(
                    instance,
                    "DatabaseConnections",
                    hour,
                    average=1.0,
                    p95=number(s.connections_p95, k),
                )
            if s.memory_average is not None:
                add(
                    instance, "FreeableMemory", hour, average=number(s.memory_average, k),
                    minimum=number(s.memory_minimum, k),
                )  # fmt: skip
    # An hour of young-db with no CPU average: no data, no history.
    add("young-db", "CPUUtilization", newest - YOUNG_HOURS.size * HOUR, average=None)
    with warehouse.connect() as conn:
        ensure_schema(conn)
        conn.register("seeded", pa.Table.from_pylist(rows, schema=HOURLY.arrow_schema()))
        conn.execute("INSERT INTO rds_metrics_hourly BY NAME SELECT * FROM seeded")
        conn.unregister("seeded")
        for instance, status in [
            ("long-db", "available"),
            ("young-db", "available"),
            ("stopped-db", "stopped"),
            ("silent-db", "available"),
        ]:
            conn.execute(
                "INSERT INTO rds_instances (account_id, region, instance_id, status, "
                "first_seen, last_seen) VALUES ('1', 'us-east-1', ?, ?, ?, ?)",
                [instance, status, newest - timedelta(days=60), newest],
            )
    return fleet


def expected_window(
    instance: str, s: Series, report_time: datetime, days: int
) -> tuple[Any, ...] | None:
    """The row the window should have, computed by hand from what was seeded."""
    start = report_time - timedelta(days=days)
    inside = np.array([start <= h < report_time for h in s.hours])
    if not inside.any():
        return None
    hours = [h for h, keep in zip(s.hours, inside, strict=True) if keep]
    average = s.cpu_average[inside]
    peak = max(range(len(hours)), key=lambda i: (average[i], -hours[i].timestamp()))
    weekday = np.array([h.isoweekday() for h in hours])
    means = {d: average[weekday == d].mean() for d in sorted(set(weekday))}
    busiest = max(means, key=lambda d: (means[d], -d))
    quietest = min(means, key=lambda d: (means[d], d))
    memory = None
    if s.memory_average is not None and s.memory_minimum is not None:
        lows = [
            low if low is not None else s.memory_average[k]
            for k, (low, keep) in enumerate(zip(s.memory_minimum, inside, strict=True))
            if keep
        ]
        memory = min(lows) / MIB
    return (
        report_time, "1", "us-east-1", instance, days, start, len(hours) / 24,
        None if s.cpu_p95 is None else float(np.percentile(s.cpu_p95[inside], 95)),
        None if s.cpu_p99 is None else float(s.cpu_p99[inside].max()),
        hours[peak], float(average[peak]), busiest, quietest,
        None if s.connections_p95 is None else float(np.percentile(s.connections_p95[inside], 95)),
        memory,
    )  # fmt: skip


def expected_windows(fleet: dict[str, Series], report_time: datetime) -> list[tuple[Any, ...]]:
    return [
        row
        for instance in ("long-db", "young-db")  # stopped-db is not serving
        for days in WINDOW_DAYS
        for row in [expected_window(instance, fleet[instance], report_time, days)]
        if row is not None
    ]


def assert_rows_equal(rows: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> None:
    assert len(rows) == len(expected)
    for row, wanted in zip(rows, expected, strict=True):
        floats = [i for i, value in enumerate(wanted) if isinstance(value, float)]
        others = [i for i in range(len(wanted)) if i not in floats]
        assert [row[i] for i in others] == [wanted[i] for i in others], row[3:5]
        assert [row[i] for i in floats] == pytest.approx([wanted[i] for i in floats]), row[3:5]


def window_rows(warehouse: WarehouseResource) -> list[tuple[Any, ...]]:
    with warehouse.reader() as conn:
        return conn.execute(
            f"SELECT {', '.join(RIGHTSIZING_WINDOWS.column_names)} FROM rds_rightsizing_windows "
            "ORDER BY instance_id, window_days"
        ).fetchall()


def test_windows_show_each_window_with_the_history_it_holds(
    warehouse: WarehouseResource,
) -> None:
    newest = floor_hour(now()) - HOUR
    report_time = newest + HOUR  # the newest hour just ended: the windows hold whole days
    fleet = seed_hourly(warehouse, newest)
    with warehouse.connect() as conn:
        # Outside every window: an hour starting at the report time, one 95 days back.
        for hour in (report_time, newest - timedelta(days=95)):
            conn.execute(
                "INSERT INTO rds_metrics_hourly (hour, account_id, region, instance_id, metric, "
                "average, p95, p99, collected_at) "
                "VALUES (?, '1', 'us-east-1', 'long-db', 'CPUUtilization', 100, 100, 100, ?)",
                [hour, newest],
            )
    with warehouse.reader() as conn:
        windows = read_windows(conn, report_time)

    rows = [tuple(asdict(w).values()) for w in windows]
    expected = expected_windows(fleet, report_time)
    assert_rows_equal(rows, expected)
    assert [(w.instance_id, w.window_days, w.history_days) for w in windows] == [
        ("long-db", 14, 14.0),
        ("long-db", 30, 30.0),
        ("long-db", 90, 40.0),  # 40 days of 90 held
        ("young-db", 14, 5.0),
        ("young-db", 30, 5.0),
        ("young-db", 90, 5.0),
    ]
    long_14, long_30, long_90, young_14, *_ = windows
    # Recent Fridays outweigh the usual Wednesdays in 14 days, not in 30 or 90.
    assert [(w.busiest_weekday, w.quietest_weekday) for w in (long_14, long_30, long_90)] == [
        (5, 7),
        (3, 7),
        (3, 7),
    ]
    spike = newest - SPIKE_K * HOUR
    assert (long_30.peak_hour, long_30.peak_hour_cpu) == (spike, 99.0)
    assert (long_90.peak_hour, long_90.peak_hour_cpu) == (spike, 99.0)
    assert long_14.peak_hour_cpu == pytest.approx(75 + 5 * 12 / 13)  # a recent Friday
    assert long_14.freeable_memory_min_mib == 900.0  # the hour without a minimum
    assert long_90.freeable_memory_min_mib == 512.0
    assert (young_14.cpu_p95, young_14.cpu_p99_max, young_14.connections_p95) == (None,) * 3
    young_weekdays = {h.isoweekday() for h in fleet["young-db"].hours}
    assert (young_14.busiest_weekday, young_14.quietest_weekday) == (
        max(young_weekdays),
        min(young_weekdays),
    )

    # Only a window with an hour of CPU data makes a row: six days ago young-db had none.
    with warehouse.reader() as conn:
        before_young = read_windows(conn, newest - timedelta(days=6), windows=(1,))
        assert [(w.instance_id, w.history_days) for w in before_young] == [("long-db", 1.0)]


def test_the_report_writes_the_windows_and_shows_them(warehouse: WarehouseResource) -> None:
    newest = floor_hour(now()) - HOUR
    fleet = seed_hourly(warehouse, newest)
    resources = {"collection": make_collection(), "warehouse": warehouse}
    result = materialize([rightsizing_report], resources=resources)
    assert result.success

    rows = window_rows(warehouse)
    report_time = rows[0][0]
    assert {row[0] for row in rows} == {report_time}
    assert_rows_equal(rows, expected_windows(fleet, report_time))
    assert [(row[3], row[4]) for row in rows] == [
        (instance, days) for instance in ("long-db", "young-db") for days in WINDOW_DAYS
    ]
    assert rows[2][6] == 40.0  # long-db's 90 days

    metadata = result.asset_materializations_for_node("rightsizing_report")[0].metadata
    assert metadata["window_rows"].value == 6
    table = metadata["windows"].value.splitlines()
    assert table[0] == (
        "| instance | region | window days | history days | CPU p95 % | CPU p99 max % | "
        "peak hour (UTC) | peak hour CPU % | busiest weekday (UTC) |"
    )
    weekday = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    assert table[2:] == [
        f"| {row[3]} | us-east-1 | {row[4]} | {row[6]:.1f} | "
        f"{'-' if row[7] is None else f'{row[7]:.1f}'} | "
        f"{'-' if row[8] is None else f'{row[8]:.1f}'} | {row[9]:%Y-%m-%d %H:%M} | "
        f"{row[10]:.1f} | {weekday[row[11] - 1]} |"
        for row in expected_windows(fleet, report_time)
    ]

    # The next report replaces the windows: none once nothing serves.
    with warehouse.connect() as conn:
        conn.execute("UPDATE rds_instances SET status = 'stopped'")
    assert materialize([rightsizing_report], resources=resources).success
    assert window_rows(warehouse) == []


def test_the_report_does_not_wait_for_the_hourly_tier() -> None:
    """The hourly tier lands a day at a time: the first report runs on the inventory and the
    raw tier alone (a deployment's hourly tier comes after its raw look-back)."""

    def materialized(instance: DagsterInstance, *assets: str) -> None:
        for asset in assets:
            hour = floor_hour(now()) - timedelta(hours=2)
            partition = f"{hour:%Y-%m-%d-%H:%M}" if asset == "rds_metrics" else None
            instance.report_runless_asset_event(AssetMaterialization(asset, partition=partition))

    def requested(result: Any) -> bool:
        return any(
            r.key == AssetKey("rightsizing_report") and r.true_subset.size for r in result.results
        )

    with instance_for_test() as instance:
        start = evaluate_automation_conditions(defs=defs, instance=instance)
        materialized(instance, "rds_instances", "rds_metrics")
        first = evaluate_automation_conditions(defs=defs, instance=instance, cursor=start.cursor)
        assert requested(first)  # no day of the hourly tier yet


def test_weekdays_and_the_peak_hour_are_read_in_the_time_zone_set(
    warehouse: WarehouseResource,
) -> None:
    """A busy late Sunday evening in UTC is early Monday in Tokyo (METRICS_TIME_ZONE): the
    busiest weekday follows the zone, the stored peak hour stays UTC, the report shows it by
    Tokyo's clock."""
    monday = floor_hour(now()).replace(hour=0) - timedelta(days=14)
    monday -= timedelta(days=monday.weekday())
    busy = [monday + timedelta(days=6, hours=h) for h in (20, 21, 22, 23)]  # Sunday, UTC
    rows = [
        {
            **dict.fromkeys(HOURLY.column_names),
            "hour": hour, "account_id": "1", "region": "us-east-1", "instance_id": "tz-db",
            "metric": "CPUUtilization", "average": 90.0 if hour in busy else 10.0,
            "collected_at": monday + timedelta(days=8),
        }
        for hour in (monday + k * HOUR for k in range(7 * 24))
    ]  # fmt: skip
    with warehouse.connect() as conn:
        ensure_schema(conn)
        conn.register("seeded", pa.Table.from_pylist(rows, schema=HOURLY.arrow_schema()))
        conn.execute("INSERT INTO rds_metrics_hourly BY NAME SELECT * FROM seeded")
        conn.unregister("seeded")
        conn.execute(
            "INSERT INTO rds_instances (account_id, region, instance_id, status, first_seen, "
            "last_seen) VALUES ('1', 'us-east-1', 'tz-db', 'available', ?, ?)",
            [monday, monday + timedelta(days=7)],
        )
    report_time = monday + timedelta(days=7)
    with warehouse.reader() as conn:
        [utc] = read_windows(conn, report_time, windows=(7,))
        [tokyo] = read_windows(conn, report_time, windows=(7,), time_zone="Asia/Tokyo")
    assert (utc.busiest_weekday, utc.quietest_weekday) == (7, 1)
    assert (tokyo.busiest_weekday, tokyo.quietest_weekday) == (1, 2)
    assert utc.peak_hour == tokyo.peak_hour == busy[0]
    [row] = windows_markdown([tokyo], "Asia/Tokyo").splitlines()[2:]
    local = busy[0] + timedelta(hours=9)  # Tokyo keeps no daylight saving time
    assert f"| {local:%Y-%m-%d %H:%M} | 90.0 | Mon |" in row
    assert "peak hour (Asia/Tokyo)" in windows_markdown([tokyo], "Asia/Tokyo").splitlines()[0]


# --- Aurora: Serverless v2 capacity, readers, and no storage of their own ----------------------


def test_a_serverless_instance_at_its_maximum_capacity_is_under_provisioned() -> None:
    at_max = evidence(
        instance_class="db.serverless", serverless_min_acu=0.5, serverless_max_acu=16.0,
        acu_p95=15.5, acu_utilization_p95=96.9, free_storage_gib=None,
    )  # fmt: skip
    assert assess(at_max, RightsizingConfig()) == Finding(
        Verdict.UNDER, False, ("ACU utilization p95 96.9% > 90%: raise the maximum ACU (16)",)
    )


def test_a_serverless_instance_is_judged_by_its_range_not_by_idle_cpu() -> None:
    """A db.serverless instance has no class to shrink: idle, it is over-provisioned only
    when its capacity never rose above a minimum that could be lower."""
    idle = {"cpu_p95": 4.0, "connections_p95": 2.0, "serverless_max_acu": 16.0,
            "acu_utilization_p95": 12.5, "instance_class": "db.serverless"}  # fmt: skip
    at_floor = evidence(**idle, serverless_min_acu=2.0, acu_p95=2.0)
    lowest = evidence(**idle, serverless_min_acu=0.5, acu_p95=0.5)
    assert assess(at_floor, RightsizingConfig()) == Finding(
        Verdict.OVER, False, ("ACU p95 2 at its minimum 2: lower the minimum ACU",)
    )
    assert assess(lowest, RightsizingConfig()) == Finding(Verdict.OK, False, ())


def test_a_reader_that_takes_no_load_is_over_provisioned() -> None:
    unused = evidence(cluster_role="reader", cpu_p95=3.0, connections_p95=0.0)
    used = evidence(cluster_role="reader", cpu_p95=3.0, connections_p95=30.0)
    assert assess(unused, RightsizingConfig()) == Finding(
        Verdict.OVER, False, ("reader takes no load: connections p95 0.0 < 1, CPU p95 3.0% < 20%",)
    )
    assert assess(used, RightsizingConfig()).verdict is Verdict.OK


def test_the_report_judges_aurora_instances_by_their_cluster(warehouse: WarehouseResource) -> None:
    """Seeded through the writer: a Serverless v2 writer at its maximum, an idle reader, and
    neither has FreeStorageSpace (Aurora's storage is the cluster volume): no storage flag."""
    anchor = newest_period(now())
    rows = [
        {"ts": anchor - int(k) * PERIOD, "account_id": "1", "region": "us-east-1",
         "instance_id": instance, "metric": metric, "average": float(value),
         "collected_at": anchor}
        for instance, metric, values in (
            ("events-1", "CPUUtilization", 50.0 + K % 10),
            ("events-1", "DatabaseConnections", 40.0 + K % 5),
            ("events-1", "ServerlessDatabaseCapacity", 15.0 + (K % 3) * 0.5),
            ("events-1", "ACUUtilization", (15.0 + (K % 3) * 0.5) / 16 * 100),
            ("shop-2", "CPUUtilization", IDLE_CPU),
            ("shop-2", "DatabaseConnections", np.zeros(K.size)),
        )
        for k, value in enumerate(values)
    ]  # fmt: skip
    discovered = anchor - timedelta(minutes=3)
    with warehouse.connect() as conn:
        ensure_schema(conn)
        conn.register("seeded", pa.Table.from_pylist(rows))
        conn.execute("INSERT INTO rds_metrics BY NAME SELECT * FROM seeded")
        for instance, klass, cluster, role in [
            ("events-1", "db.serverless", "events", "writer"),
            ("shop-2", "db.r6g.large", "shop", "reader"),
        ]:
            conn.execute(
                "INSERT INTO rds_instances (account_id, region, instance_id, engine, "
                "instance_class, status, first_seen, last_seen, cluster_id, cluster_role) "
                "VALUES ('1', 'us-east-1', ?, 'aurora-mysql', ?, 'available', ?, ?, ?, ?)",
                [instance, klass, anchor - timedelta(days=30), discovered, cluster, role],
            )
        conn.execute(
            "INSERT INTO rds_clusters (account_id, region, cluster_id, serverless_min_acu, "
            "serverless_max_acu, first_seen, last_seen) VALUES "
            "('1', 'us-east-1', 'events', 0.5, 16, $t, $t), "
            "('1', 'us-east-1', 'shop', NULL, NULL, $t, $t)",
            {"t": discovered},
        )

    result = materialize(
        [rightsizing_report], resources={"collection": make_collection(), "warehouse": warehouse}
    )

    assert result.success
    with warehouse.reader() as conn:
        report = conn.execute(
            "SELECT instance_id, cluster_role, verdict, storage_at_risk, reasons, "
            "serverless_min_acu, serverless_max_acu, acu_p95, acu_utilization_p95, "
            "free_storage_gib FROM rds_rightsizing ORDER BY 1"
        ).fetchall()
    acu = 15.0 + (K % 3) * 0.5
    utilization = p95(acu / 16 * 100)
    assert report[0][:5] == (
        "events-1", "writer", "under-provisioned", False,
        f"ACU utilization p95 {utilization:.1f}% > 90%: raise the maximum ACU (16)",
    )  # fmt: skip
    assert report[0][5:] == pytest.approx((0.5, 16.0, p95(acu), utilization, None))
    assert report[1] == (
        "shop-2", "reader", "over-provisioned", False,
        f"reader takes no load: connections p95 0.0 < 1, CPU p95 {p95(IDLE_CPU):.1f}% < 20%",
        None, None, None, None, None,
    )  # fmt: skip


def test_the_report_weighs_db_load_against_the_vcpus(warehouse: WarehouseResource) -> None:
    """DBLoadRelativeToNumVCPUs (an instance with Performance Insights on) is published only
    while there is load: its p95 counts the CPU periods without it as 0. More active sessions
    than vCPUs at p95 is pressure, whatever the CPU says; an instance without the metric has
    no figure."""
    anchor = newest_period(now())
    # Loaded in 3 periods of 4, 1.2 to 2.4 sessions per vCPU; none in the others.
    loaded = [(k, 1.2 + 1.2 * ((k * 5) % 7) / 6) for k in K.tolist() if k % 4]
    series = np.zeros(K.size)
    for k, value in loaded:
        series[k] = value
    rows = [
        {"ts": anchor - int(k) * PERIOD, "account_id": "1", "region": "us-east-1",
         "instance_id": instance, "metric": metric, "average": float(value),
         "collected_at": anchor}
        for instance, metric, values in (
            ("pi-db", "CPUUtilization", list(enumerate(50.0 + K % 10))),
            ("pi-db", "DatabaseConnections", list(enumerate(BUSY_CONNECTIONS))),
            ("pi-db", "DBLoadRelativeToNumVCPUs", loaded),
            ("plain-db", "CPUUtilization", list(enumerate(50.0 + K % 10))),
            ("plain-db", "DatabaseConnections", list(enumerate(BUSY_CONNECTIONS))),
        )
        for k, value in values
    ]  # fmt: skip
    discovered = anchor - timedelta(minutes=3)
    with warehouse.connect() as conn:
        ensure_schema(conn)
        conn.register("seeded", pa.Table.from_pylist(rows))
        conn.execute("INSERT INTO rds_metrics BY NAME SELECT * FROM seeded")
        for instance in ("pi-db", "plain-db"):
            conn.execute(
                "INSERT INTO rds_instances (account_id, region, instance_id, engine, "
                "instance_class, status, first_seen, last_seen) "
                "VALUES ('1', 'us-east-1', ?, 'postgres', 'db.r6g.large', 'available', ?, ?)",
                [instance, anchor - timedelta(days=30), discovered],
            )

    result = materialize(
        [rightsizing_report], resources={"collection": make_collection(), "warehouse": warehouse}
    )

    assert result.success
    with warehouse.reader() as conn:
        report = conn.execute(
            "SELECT instance_id, verdict, reasons, db_load_per_vcpu_p95 FROM rds_rightsizing "
            "ORDER BY 1"
        ).fetchall()
    load = p95(series)
    assert load > 1
    assert report[0][:3] == (
        "pi-db", "under-provisioned", f"DB load p95 {load:.1f} sessions/vCPU > 1 sessions/vCPU"
    )  # fmt: skip
    assert report[0][3] == pytest.approx(load)
    assert report[1] == ("plain-db", "ok", "", None)
