"""What the reaper reads: which running runs are orphaned, and the facts it judges them by."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db.models import Q, QuerySet

from heartbeat import process_control
from heartbeat.models import (
    HeartbeatRun,
    RunErrorCode,
    RunStatus,
    RunSupervisor,
)
from heartbeat.process_control import Liveness, ProcessIdentity
from heartbeat.services.sweeps import sql_execute
from issues.models import Issue

_CLOSED_ISSUE_STATUSES = (Issue.Status.DONE, Issue.Status.CANCELLED)
_CANDIDATE_FIELDS = (
    "id",
    "company_id",
    "agent_id",
    "agent__name",
    "agent__status",
    "agent__runtime_config",
    "wakeup_request_id",
    "status",
    "context_snapshot",
    "process_pid",
    "process_group_id",
    "process_started_at",
    "process_host",
    "process_boot_id",
    "owner_host",
    "error_code",
    "detached_at",
    "updated_at",
    "created_at",
    "process_loss_retry_count",
    "session_id_before",
    "session_id_after",
    "usage_json",
    "shim_pid",
    "shim_started_at",
    "log_ref",
    "owner_pid",
    "lease_renewed_at",
)


def runs_with_dead_local_owner(*, now: datetime, host: str, boot_id: str) -> list[uuid.UUID]:
    """Running runs whose lease is still valid but whose owner on this host and boot is gone.

    Bounded by this host's concurrent runs (the partial index run_running_owner_idx).
    """
    owned = HeartbeatRun.objects.filter(
        status=RunStatus.RUNNING, owner_host=host, owner_boot_id=boot_id, lease_expires_at__gte=now
    ).values_list("id", "owner_pid", "owner_started_at")
    alive: dict[tuple[int, datetime | None], bool] = {}
    dead = []
    for run_id, pid, started_at in owned:
        if pid is None or pid <= 0:
            dead.append(run_id)
            continue
        key = (pid, started_at)
        if key not in alive:
            identity = ProcessIdentity(
                pid=pid, pgid=None, started_at=started_at, host=host, boot_id=boot_id
            )
            alive[key] = process_control.probe(identity) is Liveness.ALIVE
        if not alive[key]:
            dead.append(run_id)
    return dead


def runs_reap_candidates(
    *,
    now: datetime,
    host: str,
    boot_id: str,
    stale_threshold_sec: float,
    dead_owner_run_ids: Sequence[uuid.UUID] = (),
) -> QuerySet[HeartbeatRun]:
    """Running runs whose owner is gone, oldest first; queued runs are never candidates."""
    owner_gone = (
        Q(lease_expires_at__isnull=True)
        | Q(lease_expires_at__lt=now)
        | Q(owner_host__isnull=True)
        | (Q(owner_host=host) & ~Q(owner_boot_id=boot_id))
        # Detached is orphaned by definition: its watch goes on whoever still holds it.
        | Q(error_code=RunErrorCode.PROCESS_DETACHED)
    )
    if dead_owner_run_ids:
        owner_gone |= Q(id__in=list(dead_owner_run_ids))
    runs = HeartbeatRun.objects.filter(owner_gone, status=RunStatus.RUNNING)
    if stale_threshold_sec > 0:
        # Stale counts from the last lease renewal (a long run is not stale for being long);
        # a detached run is already known orphaned, its watch must not wait for staleness.
        cutoff = now - timedelta(seconds=stale_threshold_sec)
        runs = runs.filter(
            Q(lease_renewed_at__lte=cutoff)
            | Q(lease_renewed_at__isnull=True, updated_at__lte=cutoff)
            | Q(error_code=RunErrorCode.PROCESS_DETACHED)
        )
    return runs.select_related("agent").only(*_CANDIDATE_FIELDS).order_by("created_at", "id")


def supervisor_alive_on_host(*, host: str, boot_id: str) -> bool:
    """Whether the run supervisor registered for this host is running now."""
    supervisor = (
        RunSupervisor.objects.filter(host=host, boot_id=boot_id, stopped_at__isnull=True)
        .values_list("pid", "process_started_at")
        .first()
    )
    if supervisor is None:
        return False
    pid, started_at = supervisor
    identity = ProcessIdentity(
        pid=pid, pgid=None, started_at=started_at, host=host, boot_id=boot_id
    )
    return process_control.probe(identity) is Liveness.ALIVE


def run_issue_id_normalised(run: HeartbeatRun) -> str | None:
    """The run's issue id in canonical form; None without one or for a malformed one."""
    try:
        return str(uuid.UUID(str(run.issue_id))) if run.issue_id else None
    except ValueError:
        return None


def issues_closed(issue_ids: set[str]) -> set[str]:
    """Those of these issues that are done or cancelled."""
    if not issue_ids:
        return set()
    closed = Issue.objects.filter(id__in=issue_ids, status__in=_CLOSED_ISSUE_STATUSES)
    return {str(issue_id) for issue_id in closed.values_list("id", flat=True)}


def issues_held_elsewhere(issue_ids: set[str]) -> set[str]:
    """Lock the batch's issues without waiting; return those another transaction holds.

    The engine locks issue before run (a wake joining a run holds the issue, then updates the
    run); the reaper already holds the runs, so waiting here for an issue would deadlock. A run
    whose issue is busy is left for the next sweep. One statement: each existing issue, and
    whether this transaction got its lock.
    """
    if not issue_ids:
        return set()
    rows = sql_execute(
        f"""
        SELECT issue.id, locked.id IS NULL FROM {Issue._meta.db_table} AS issue
        LEFT JOIN LATERAL (
            SELECT id FROM {Issue._meta.db_table} WHERE id = issue.id FOR UPDATE SKIP LOCKED
        ) AS locked ON TRUE
        WHERE issue.id = ANY(%(ids)s::uuid[])
        """,
        {"ids": sorted(issue_ids)},
    )
    return {str(issue_id) for issue_id, held_elsewhere in rows if held_elsewhere}


def run_detached_since(run: HeartbeatRun) -> datetime | None:
    """When the run was marked detached; None when it is not."""
    if run.error_code != RunErrorCode.PROCESS_DETACHED:
        return None
    # Rows marked by the reference (or by hand) carry no detached_at: count from the mark.
    return run.detached_at or run.updated_at
