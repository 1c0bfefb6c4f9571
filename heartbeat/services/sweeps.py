"""What the reaper and the reconciler share: single flight, and the record of each sweep."""

from __future__ import annotations

import logging
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any, Generic, Protocol, TypeVar

from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from heartbeat.conf import heartbeat_conf
from heartbeat.models import (
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunStatus,
    SweepKind,
    SweepRecord,
    WakeSource,
    WakeupStatus,
)
from heartbeat.services.lifecycle import dispatch_lease_expiry, run_dispatch_on_commit
from heartbeat.services.policy import heartbeat_policy_max_concurrent_runs
from heartbeat.shim.run_shim import redact_document, redact_text
from paperclip.rows import json_rows, sql_execute

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


class AdvisoryLock(IntEnum):
    """The product's other advisory locks (after the sweep locks, in the same namespace)."""

    # Held by claims while they count a host's running runs against its cap.
    HOST_RUNS = 16
    # Held by a host's run supervisor for its whole life: one supervisor per host.
    HOST_SUPERVISOR = 17


def advisory_lock_key(lock: IntEnum) -> int:
    """First key of one of the product's advisory locks."""
    return _LOCK_NAMESPACE + lock


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
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [advisory_lock_key(lock), scope])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(%s, %s)", [advisory_lock_key(lock), scope]
                    )
            except DatabaseError:
                # A broken connection took the lock with it.
                logger.warning("could not release the %s sweep lock", lock.name.lower())


# A sweep record or log line lists at most this many ids (a mass recovery of 10,000 runs would
# otherwise write every id into every record); the counts stay exact.
SWEEP_RECORD_MAX_IDS = 100


def sweep_ids_shown(data: dict, keys: Sequence[str], max_ids: int | None) -> dict:
    """Id lists of a sweep result as strings, cut to max_ids with a `<key>_truncated` flag."""
    for key in keys:
        ids = data[key] if max_ids is None else data[key][:max_ids]
        if max_ids is not None:
            data[f"{key}_truncated"] = len(data[key]) > max_ids
        data[key] = [str(item) for item in ids]
    return data


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


class SweepResult(Protocol):
    """What a sweep reports: counts and ids (see ReapResult, ReconcileResult)."""

    @property
    def noteworthy(self) -> bool:
        """Whether the sweep changed or failed anything (worth a log line)."""

    def as_dict(self, *, max_ids: int | None = None) -> dict: ...


R = TypeVar("R", bound=SweepResult)


class Sweep(Protocol[R]):
    """One sweep's work: run() does it, result() says what it did so far."""

    def run(self) -> None: ...

    def result(self) -> R: ...


def sweep_run(
    *,
    kind: SweepKind,
    lock: SweepLock,
    host: str,
    scope: int = 0,
    single_flight: bool,
    dry_run: bool,
    skipped: R,
    sweep_start: Callable[[datetime], Sweep[R]],
) -> R:
    """The frame both sweeps share: single flight, a log line, and the sweep's record.

    sweep_start builds the sweep from its start time. Returns `skipped` when another sweep
    holds the lock (single_flight=False lets concurrent sweeps race: tests of the row-level
    guards). A dry run writes no record.
    """
    if not single_flight:
        return _sweep_recorded(kind, host, dry_run, sweep_start)
    with sweep_single_flight(lock, scope=scope) as acquired:
        if not acquired:
            logger.info("%s sweep on %s skipped: another one holds the lock", kind, host)
            return skipped
        return _sweep_recorded(kind, host, dry_run, sweep_start)


def _sweep_recorded(
    kind: SweepKind, host: str, dry_run: bool, sweep_start: Callable[[datetime], Sweep[R]]
) -> R:
    started_at = timezone.now()
    sweep = sweep_start(started_at)
    error = None
    try:
        sweep.run()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result = sweep.result()
        shown = result.as_dict(max_ids=SWEEP_RECORD_MAX_IDS)
        if result.noteworthy:
            logger.warning("%s sweep: %s", kind, shown)
        if not dry_run:
            sweep_record_save_quietly(
                kind=kind, host=host, started_at=started_at, result=shown, error=error
            )
    return result


Key = TypeVar("Key")
Locked = TypeVar("Locked")
Outcome = TypeVar("Outcome")


@dataclass(frozen=True)
class SweepPage(Generic[Key, Locked]):
    """One locked page of a sweep: what its writer gets, its items' ids (redone one by one if
    the page fails), the key the next page starts after, and whether there may be one."""

    locked: Locked
    item_ids: list[Any]
    last_key: Key
    more: bool


def sweep_pages(
    *,
    what: str,
    page_lock: Callable[[Key | None], SweepPage[Key, Locked] | None],
    page_write: Callable[[Locked], Outcome],
    committed: Callable[[Outcome], None],
    item_redo: Callable[[Any], None],
) -> None:
    """The loop both sweeps share: lock the next page (None: there is none), decide and write it
    in one transaction, and count it once that committed (a rolled-back page is redone).

    A page that fails is redone item by item (item_redo, each in a transaction of its own): one
    bad row must not cost the others their recovery (reference 9.9).
    """
    after: Key | None = None
    while True:
        # The last page's rows and outcome go before the next page is read: one page in memory.
        page = outcome = None
        try:
            with transaction.atomic():
                page = page_lock(after)
                if page is None:
                    return
                outcome = page_write(page.locked)
            committed(outcome)
        except Exception:
            if page is None:
                raise
            logger.exception(
                "%s page failed; handling its %d items one by one", what, len(page.item_ids)
            )
            for item_id in page.item_ids:
                item_redo(item_id)
        if not page.more:
            return
        after = page.last_key


@dataclass(frozen=True)
class QueuedRunRow:
    """A run a sweep queues (a retry or a recovery run) with the wake that asked for it."""

    run_id: uuid.UUID
    wakeup_id: uuid.UUID
    company_id: uuid.UUID
    agent_id: uuid.UUID
    wake_reason: str
    wake_payload: dict
    context: dict
    retry_of_run_id: uuid.UUID | None
    process_loss_retry_count: int
    lease: datetime | None
    session_id_before: str | None = None


def runs_queue_with_wakes(rows: Sequence[QueuedRunRow], *, now: datetime) -> None:
    """Insert the runs and their wakes in one statement; the wake and the run point at each
    other, so the foreign keys are checked at commit (call inside the batch's transaction)."""
    if not rows:
        return
    sql_execute(
        f"""
        WITH src AS (
            SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(run_id uuid,
                wakeup_id uuid, company_id uuid, agent_id uuid, wake_reason text,
                wake_payload jsonb, context jsonb, retry_of_run_id uuid,
                process_loss_retry_count int, lease timestamptz, session_id_before text)
        ), wakes AS (
            INSERT INTO {AgentWakeupRequest._meta.db_table} (
                id, company_id, agent_id, source, trigger_detail, reason, payload, status,
                coalesced_count, requested_by_actor_type, run_id, requested_at, created_at,
                updated_at)
            SELECT wakeup_id, company_id, agent_id, %(source)s, 'system', wake_reason,
                wake_payload, %(queued)s, 0, 'system', run_id, %(now)s, %(now)s, %(now)s
            FROM src
        )
        INSERT INTO {HeartbeatRun._meta.db_table} (
            id, company_id, agent_id, invocation_source, trigger_detail, status,
            wakeup_request_id, context_snapshot, session_id_before, retry_of_run_id,
            process_loss_retry_count, event_seq, log_compressed, issue_comment_status,
            lease_expires_at, created_at, updated_at)
        SELECT run_id, company_id, agent_id, %(source)s, 'system', %(queued)s, wakeup_id,
            context, session_id_before, retry_of_run_id, process_loss_retry_count, 1, false,
            'not_applicable', lease, %(now)s, %(now)s
        FROM src
        """,
        {
            "rows": json_rows(vars(row) for row in rows),
            "source": WakeSource.AUTOMATION,
            "queued": WakeupStatus.QUEUED,
            "now": now,
        },
    )


@dataclass(frozen=True)
class EventRow:
    """A run event written by a sweep; seq comes from the run's event_seq counter."""

    run_id: uuid.UUID
    company_id: uuid.UUID
    agent_id: uuid.UUID
    seq: int
    level: str
    message: str
    payload: dict
    event_type: str = HeartbeatRunEvent.EventType.LIFECYCLE


def run_events_insert(rows: Sequence[EventRow], *, now: datetime) -> None:
    """Insert a batch's run events in one statement, redacted as run_event_append redacts one."""
    if not rows:
        return
    sql_execute(
        f"""
        INSERT INTO {HeartbeatRunEvent._meta.db_table} (
            id, company_id, run_id, agent_id, seq, event_type, stream, level, message, payload,
            created_at)
        SELECT gen_random_uuid(), v.company_id, v.run_id, v.agent_id, v.seq, v.event_type,
            'system', v.level, v.message, v.payload, %(now)s
        FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(company_id uuid, run_id uuid,
            agent_id uuid, seq int, event_type text, level text, message text, payload jsonb)
        """,
        {
            "now": now,
            "rows": json_rows(_event_values(row) for row in rows),
        },
    )


def _event_values(row: EventRow) -> dict:
    """The row's values redacted as run_event_append redacts one event (the row's own values,
    not a copy, when nothing in them is: a batch's document stays its only large copy)."""
    message, payload = redact_text(row.message), redact_document(row.payload)
    if message == row.message and payload == row.payload:
        return vars(row)
    return {**vars(row), "message": message, "payload": payload}


def runs_dispatch_within_slots(
    runs: Sequence[tuple[uuid.UUID, uuid.UUID]], *, runtime_configs: dict, now: datetime
) -> list[datetime | None]:
    """Choose which of a batch's new queued runs go to workers after commit: as many per agent
    as it has free slots. Returns each run's dispatch lease (None: parked).

    The batch form of agent_start_next_queued for runs a sweep just queued (runs are
    (run_id, agent_id); runtime_configs has an entry for each invokable agent). What finds no
    slot stays parked for resume_queued_runs; the claim re-checks the cap under the agent's
    row lock, so a stale count here cannot over-run an agent.
    """
    busy = {}
    if runtime_configs:
        busy = dict(
            HeartbeatRun.objects.filter(
                Q(status=RunStatus.RUNNING) | Q(status=RunStatus.QUEUED, lease_expires_at__gt=now),
                agent_id__in=list(runtime_configs),
            )
            .values("agent_id")
            .annotate(busy=Count("id"))
            .values_list("agent_id", "busy")
        )
    free = {
        agent_id: heartbeat_policy_max_concurrent_runs(config) - busy.get(agent_id, 0)
        for agent_id, config in runtime_configs.items()
    }
    lease = dispatch_lease_expiry(now)
    leases: list[datetime | None] = []
    for run_id, agent_id in runs:
        if free.get(agent_id, 0) > 0:
            free[agent_id] -= 1
            leases.append(lease)
            run_dispatch_on_commit(run_id)
        else:
            leases.append(None)
    return leases


@dataclass(frozen=True)
class LatestSweep:
    """The newest record of one sweep kind; record is None when it never ran."""

    kind: str
    record: SweepRecord | None
    overdue: bool


def sweep_overdue_sec() -> float:
    """How old the newest record of a sweep may be before the sweep counts as overdue."""
    return heartbeat_conf().sweep_interval_sec * _OVERDUE_AFTER_INTERVALS


def sweeps_latest(*, now: datetime | None = None) -> dict[str, LatestSweep]:
    """The newest reap and reconcile sweep records, each flagged overdue when it is too old.

    For the health endpoint and the dashboard: "when did recovery last run, how long did it
    take, what did it do, and is it still running on schedule".
    """
    now = now or timezone.now()
    overdue_after = timedelta(seconds=sweep_overdue_sec())
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
