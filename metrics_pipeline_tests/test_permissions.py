"""What the pipeline writes is its owner's alone, unless a group is named to read the snapshot:
checked by reading the files as other users (needs root to switch users; CI runs as root)."""

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics_pipeline.hours import utc_now
from metrics_pipeline.maintenance.backups import create_backup
from metrics_pipeline.warehouse.permissions import group_id
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.known_data import seed

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="reading as another user needs root (CI runs as root)"
)

ANALYST_GROUP = "users"  # present on Debian and its derivatives
ANALYST, STRANGER = 41001, 41002  # user ids nobody has: the test reads files as them


@pytest.fixture
def deployment() -> Iterator[Path]:
    """A folder others may traverse, as /var/lib is: pytest's own are owner-only."""
    base = Path(tempfile.mkdtemp(prefix="metrics-permissions-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def reads(path: Path, uid: int, groups: list[int]) -> bool:
    done = subprocess.run(
        ["head", "-c", "16", str(path)],
        user=uid,
        group=65534,
        extra_groups=groups,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0 or b"Permission denied" in done.stderr, done.stderr
    return done.returncode == 0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.e2e
def test_files_are_the_owners_alone_by_default(deployment: Path) -> None:
    warehouse = WarehouseResource(database=str(deployment / "data" / "metrics.duckdb"))
    seed(warehouse)
    backup = create_backup(warehouse.snapshot_path, warehouse.backups_path, utc_now())

    assert mode(deployment / "data") == 0o700
    assert mode(Path(warehouse.database)) == 0o600
    assert mode(warehouse.snapshot_path) == 0o600
    assert mode(warehouse.backups_path) == 0o700
    assert {mode(p) for p in backup.path.iterdir()} == {0o600}
    assert not reads(warehouse.snapshot_path, STRANGER, [])


@pytest.mark.e2e
def test_a_shared_group_reads_the_snapshot_and_nobody_else_does(deployment: Path) -> None:
    analysts = group_id(ANALYST_GROUP)
    assert analysts is not None
    warehouse = WarehouseResource(
        database=str(deployment / "data" / "metrics.duckdb"), shared_group=ANALYST_GROUP
    )
    seed(warehouse)
    backup = create_backup(warehouse.snapshot_path, warehouse.backups_path, utc_now())

    assert (mode(deployment / "data"), mode(warehouse.snapshot_path)) == (0o750, 0o640)
    assert warehouse.snapshot_path.stat().st_gid == analysts
    assert reads(warehouse.snapshot_path, ANALYST, [analysts])
    assert not reads(warehouse.snapshot_path, STRANGER, [])
    # The warehouse and the backups stay the owner's, even for the group.
    assert not reads(Path(warehouse.database), ANALYST, [analysts])
    assert not reads(backup.path / "rds_metrics.parquet", ANALYST, [analysts])


@pytest.mark.e2e
def test_a_shared_group_reads_a_local_lakes_catalog_copy_and_data_files(deployment: Path) -> None:
    """Analysts' readers read the lake's catalog copy and its data files: with a shared group
    both are the group's to read, the catalog itself stays the owner's; nobody else reads
    anything, with or without the group."""
    analysts = group_id(ANALYST_GROUP)
    assert analysts is not None
    catalog = deployment / "data" / "metrics.ducklake"
    data = deployment / "data" / "metrics.ducklake.files"
    warehouse = WarehouseResource(
        database=str(deployment / "data" / "metrics.duckdb"),
        lake_catalog=f"ducklake:{catalog}",
        lake_data_path=f"{data}/",
        shared_group=ANALYST_GROUP,
    )
    seed(warehouse)
    parquet = sorted(data.rglob("*.parquet"))
    folders = [data, *sorted(p for p in data.rglob("*") if p.is_dir())]

    assert parquet  # the metrics' rows (a few inventory rows stay inlined in the catalog)
    assert {mode(p) for p in parquet} == {0o640}
    assert {mode(p) for p in folders} == {0o750}
    assert {p.stat().st_gid for p in [*parquet, *folders]} == {analysts}
    copy = catalog.with_name("metrics.snapshot.ducklake")
    assert reads(copy, ANALYST, [analysts]) and reads(parquet[0], ANALYST, [analysts])
    assert not reads(catalog, ANALYST, [analysts])
    assert not reads(copy, STRANGER, []) and not reads(parquet[0], STRANGER, [])
