"""What a host's run supervisor writes: who it is, which runs it watches, their leases, their
progress, and what it did to processes of runs that had already ended elsewhere.

The supervisor's loop (heartbeat/supervisor.py) decides when; these functions are the state
changes, each one statement (or one transaction) for all the runs it concerns.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from heartbeat.conf import heartbeat_conf
from heartbeat.models import (
    HeartbeatRun,
    HeartbeatRunEvent,
    RunErrorCode,
    RunStatus,
    RunSupervisor,
)
from heartbeat.process_control import ProcessIdentity
from heartbeat.services.events import run_event_append
from heartbeat.services.runs import cancel_run
from heartbeat.services.sweeps import (
    AdvisoryLock,
    EventRow,
    advisory_lock_key,
    json_rows,
    run_events_insert,
    sql_execute,
    sweep_lock_scope,
)
from paperclip.services import ActivityRow, activity_log_record_many

# Why runs were cancelled when the product stopped with them (`start --stop-runs`).
CANCELLED_AT_STOP = "Cancelled when the product was stopped with its runs (start --stop-runs)"
# Renewals further apart than this many intervals mean the supervisor lost the database (or
# was stopped) in between: its continuous renewal starts again (see supervisor_renewing_since).
_RENEWAL_GAP_INTERVALS = 2


@dataclass(frozen=True)
class HostRun:
    """A running run of this host as the supervisor reads it on every tick."""

    run_id: uuid.UUID
    company_id: uuid.UUID
    agent_id: uuid.UUID
    log_ref: str | None
    shim: ProcessIdentity | None
    owner_pid: int | None
    owner_started_at: datetime | None
    owner_since: datetime | None
    error_code: str | None


def supervisor_lock_try(*, host: str) -> bool:
    """Take the host's supervisor lock for this database session (one supervisor per host)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_lock(%s, %s)",
            [advisory_lock_key(AdvisoryLock.HOST_SUPERVISOR), sweep_lock_scope(host)],
        )
        return bool(cursor.fetchone()[0])


def supervisor_lock_release(*, host: str) -> None:
    """Give the host's supervisor lock back (a clean stop; a dead session drops it anyway)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_unlock(%s, %s)",
            [advisory_lock_key(AdvisoryLock.HOST_SUPERVISOR), sweep_lock_scope(host)],
        )


def supervisor_register(*, identity: ProcessIdentity, now: datetime | None = None) -> None:
    """Record this process as its host's run supervisor (one row per host)."""
    now = now or timezone.now()
    RunSupervisor.objects.update_or_create(
        host=identity.host,
        defaults={
            "boot_id": identity.boot_id,
            "pid": identity.pid,
            "process_started_at": identity.started_at,
            "started_at": now,
            "renewed_at": now,
            "renewing_since": now,
            "stopped_at": None,
            "runs_watched": 0,
        },
    )


def supervisor_stopped(*, identity: ProcessIdentity, now: datetime | None = None) -> None:
    """Record a clean stop (its runs go on and wait to be adopted)."""
    RunSupervisor.objects.filter(host=identity.host, pid=identity.pid).update(
        stopped_at=now or timezone.now()
    )


def runs_running_on_host(*, host: str, boot_id: str) -> list[HostRun]:
    """Running runs launched on this host in this boot (through run_running_owner_idx: a run
    is owned by a process of the host that launched it, its worker, then its supervisor)."""
    rows = HeartbeatRun.objects.filter(
        status=RunStatus.RUNNING, owner_host=host, process_boot_id=boot_id
    ).values_list(
        "id",
        "company_id",
        "agent_id",
        "log_ref",
        "shim_pid",
        "shim_started_at",
        "owner_pid",
        "owner_started_at",
        "owner_since",
        "error_code",
    )
    return [
        HostRun(
            run_id=run_id,
            company_id=company_id,
            agent_id=agent_id,
            log_ref=log_ref,
            shim=ProcessIdentity(
                pid=shim_pid, pgid=None, started_at=shim_started, host=host, boot_id=boot_id
            )
            if shim_pid
            else None,
            owner_pid=owner_pid,
            owner_started_at=owner_started_at,
            owner_since=owner_since,
            error_code=error_code,
        )
        for (
            run_id,
            company_id,
            agent_id,
            log_ref,
            shim_pid,
            shim_started,
            owner_pid,
            owner_started_at,
            owner_since,
            error_code,
        ) in rows
    ]


def runs_cancel_on_host(*, host: str, boot_id: str) -> list[uuid.UUID]:
    """Cancel every running run of this host, each shim asked to stop at once (the product
    stopped with its runs); returns the runs this call cancelled."""
    cancelled = []
    for run in runs_running_on_host(host=host, boot_id=boot_id):
        ended = cancel_run(run.run_id, reason=CANCELLED_AT_STOP)
        # Otherwise it ended on its own meanwhile, and that ending stands.
        if ended.status == RunStatus.CANCELLED and ended.error == CANCELLED_AT_STOP:
            cancelled.append(run.run_id)
    return cancelled


def runs_adopt(
    *,
    runs: Sequence[HostRun],
    owner: ProcessIdentity,
    outage_note: str | None = None,
    now: datetime | None = None,
) -> list[uuid.UUID]:
    """Make `owner` (this host's supervisor) the owner of these running runs; returns the ids
    it now owns (a run that ended meanwhile, or that another transaction holds, is left).

    A run watched by a supervisor before (owner_since set) or marked detached is adopted: that
    writes an event and an activity row saying who watched it before and who watches it now.
    A run coming straight from its launch is taken over silently. outage_note says why this
    supervisor itself lost sight of its runs (a database outage), when it did.
    """
    if not runs:
        return []
    now = now or timezone.now()
    adopted = sql_execute(
        _ADOPT_SQL,
        {
            "ids": [run.run_id for run in runs],
            "detached": RunErrorCode.PROCESS_DETACHED,
            "host": owner.host,
            "boot_id": owner.boot_id,
            "pid": owner.pid,
            "started": owner.started_at,
            "now": now,
            "lease": now + timedelta(seconds=heartbeat_conf().lease_expiry_sec),
        },
    )
    by_id = {run.run_id: run for run in runs}
    records = [
        _adoption_records(
            by_id[run_id],
            seq=seq,
            owner=owner,
            old_host=old_host,
            old_pid=old_pid,
            old_since=old_since,
            outage_note=outage_note,
        )
        for run_id, noted, seq, old_host, old_pid, old_since in adopted
        if noted
    ]
    run_events_insert([event for event, _ in records], now=now)
    activity_log_record_many(rows=[activity for _, activity in records], now=now)
    return [row[0] for row in adopted]


# Ownership moves to the new supervisor with a fresh lease; a detached mark is lifted. Runs
# another transaction holds are skipped (their owner is busy with them). `noted` is whether
# the adoption is told (an event, so the run's event_seq advances for it).
_ADOPT_SQL = f"""
    WITH old AS (
        SELECT id, owner_host, owner_pid, owner_since, error_code
        FROM {HeartbeatRun._meta.db_table}
        WHERE id = ANY(%(ids)s::uuid[]) AND status = 'running'
        ORDER BY id FOR UPDATE SKIP LOCKED
    ), adoption AS (
        SELECT id, owner_host, owner_pid, owner_since,
            (owner_since IS NOT NULL OR error_code = %(detached)s) AS noted
        FROM old
    )
    UPDATE {HeartbeatRun._meta.db_table} AS r SET owner_host = %(host)s,
        owner_boot_id = %(boot_id)s, owner_pid = %(pid)s, owner_started_at = %(started)s,
        owner_since = %(now)s, lease_expires_at = %(lease)s, lease_renewed_at = %(now)s,
        error = CASE WHEN r.error_code = %(detached)s THEN NULL ELSE r.error END,
        error_code = CASE WHEN r.error_code = %(detached)s THEN NULL ELSE r.error_code END,
        detached_at = NULL,
        event_seq = r.event_seq + CASE WHEN adoption.noted THEN 1 ELSE 0 END
    FROM adoption
    WHERE r.id = adoption.id
    RETURNING r.id, adoption.noted, r.event_seq, adoption.owner_host, adoption.owner_pid,
        adoption.owner_since
"""


def _adoption_records(
    run: HostRun,
    *,
    seq: int,
    owner: ProcessIdentity,
    old_host: str | None,
    old_pid: int | None,
    old_since: datetime | None,
    outage_note: str | None,
) -> tuple[EventRow, ActivityRow]:
    """The event and the activity row that tell who watched the run before and who now does."""
    payload = {"supervisorPid": owner.pid, "previousOwnerPid": old_pid, "host": owner.host}
    message = _adoption_message(
        owner, old_host=old_host, old_pid=old_pid, old_since=old_since, outage_note=outage_note
    )
    event = EventRow(
        run_id=run.run_id,
        company_id=run.company_id,
        agent_id=run.agent_id,
        seq=seq,
        level=HeartbeatRunEvent.Level.INFO,
        message=message,
        payload=payload,
    )
    activity = ActivityRow(
        company_id=run.company_id,
        actor_id="run_supervisor",
        action="heartbeat.run_adopted",
        entity_type="heartbeat_run",
        entity_id=run.run_id,
        agent_id=run.agent_id,
        run_id=run.run_id,
        details=payload,
    )
    return event, activity


def _adoption_message(
    owner: ProcessIdentity,
    *,
    old_host: str | None,
    old_pid: int | None,
    old_since: datetime | None,
    outage_note: str | None,
) -> str:
    """The adoption event's text: watched again by the same supervisor (after an outage), or
    taken over from a supervisor that is gone."""
    if old_pid == owner.pid and old_host == owner.host:
        return (
            f"Watched again by the run supervisor pid {owner.pid} on host {owner.host}"
            + (f" ({outage_note})" if outage_note else "")
            + ". The agent kept running under its monitor."
        )
    return (
        f"Adopted by the run supervisor pid {owner.pid} on host {owner.host}; "
        f"before, pid {old_pid} on {old_host}"
        + (f" watched it from {old_since:%Y-%m-%d %H:%M:%S}" if old_since else "")
        + " and is gone. The agent kept running under its monitor."
    )


def run_leases_renew(*, owner: ProcessIdentity, watching: int, now: datetime | None = None) -> int:
    """Renew the leases of every running run `owner` watches, in one statement; returns how many.

    Also the supervisor's own heartbeat: its row says when it last renewed and since when it
    has renewed without a gap (a gap means it lost the database or was stopped).
    """
    now = now or timezone.now()
    conf = heartbeat_conf()
    renewed = HeartbeatRun.objects.filter(
        status=RunStatus.RUNNING,
        owner_host=owner.host,
        owner_boot_id=owner.boot_id,
        owner_pid=owner.pid,
        owner_started_at=owner.started_at,
    ).update(lease_expires_at=now + timedelta(seconds=conf.lease_expiry_sec), lease_renewed_at=now)
    gap = timedelta(seconds=conf.lease_renew_interval_sec * _RENEWAL_GAP_INTERVALS)
    sql_execute(
        f"""
        UPDATE {RunSupervisor._meta.db_table} SET renewed_at = %(now)s,
            renewing_since = CASE WHEN renewed_at < %(gap_start)s THEN %(now)s
                ELSE renewing_since END,
            runs_watched = %(watching)s
        WHERE host = %(host)s AND pid = %(pid)s
        """,
        {
            "now": now,
            "gap_start": now - gap,
            "watching": watching,
            "host": owner.host,
            "pid": owner.pid,
        },
    )
    return renewed


def supervisor_renewing_since(*, host: str) -> datetime | None:
    """Since when this host's supervisor has renewed its leases without a gap (None: no
    supervisor registered here). A reaper trusts other hosts' expired leases only once its own
    host has renewed for a whole lease period: right after a database outage every lease looks
    expired, and the hosts whose supervisors are alive must first get to renew theirs."""
    return (
        RunSupervisor.objects.filter(host=host, stopped_at__isnull=True)
        .values_list("renewing_since", flat=True)
        .first()
    )


def runs_log_progress_record(*, progress: Sequence[tuple[uuid.UUID, int, str | None, str | None]]):
    """Record how far running runs' logs have grown: (run id, bytes, stdout and stderr excerpts).

    One statement; only running runs (a finished run's figures come from its exit report).
    """
    if not progress:
        return
    sql_execute(
        f"""
        UPDATE {HeartbeatRun._meta.db_table} AS r SET log_bytes = v.bytes,
            stdout_excerpt = v.stdout, stderr_excerpt = v.stderr
        FROM jsonb_to_recordset(%(rows)s::jsonb)
            AS v(id uuid, bytes bigint, stdout text, stderr text)
        WHERE r.id = v.id AND r.status = 'running'
        """,
        {
            "rows": json_rows(
                {"id": run_id, "bytes": size, "stdout": stdout, "stderr": stderr}
                for run_id, size, stdout, stderr in progress
            )
        },
    )


@dataclass(frozen=True)
class EndedRun:
    """A run of this host that is no longer running, while a process of it still is."""

    run_id: uuid.UUID
    status: str
    shim: ProcessIdentity | None
    log_ref: str | None


def runs_ended_on_host(*, host: str, boot_id: str, run_ids: Sequence[str]) -> list[EndedRun]:
    """Of these run ids, the runs of this host that are no longer running.

    Ids of runs this database does not know (another product on the same machine) are left out:
    their processes are never ours to touch.
    """
    valid = []
    for run_id in run_ids:
        try:
            valid.append(uuid.UUID(run_id))
        except ValueError:
            continue
    rows = (
        HeartbeatRun.objects.filter(id__in=valid, process_host=host)
        .exclude(status=RunStatus.RUNNING)
        .values_list("id", "status", "shim_pid", "shim_started_at", "process_boot_id", "log_ref")
    )
    return [
        EndedRun(
            run_id=run_id,
            status=status,
            shim=ProcessIdentity(
                pid=shim_pid, pgid=None, started_at=shim_started, host=host, boot_id=boot_id
            )
            if shim_pid and run_boot == boot_id
            else None,
            log_ref=log_ref,
        )
        for run_id, status, shim_pid, shim_started, run_boot, log_ref in rows
    ]


def run_fenced_record(
    *, run_id: uuid.UUID | str, host: str, status: str, outage_note: str | None = None
) -> None:
    """A supervisor found the run's processes still running on its host after the run had
    ended in the database (cancelled, or failed and retried by another host), and stops them."""
    run = HeartbeatRun.objects.filter(pk=run_id).only("company_id", "agent_id").first()
    if run is None:
        return
    run_event_append(
        run_id=run.id,
        company_id=run.company_id,
        agent_id=run.agent_id,
        event_type=HeartbeatRunEvent.EventType.RECOVERY,
        level=HeartbeatRunEvent.Level.WARN,
        message=(
            f"The run supervisor on host {host} found this run's agent still running after the "
            f"run had ended ({status}) and stops it: one issue never has two agents"
            + (f" ({outage_note})" if outage_note else "")
        ),
        payload={"host": host, "status": status},
    )


def runs_relinquish(*, run_ids: Sequence[uuid.UUID], host: str, boot_id: str) -> int:
    """Give up running runs of this host whose shim died without a report, whoever owned them:
    their lease ends now, so the reaper judges them (lost and retried once, or detached while
    the agent still lives)."""
    if not run_ids:
        return 0
    return HeartbeatRun.objects.filter(
        id__in=list(run_ids),
        status=RunStatus.RUNNING,
        process_host=host,
        process_boot_id=boot_id,
    ).update(lease_expires_at=timezone.now())
