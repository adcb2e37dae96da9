"""Metric values of simulated databases, computed on demand from (seed, instance, time).

Nothing is stored: any window, past or present, is generated in a few vectorised numpy
operations, so a three-day backfill of a fleet costs what the arithmetic costs. The shapes
are those of real databases: a daily and a weekly cycle, noise, occasional spikes, a slow
storage leak, connections and I/O that follow CPU.
"""

import functools
import re
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from metrics_pipeline.catalog import METRICS_BY_NAME, InstanceKind
from metrics_pipeline.hours import floor_hour

MINUTE = 60
DAY_MINUTES = 24 * 60
GIB = 1024**3

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A counter-based hash: the same input gives the same bits on every machine."""
    z = values.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return z ^ (z >> np.uint64(31))


def uniform(key: int, counters: np.ndarray) -> np.ndarray:
    """Deterministic uniform numbers in [0, 1) for each counter under `key`."""
    mixed = _splitmix64(counters.astype(np.uint64) ^ np.uint64(key & 0xFFFFFFFFFFFFFFFF))
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def stable_key(*parts: object) -> int:
    """A 64-bit key from names (Python's hash() changes between processes)."""
    key = 0x84222325CBF29CE4
    for byte in "\x1f".join(map(str, parts)).encode():
        key = ((key ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return key


@dataclass(frozen=True)
class Profile:
    """How one simulated database behaves."""

    instance_id: str
    seed: int
    memory_gib: float
    storage_gib: int
    cpu_base: float  # % at night
    cpu_swing: float  # % added at the daily peak
    max_connections: int
    iops_scale: float
    storage_leak_gib_per_day: float
    created_at: datetime
    stopped_at: datetime | None = None
    kind: InstanceKind = field(default_factory=InstanceKind)
    vcpus: int = 2
    serverless_acu: tuple[float, float] | None = None  # Serverless v2 (min, max)


def _minutes(start: datetime, end: datetime) -> np.ndarray:
    first = int(start.replace(tzinfo=start.tzinfo or UTC).timestamp()) // MINUTE
    last = int(end.replace(tzinfo=end.tzinfo or UTC).timestamp()) // MINUTE
    return np.arange(first, last, dtype=np.int64)


# Every simulated database is busiest at this hour (UTC) and quiet around midnight, with no
# active session (no DB load) on most nights.
PEAK_HOUR_UTC = 14


# Hours that start at most this far from the peak are busy: every simulated database has load
# in each of their minutes and in the hour before, on weekends too.
BUSY_HOURS_FROM_PEAK = 5


def latest_busy_hour(moment: datetime, hours_from_peak: int = BUSY_HOURS_FROM_PEAK) -> datetime:
    """The start of the latest hour begun at or before `moment` and at most `hours_from_peak`
    from PEAK_HOUR_UTC: what tests and benchmarks ask for when they need load (statements,
    wait events) whatever the hour they run at. With the default it begins less than 14
    hours before `moment` (recent enough for a dashboard's last day); with 0 it is the peak."""
    hour = floor_hour(moment)
    since_first = (hour.hour - PEAK_HOUR_UTC + hours_from_peak) % 24
    return hour - timedelta(hours=max(0, since_first - 2 * hours_from_peak))


def load(profile: Profile, minutes: np.ndarray) -> np.ndarray:
    """Utilisation in [0, ~1.3]: daily peak at PEAK_HOUR_UTC, quieter weekends, noise, spikes."""
    key = stable_key(profile.seed, profile.instance_id, "load")
    minute_of_day = minutes % DAY_MINUTES
    daily = 0.5 + 0.5 * np.cos(2 * np.pi * (minute_of_day / DAY_MINUTES - PEAK_HOUR_UTC / 24))
    weekday = ((minutes // DAY_MINUTES) + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    weekly = np.where(weekday >= 5, 0.6, 1.0)
    noise = 0.12 * (uniform(key, minutes) - 0.5)
    half_hours = minutes // 30
    spike = np.where(uniform(key ^ 0x5A5A, half_hours) > 0.97, 0.45, 0.0)
    return np.clip(daily * weekly + noise + spike, 0.0, 1.3)


def minute_values(profile: Profile, metric: str, minutes: np.ndarray) -> np.ndarray:
    """One value per minute, as RDS publishes them."""
    level = load(profile, minutes)
    jitter = uniform(stable_key(profile.seed, profile.instance_id, metric), minutes) - 0.5
    memory = profile.memory_gib * GIB
    cpu = np.clip(profile.cpu_base + profile.cpu_swing * level + 3 * jitter, 0.0, 100.0)
    read_iops = profile.iops_scale * (40 + 1500 * level) * (1 + 0.1 * jitter)
    write_iops = profile.iops_scale * (20 + 600 * level) * (1 + 0.1 * jitter)
    age_days = (minutes * MINUTE - profile.created_at.timestamp()) / 86400
    if metric == "CPUUtilization":
        return cpu
    if metric == "DatabaseConnections":
        return np.round(profile.max_connections * (0.05 + 0.55 * cpu / 100) + 2 * jitter)
    if metric == "FreeableMemory":
        return memory * (0.62 - 0.3 * np.minimum(level, 1.0) + 0.02 * jitter)
    if metric == "FreeStorageSpace":
        used = (
            0.2 + profile.storage_leak_gib_per_day * np.maximum(age_days, 0) / profile.storage_gib
        )
        return np.maximum(profile.storage_gib * GIB * (1 - used) + 1e6 * jitter, 0.0)
    if metric == "ReadIOPS":
        return read_iops
    if metric == "WriteIOPS":
        return write_iops
    if metric == "ReadLatency":
        return 0.0008 + 0.004 * level**2 + 0.0001 * jitter
    if metric == "WriteLatency":
        return 0.0012 + 0.006 * level**2 + 0.0001 * jitter
    if metric == "ReadThroughput":
        return read_iops * 16 * 1024
    if metric == "WriteThroughput":
        return write_iops * 24 * 1024
    if metric == "NetworkReceiveThroughput":
        return 1e5 + 4e6 * level * (1 + 0.05 * jitter)
    if metric == "NetworkTransmitThroughput":
        return 2e5 + 7e6 * level * (1 + 0.05 * jitter)
    if metric == "DiskQueueDepth":
        return np.maximum(0.02 + 3.5 * level**3 + 0.05 * jitter, 0.0)
    if metric == "SwapUsage":
        return np.maximum(level - 0.85, 0.0) * memory * 0.2
    if metric in ("DBLoad", "DBLoadCPU", "DBLoadNonCPU", "DBLoadRelativeToNumVCPUs"):
        sessions = active_sessions(profile, level, jitter)
        if metric == "DBLoadCPU":
            return sessions * cpu / 100
        if metric == "DBLoadNonCPU":
            return sessions * (1 - cpu / 100)
        return sessions / profile.vcpus if metric == "DBLoadRelativeToNumVCPUs" else sessions
    if metric == "BufferCacheHitRatio":
        return np.clip(99.6 - 4 * level**2 + 0.2 * jitter, 0.0, 100.0)
    if metric in ("CommitLatency", "DMLLatency", "SelectLatency"):
        return 1.5 + 6 * level**2 + 0.3 * jitter
    if metric == "Deadlocks":
        return np.where(jitter > 0.49, 0.02 * level, 0.0)
    if metric.startswith("AuroraReplicaLag"):
        return 12 + 40 * level + 4 * jitter
    if metric == "VolumeBytesUsed":  # the cluster's volume: 20 GiB, then its growth
        return (20 + profile.storage_leak_gib_per_day * np.maximum(age_days, 0)) * GIB
    if metric in ("VolumeReadIOPs", "VolumeWriteIOPs"):  # billed I/Os per 5 minutes
        return 300 * (read_iops if metric == "VolumeReadIOPs" else write_iops)
    if metric in ("ServerlessDatabaseCapacity", "ACUUtilization"):
        low, high = profile.serverless_acu or (0.5, 1.0)
        capacity = np.round(np.clip(low + (high - low) * level * 0.8, low, high) * 2) / 2
        return capacity if metric == "ServerlessDatabaseCapacity" else 100 * capacity / high
    return np.maximum(level * 100 * (1 + 0.05 * jitter), 0.0)


def active_sessions(profile: Profile, level: np.ndarray, jitter: np.ndarray) -> np.ndarray:
    """Average active sessions (Performance Insights' DB load): none while the database is
    quiet, up to about twice its vCPUs at the peak."""
    return np.maximum(2 * profile.vcpus * (level - QUIET_LOAD) + 0.05 * jitter, 0.0)


# Below this utilisation a database has no active session: Performance Insights publishes no
# load, and CloudWatch's DBLoad metrics have no datapoint.
QUIET_LOAD = 0.15


STATISTICS = ("Average", "Minimum", "Maximum", "Sum", "SampleCount")
# CloudWatch's percentile statistics (extended statistics): p0.0 to p100.
_PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?|100(?:\.0+)?)")


def percentile_of(statistic: str) -> float | None:
    """The percentile a `pNN` statistic asks for; None for any other statistic."""
    match = _PERCENTILE.fullmatch(statistic)
    return float(match.group(1)) if match else None


@functools.lru_cache(maxsize=4)
def _recent_minute_values(profile: Profile, metric: str, first: int, count: int) -> np.ndarray:
    """minute_values of `count` minutes from minute `first`, kept for the next statistics of
    the same metric (a request asks for them one after another; a year of minutes takes a
    tenth of a second to generate). Read-only: the caller must not change it."""
    values = minute_values(profile, metric, np.arange(first, first + count, dtype=np.int64))
    values.flags.writeable = False
    return values


def series(
    profile: Profile,
    metric: str,
    statistic: str,
    period_seconds: int,
    start: datetime,
    end: datetime,
    published_before: datetime,
) -> tuple[np.ndarray, np.ndarray]:
    """(period start epoch seconds, value) of every period of [start, end) with data.

    Minutes the instance did not exist or was stopped have no data; neither have minutes at
    or after `published_before` (CloudWatch publishes late).
    """
    per_period = period_seconds // MINUTE
    minutes = _minutes(start, end)
    usable = len(minutes) - len(minutes) % per_period
    minutes = minutes[:usable]
    if usable == 0:
        return np.empty(0, np.int64), np.empty(0)
    described = METRICS_BY_NAME.get(metric)
    if described is not None and not described.published(profile.kind):
        return np.empty(0, np.int64), np.empty(0)
    values = _recent_minute_values(profile, metric, int(minutes[0]), len(minutes))
    seconds = minutes * MINUTE
    present = (seconds >= profile.created_at.timestamp()) & (seconds < published_before.timestamp())
    if described is not None and described.while_loaded:
        present &= values > 0
    if profile.stopped_at is not None:
        present &= seconds < profile.stopped_at.timestamp()
    grid = values.reshape(-1, per_period)
    mask = present.reshape(-1, per_period)
    counts = mask.sum(axis=1)
    has_data = counts > 0
    masked = np.where(mask, grid, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        if statistic == "Average":
            out = np.nansum(masked, axis=1) / counts
        elif statistic == "Minimum":
            out = np.nanmin(np.where(mask, grid, np.inf), axis=1)
        elif statistic == "Maximum":
            out = np.nanmax(np.where(mask, grid, -np.inf), axis=1)
        elif statistic == "Sum":
            out = np.nansum(masked, axis=1)
        elif statistic == "SampleCount":
            out = counts.astype(np.float64)
        elif (percentile := percentile_of(statistic)) is not None:
            # Of the period's one-minute samples, as CloudWatch computes percentiles from the
            # samples it received; periods without any are dropped below.
            # nanpercentile is some 30 times slower: only for periods with missing minutes.
            out = np.full(len(grid), np.nan)
            whole = counts == per_period
            out[whole] = np.percentile(grid[whole], percentile, axis=1)
            partial = has_data & ~whole
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[partial] = np.nanpercentile(masked[partial], percentile, axis=1)
        else:
            raise ValueError(f"unsupported statistic {statistic!r}")
    period_starts = seconds.reshape(-1, per_period)[:, 0]
    return period_starts[has_data], out[has_data]
