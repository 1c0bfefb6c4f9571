"""What the reaper and the reconciler share: single flight, and the record of each sweep."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

from django.db import DatabaseError, connection
from django.utils import timezone

from heartbeat.conf import heartbeat_conf
from heartbeat.models import SweepKind, SweepRecord

logger = logging.getLogger(__name__)

# First key of every advisory lock this product takes ("PC"), so they never collide with
# another application's locks on a shared PostgreSQL.
_LOCK_NAMESPACE = 0x5043_0000
# A sweep is overdue once it missed this many intervals (the scheduler fires every interval).
_OVERDUE_AFTER_INTERVALS = 3


class SweepLock(IntEnum):
    REAP = 1
    RECONCILE = 2
    STARTUP = 3


def sweep_lock_scope(host: str | None) -> int:
    """Second key of a sweep lock: 0 for a global sweep, a hash of the host for a per-host one."""
    return 0 if host is None else zlib.crc32(host.encode()) & 0x7FFF_FFFF


@contextmanager
def sweep_single_flight(lock: SweepLock, *, scope: int = 0) -> Iterator[bool]:
    """Hold a session advisory lock for the sweep; yields False (not waiting) if another holds it.

    Overlapping ticks of the reference each created retries and exhausted the pool (its PRs
    #9491, #10167); a session lock spans the sweep's many batch transactions and is dropped by
    PostgreSQL if this process dies mid-sweep.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_NAMESPACE + lock, scope])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(%s, %s)", [_LOCK_NAMESPACE + lock, scope]
                    )
            except DatabaseError:
                # A broken connection took the lock with it.
                logger.warning("could not release the %s sweep lock", lock.name.lower())


def sweep_record_save(
    *,
    kind: str,
    host: str,
    started_at: datetime,
    finished_at: datetime,
    result: dict,
    error: str | None = None,
) -> SweepRecord:
    """Record a finished sweep and prune records past the retention."""
    record = SweepRecord.objects.create(
        kind=kind,
        host=host,
        started_at=started_at,
        finished_at=finished_at,
        duration_ms=(finished_at - started_at).total_seconds() * 1000,
        result=result,
        error=error,
    )
    cutoff = finished_at - timedelta(seconds=heartbeat_conf().sweep_record_retention_sec)
    SweepRecord.objects.filter(kind=kind, started_at__lt=cutoff).delete()
    return record


def sweep_record_save_quietly(
    *, kind: str, host: str, started_at: datetime, result: dict, error: str | None
) -> None:
    """sweep_record_save, finishing now; a failure is logged, never raised."""
    try:
        sweep_record_save(
            kind=kind,
            host=host,
            started_at=started_at,
            finished_at=timezone.now(),
            result=result,
            error=error,
        )
    except Exception:
        # The record is for observers; losing one must not fail the sweep that did the work.
        logger.exception("could not record the %s sweep", kind)


def sql_update_from_values(
    sql: str, head_params: list, rows: list[tuple], casts: tuple[str, ...]
) -> list[tuple]:
    """Run a statement joining `(VALUES {values})`, one row per item: one statement per batch.

    The sweeps write a batch of items with different values (each run its own error text)
    this way instead of one UPDATE per item.
    """
    row_sql = "(" + ", ".join(f"%s::{cast}" for cast in casts) + ")"
    values = ", ".join([row_sql] * len(rows))
    params = [*head_params, *(value for row in rows for value in row)]
    with connection.cursor() as cursor:
        cursor.execute(sql.replace("{values}", values), params)
        return cursor.fetchall() if cursor.description else []


@dataclass(frozen=True)
class LatestSweep:
    """The newest record of one sweep kind; record is None when it never ran."""

    kind: str
    record: SweepRecord | None
    overdue: bool


def sweeps_latest(*, now: datetime | None = None) -> dict[str, LatestSweep]:
    """The newest reap and reconcile sweep records, each flagged overdue when it is too old.

    For the health endpoint and the dashboard: "when did recovery last run, how long did it
    take, what did it do, and is it still running on schedule".
    """
    now = now or timezone.now()
    overdue_after = timedelta(
        seconds=heartbeat_conf().sweep_interval_sec * _OVERDUE_AFTER_INTERVALS
    )
    newest = {
        record.kind: record
        for record in SweepRecord.objects.order_by("kind", "-started_at").distinct("kind")
    }
    latest = {}
    for kind in SweepKind.values:
        record = newest.get(kind)
        overdue = record is None or now - record.finished_at > overdue_after
        latest[kind] = LatestSweep(kind=kind, record=record, overdue=overdue)
    return latest
