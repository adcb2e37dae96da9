"""The analysts' reading of Performance Insights' load (`analysts/load.py`, `metrics-pipeline
load`): each instance's top keys over a window with their share, what changed against a
baseline window, what names people only when asked, and bad input refused by name."""

import os
import subprocess
import sys
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest

from metrics_pipeline.analysts import load
from metrics_pipeline.analysts.load import top_load
from metrics_pipeline.analysts.query import QueryError, connect
from metrics_pipeline.collection.store import upsert_instances
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.resources import WarehouseResource

pytestmark = pytest.mark.storage_neutral

CLI = str(Path(sys.executable).with_name("metrics-pipeline"))
NOW = datetime(2026, 12, 1, 12, 0)
BEFORE, AFTER = NOW - timedelta(hours=3), NOW - timedelta(hours=1)  # two one-hour windows
ACCOUNT = "123456789012"
# (window start, instance, group, key, key_type, per-minute active sessions over 3 minutes;
# None: no row that minute).
LOAD = [
    (BEFORE, "orders-db", "total", "", None, [2.0, 2.0, 2.0]),
    (BEFORE, "orders-db", "db.wait_event", "CPU", "CPU", [1.5, 1.5, 1.5]),
    (BEFORE, "orders-db", "db.wait_event", "IO:DataFileRead", "IO", [0.5, 0.5, 0.5]),
    (BEFORE, "orders-db", "db.sql_tokenized", "D1", None, [2.0, 2.0, 2.0]),
    (BEFORE, "orders-db", "db.user", "app", None, [2.0, 2.0, 2.0]),
    (AFTER, "orders-db", "total", "", None, [4.0, 3.0, 2.0]),
    (AFTER, "orders-db", "db.wait_event", "CPU", "CPU", [1.0, 1.0, 1.0]),
    (AFTER, "orders-db", "db.wait_event", "Lock:transactionid", "Lock", [3.0, 2.0, None]),
    (AFTER, "orders-db", "db.wait_event", "IO:DataFileRead", "IO", [None, None, 1.0]),
    (AFTER, "orders-db", "db.sql_tokenized", "D1", None, [1.0, 1.0, 1.0]),
    (AFTER, "orders-db", "db.sql_tokenized", "D2", None, [3.0, 2.0, 1.0]),
    (AFTER, "orders-db", "db.user", "app", None, [4.0, 3.0, 2.0]),
    (AFTER, "billing-db", "total", "", None, [1.0, 1.0, 1.0]),
    (AFTER, "billing-db", "db.wait_event", "CPU", "CPU", [1.0, 1.0, 1.0]),
]
STATEMENTS = {"D1": "SELECT * FROM orders WHERE id = $1", "D2": "UPDATE stock SET n = n - $1"}


@pytest.fixture
def storage(warehouse: WarehouseResource) -> StorageSettings:
    warehouse.prepare()
    with warehouse.connect() as conn:
        upsert_instances(
            conn,
            [
                {"account_id": ACCOUNT, "region": "us-east-1", "instance_id": name, "tags": {}}
                for name in ("orders-db", "billing-db")
            ],
            NOW - timedelta(days=1),
        )
        for start, instance, group, key, key_type, values in LOAD:
            table = "rds_pi_load_personal" if group == "db.user" else "rds_pi_load"
            for minute, value in enumerate(values):
                if value is not None:
                    conn.execute(
                        f"INSERT INTO {table} VALUES (?, ?, 'us-east-1', ?, ?, ?, ?, ?, ?)",
                        [start + timedelta(minutes=minute), ACCOUNT, instance, group, key,
                         key_type, value, NOW],
                    )  # fmt: skip
        for digest, text in STATEMENTS.items():
            conn.execute(
                "INSERT INTO rds_pi_statements VALUES (?, 'us-east-1', 'orders-db', ?, NULL, ?, "
                "?, ?)",
                [ACCOUNT, digest, text, BEFORE, AFTER],
            )
    return StorageSettings(
        duckdb_path=Path(warehouse.database),
        warehouse=warehouse.lake_catalog or None,
        lake_data_path=warehouse.lake_data_path or None,
    )


def rows(frame: pd.DataFrame, *columns: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in frame[list(columns)].itertuples(index=False)]


def test_the_top_wait_events_of_each_instance_with_their_share(storage: StorageSettings) -> None:
    frame = top_load(AFTER, AFTER + timedelta(hours=1), storage=storage, now=NOW)
    # Averages over the instance's 3 periods (a key absent from one had no load then); the
    # share is of the instance's total of 9 session-minutes.
    assert rows(frame, "instance_id", "dimension_key", "key_type", "active_sessions", "share") == [
        ("billing-db", "CPU", "CPU", pytest.approx(1.0), pytest.approx(1.0)),
        ("orders-db", "Lock:transactionid", "Lock", pytest.approx(5 / 3), pytest.approx(5 / 9)),
        ("orders-db", "CPU", "CPU", pytest.approx(1.0), pytest.approx(3 / 9)),
        ("orders-db", "IO:DataFileRead", "IO", pytest.approx(1 / 3), pytest.approx(1 / 9)),
    ]
    assert set(frame["dimension_group"]) == {"db.wait_event"}
    only = top_load(AFTER, NOW, top=1, instances=["orders-db"], storage=storage, now=NOW)
    assert rows(only, "instance_id", "dimension_key") == [("orders-db", "Lock:transactionid")]


def test_a_reader_already_open_is_read_with_and_no_other_is_opened(
    storage: StorageSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dashboard's shared reader: opening another costs a third of a second on a lake."""
    alone = top_load(AFTER, NOW, "db.sql_tokenized", personal=True, storage=storage, now=NOW)
    with connect(storage) as reader:

        def refused(*_: object) -> None:
            raise AssertionError("a second reader was opened")

        monkeypatch.setattr(load, "connect", refused)
        shared = top_load(
            AFTER, NOW, "db.sql_tokenized", personal=True, storage=storage, now=NOW, reader=reader
        )
    pd.testing.assert_frame_equal(shared, alone)
    assert rows(shared, "dimension_key", "statement")[0] == ("D2", STATEMENTS["D2"])


def test_what_changed_after_a_deploy_by_sql_digest(storage: StorageSettings) -> None:
    """The digests that changed most first; a digest new after the deploy had none before.
    Their text only when what names people is asked for."""
    frame = top_load(
        AFTER, NOW, "db.sql_tokenized", baseline=(BEFORE, BEFORE + timedelta(hours=1)),
        storage=storage, now=NOW,
    )  # fmt: skip
    assert rows(frame, "dimension_key", "active_sessions", "baseline_sessions", "change") == [
        ("D2", pytest.approx(2.0), 0.0, pytest.approx(2.0)),
        ("D1", pytest.approx(1.0), pytest.approx(2.0), pytest.approx(-1.0)),
    ]
    assert "statement" not in frame.columns
    with_text = top_load(AFTER, NOW, "db.sql_tokenized", personal=True, storage=storage, now=NOW)
    assert rows(with_text, "dimension_key", "statement") == [
        ("D2", STATEMENTS["D2"]),
        ("D1", STATEMENTS["D1"]),
    ]
    users = top_load(AFTER, NOW, "db.user", personal=True, storage=storage, now=NOW)
    assert rows(users, "dimension_key", "active_sessions", "share") == [
        ("app", pytest.approx(3.0), pytest.approx(1.0))
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"group": "db.lock_snapshot"}, "group: 'db.lock_snapshot' is not a Performance "
         "Insights group kept here; choose one of db.wait_event, db.sql_tokenized, db, "
         "db.user, db.host, db.sql."),
        ({"group": "db.host"}, "group: db.host names people; ask for it with personal=True "
         "(--personal on the command line)."),
        ({"top": 0}, "top: 0 is not allowed; expected 1 to 1000."),
        ({"instances": ["nope-db"]}, "instance: unknown 'nope-db'; the warehouse has: "
         "billing-db, orders-db."),
        ({"start": "2026-01-01", "end": "2026-01-02"}, "the range 2026-01-01 00:00 to "
         "2026-01-02 00:00 UTC is outside retention: the warehouse keeps hours from "
         "2026-11-24 12:00 UTC (METRICS_PI_RETENTION_DAYS=7)."),
    ],
)  # fmt: skip
def test_bad_input_is_refused_by_name(
    storage: StorageSettings, arguments: dict[str, object], message: str
) -> None:
    window: dict[str, object] = {"start": AFTER, "end": NOW}
    with pytest.raises(QueryError) as refused:
        top_load(**{**window, **arguments}, storage=storage, now=NOW)  # type: ignore[arg-type]
    assert str(refused.value) == message


@pytest.mark.e2e
def test_the_load_command_writes_the_top_keys_and_refuses_bad_input_in_one_line(
    storage: StorageSettings, warehouse: WarehouseResource
) -> None:
    env = {
        **os.environ,
        "METRICS_DUCKDB_PATH": warehouse.database,
        **(
            {"METRICS_WAREHOUSE": warehouse.lake_catalog,
             "METRICS_LAKE_DATA_PATH": warehouse.lake_data_path}
            if warehouse.lake else {}
        ),
    }  # fmt: skip
    window = ["--start", f"{AFTER:%Y-%m-%dT%H:%M}", "--end", f"{NOW:%Y-%m-%dT%H:%M}"]
    done = subprocess.run(
        [CLI, "load", *window, "-i", "orders-db", "--by", "db.sql_tokenized", "--personal",
         "--baseline-start", f"{BEFORE:%Y-%m-%dT%H:%M}", "--baseline-end",
         f"{BEFORE + timedelta(hours=1):%Y-%m-%dT%H:%M}", "-f", "csv"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    read = pd.read_csv(StringIO(done.stdout))
    assert rows(read, "dimension_key", "change", "statement") == [
        ("D2", pytest.approx(2.0), STATEMENTS["D2"]),
        ("D1", pytest.approx(-1.0), STATEMENTS["D1"]),
    ]
    for arguments, message in (
        (["--by", "db.user"], "metrics-pipeline: error: group: db.user names people; ask for "
         "it with personal=True (--personal on the command line)."),
        (["--baseline-start", "now-1d"], "metrics-pipeline: error: --baseline-end: give "
         "--baseline-start and --baseline-end together."),
    ):  # fmt: skip
        refused = subprocess.run(
            [CLI, "load", *window, *arguments], env=env, capture_output=True, text=True
        )
        assert (refused.returncode, refused.stderr.strip()) == (2, message)
