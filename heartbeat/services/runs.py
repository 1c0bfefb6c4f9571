"""Runs seen from outside the worker: cancel, activity reports, reads, and resuming lost
dispatches (reference 4 and 6)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from heartbeat import process_control
from heartbeat.conf import heartbeat_conf
from heartbeat.models import (
    ACTIVE_RUN_STATUSES,
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunErrorCode,
    RunStatus,
    WakeSource,
    WakeupStatus,
)
from heartbeat.services.events import run_event_append
from heartbeat.services.lifecycle import (
    agent_finalize_status,
    agent_start_next_queued,
    dispatch_lease_expiry,
    issue_release_and_promote,
    queued_parked_filter,
    run_dispatch_on_commit,
    run_scope_lock,
)
from heartbeat.services.policy import heartbeat_policy_max_concurrent_runs
from heartbeat.services.wakeups import WakeResult, agent_invoke
from paperclip.models import Company
from paperclip.services import activity_log_record

CANCELLED_BY_CONTROL_PLANE = "Cancelled by control plane"
DETACHED_CLEARED_MESSAGE = "Detached child process reported activity; cleared detached warning"
# get_run returns a summary instead of a result_json larger than this (reference 4.3).
RESULT_JSON_SAFE_BYTES = 64 * 1024
_RESULT_TEXT_CHARS = 500
_RESULT_STREAM_CHARS = 4096


class RunNotFound(Exception):
    """No run has this id (the API answers 404)."""

    def __init__(self, run_id: object) -> None:
        super().__init__("Heartbeat run not found")
        self.run_id = run_id


class RunNotRetryable(Exception):
    """The run is still active, or it succeeded: there is nothing to retry (the API answers 409)."""

    def __init__(self, run_id: object, status: str) -> None:
        # Why, after the run's name: "Run <id> succeeded: there is nothing to retry".
        self.because = (
            "succeeded: there is nothing to retry"
            if status == RunStatus.SUCCEEDED
            else f"is still {status}: cancel it first to retry"
        )
        super().__init__(f"Run {self.because}")
        self.run_id = run_id
        self.details = {"status": status}


def _run_or_none(run_id: uuid.UUID | str) -> HeartbeatRun | None:
    try:
        return HeartbeatRun.objects.filter(pk=run_id).first()
    except (ValueError, ValidationError):
        return None


def cancel_run(
    run_id: uuid.UUID | str,
    *,
    reason: str = CANCELLED_BY_CONTROL_PLANE,
    actor_type: str | None = None,
    actor_id: str = "system",
    via: str | None = None,
) -> HeartbeatRun:
    """Cancel a queued or running run; a finished run is returned unchanged.

    The cancel is written first (compare-and-set): the run supervisor of the run's host, on any
    host, sees it within a poll interval and stops the run through its shim. When the run
    executes on this host, its shim is asked to stop at once, after commit and only if its
    identity still matches. A cancel someone asked for (`actor_type`; `via` names the console
    or client) is in the activity log as `heartbeat.cancelled`, only when it cancelled the run.
    """
    run = _run_or_none(run_id)
    if run is None:
        raise RunNotFound(run_id)
    if run.status not in ACTIVE_RUN_STATUSES:
        return run
    previous_status = run.status
    now = timezone.now()
    with transaction.atomic():
        run_scope_lock(run=run)
        cancelled = HeartbeatRun.objects.filter(pk=run.id, status__in=ACTIVE_RUN_STATUSES).update(
            status=RunStatus.CANCELLED,
            finished_at=now,
            error=reason,
            error_code=RunErrorCode.CANCELLED,
            updated_at=now,
        )
        run.refresh_from_db()
        if not cancelled:
            return run
        AgentWakeupRequest.objects.filter(pk=run.wakeup_request_id).update(
            status=WakeupStatus.CANCELLED, finished_at=now, error=reason, updated_at=now
        )
        run_event_append(
            run_id=run.id,
            company_id=run.company_id,
            agent_id=run.agent_id,
            event_type=HeartbeatRunEvent.EventType.LIFECYCLE,
            message="run cancelled",
            level=HeartbeatRunEvent.Level.WARN,
            payload={"reason": reason},
        )
        if actor_type is not None:
            _cancel_activity_record(
                run=run,
                previous_status=previous_status,
                actor_type=actor_type,
                actor_id=actor_id,
                via=via,
            )
        issue_release_and_promote(run=run, now=now)
        agent_finalize_status(agent_id=run.agent_id, outcome=RunStatus.CANCELLED, now=now)
        transaction.on_commit(partial(agent_start_next_queued, agent_id=run.agent_id))
    _cancelled_run_stop(run)
    return run


def _cancel_activity_record(
    *, run: HeartbeatRun, previous_status: str, actor_type: str, actor_id: str, via: str | None
) -> None:
    details = {"previousStatus": previous_status, "status": run.status}
    if via:
        details["via"] = via
    activity_log_record(
        company_id=run.company_id,
        action="heartbeat.cancelled",
        entity_type="heartbeat_run",
        entity_id=run.id,
        actor_type=actor_type,
        actor_id=actor_id,
        agent_id=run.agent_id,
        run_id=run.id,
        details=details,
    )


def _cancelled_run_stop(run: HeartbeatRun) -> None:
    """Stop the process of a run just cancelled, when it executes on this host."""
    shim = run_shim_identity(run)
    if shim is not None:
        process_control.shim_stop(shim)
        return
    # A run started before runs had shims: its worker's tree is terminated directly.
    identity = run_process_identity(run)
    if identity is not None:
        process_control.terminate_tree(
            identity, marker=str(run.id), grace=heartbeat_conf().terminate_grace_sec
        )


def run_retry_now(
    *, run_id: uuid.UUID | str, actor_type: str, actor_id: str, via: str | None = None
) -> WakeResult:
    """A person's retry of a run that failed, timed out or was cancelled: its agent is woken
    again on the run's task (an on-demand wake, in the activity log as `heartbeat.invoked`).

    Raises RunNotFound, RunNotRetryable, and what wake_agent raises (a paused agent cannot be
    woken).
    """
    run = _run_or_none(run_id)
    if run is None:
        raise RunNotFound(run_id)
    if not run.is_terminal or run.status == RunStatus.SUCCEEDED:
        raise RunNotRetryable(run.id, run.status)
    payload = {"retryOfRunId": str(run.id)}
    if run.issue_id:
        payload["issueId"] = str(run.issue_id)
    return agent_invoke(
        agent_id=run.agent_id,
        actor_type=actor_type,
        actor_id=actor_id,
        source=WakeSource.ON_DEMAND,
        trigger_detail="manual",
        reason="retry_now",
        payload=payload,
        # The run's own context carries the task; the retry reason is a person's, so the
        # reconciler's once-only recovery budget is not spent by it.
        context={
            **(run.context_snapshot or {}),
            "retryOfRunId": str(run.id),
            "retryReason": "manual_retry",
            "wakeReason": "retry_now",
        },
        via=via,
    )


def run_shim_identity(run: HeartbeatRun) -> process_control.ProcessIdentity | None:
    """The recorded identity of the run's shim, or None when the run has none."""
    if not run.shim_pid or not run.process_host or not run.process_boot_id:
        return None
    return process_control.ProcessIdentity(
        pid=run.shim_pid,
        pgid=None,
        started_at=run.shim_started_at,
        host=run.process_host,
        boot_id=run.process_boot_id,
    )


def run_process_identity(
    run: HeartbeatRun, *, host: str | None = None, boot_id: str | None = None
) -> process_control.ProcessIdentity | None:
    """The recorded identity of the run's agent process, or None when no process was recorded.

    The one definition the reaper, the console and cancel share. A row without a host or boot
    id (seeded by hand or by an old version) is taken as this host's in this boot (host and
    boot_id, this process's own when not given): its recorded start time, when there is one,
    still tells a recycled pid apart, and without one only the run marker lets terminate_tree
    signal it.
    """
    if run.process_pid is None or run.process_pid <= 0:
        return None
    return process_control.ProcessIdentity(
        pid=run.process_pid,
        pgid=run.process_group_id,
        started_at=run.process_started_at,
        host=run.process_host or run.owner_host or host or process_control.current_host(),
        boot_id=run.process_boot_id or boot_id or process_control.current_boot_id(),
    )


def report_run_activity(run_id: uuid.UUID | str) -> HeartbeatRun | None:
    """A running run's agent called in: note the activity and clear a detached warning.

    Returns the run when a `process_detached` warning was cleared, else None (reference 4.1).
    Every write an agent makes for its run lands here, so the usual case (a run nobody
    detached) is one statement; only clearing a warning takes a transaction with its event.
    """
    try:
        run_uuid = uuid.UUID(str(run_id))
    except ValueError:
        return None
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_NOTE_ACTIVITY_SQL, [now, run_uuid])
        row = cursor.fetchone()
    if row is None or not row[0]:
        return None
    with transaction.atomic():
        cleared = HeartbeatRun.objects.filter(
            pk=run_uuid, status=RunStatus.RUNNING, error_code=RunErrorCode.PROCESS_DETACHED
        ).update(error=None, error_code=None, detached_at=None, updated_at=now)
        if not cleared:
            return None
        run = HeartbeatRun.objects.get(pk=run_uuid)
        run_event_append(
            run_id=run.id,
            company_id=run.company_id,
            agent_id=run.agent_id,
            event_type=HeartbeatRunEvent.EventType.LIFECYCLE,
            message=DETACHED_CLEARED_MESSAGE,
        )
    run.refresh_from_db()
    return run


_NOTE_ACTIVITY_SQL = (
    f"UPDATE {HeartbeatRun._meta.db_table} SET last_activity_at = %s "
    f"WHERE id = %s AND status = '{RunStatus.RUNNING}' "
    f"RETURNING error_code IS NOT DISTINCT FROM '{RunErrorCode.PROCESS_DETACHED}'"
)


def get_run(
    run_id: uuid.UUID | str, *, unsafe_full_result_json: bool = False
) -> HeartbeatRun | None:
    """The run, or None; an oversized result_json is replaced by a summary (reference 4.3)."""
    run = _run_or_none(run_id)
    if run is None or unsafe_full_result_json or run.result_json is None:
        return run
    size = len(json.dumps(run.result_json).encode())
    if size > RESULT_JSON_SAFE_BYTES:
        run.result_json = result_json_summary(run.result_json, original_size=size)
    return run


def result_json_summary(result: Any, *, original_size: int) -> dict:
    source = result if isinstance(result, dict) else {}
    summary: dict[str, Any] = {}
    for key in ("summary", "result", "message", "error"):
        if isinstance(source.get(key), str):
            summary[key] = source[key][:_RESULT_TEXT_CHARS]
    for key in ("stdout", "stderr"):
        if isinstance(source.get(key), str):
            summary[key] = source[key][:_RESULT_STREAM_CHARS]
            summary[f"{key}Truncated"] = len(source[key]) > _RESULT_STREAM_CHARS
    for key in ("costUsd", "cost_usd", "total_cost_usd"):
        if key in source:
            summary[key] = source[key]
    summary.update(
        truncated=True, truncationReason="oversized_result_json", originalSizeBytes=original_size
    )
    return summary


@dataclass(frozen=True)
class ResumeResult:
    dispatched: int
    run_ids: list[str]


def resume_queued_runs(
    *, now: datetime | None = None, limit: int | None = None, min_age_sec: float | None = None
) -> ResumeResult:
    """Hand out again queued runs that have no dispatch out for them.

    Covers a dispatch lost between commit and broker or in a dead cluster (its dispatch lease
    ran out), and runs parked while their agent was paused or full or their host was full.
    Runs younger than min_age_sec (default resume_queued_after_sec) are left to their first
    dispatch. Rows are taken
    with SKIP LOCKED and their dispatch lease stamped, so concurrent sweeps on several hosts
    hand each run out once; each agent gets at most its free slots, and at most `limit` runs
    go out in all (default: a sweep batch).
    """
    now = now or timezone.now()
    conf = heartbeat_conf()
    if min_age_sec is None:
        min_age_sec = conf.resume_queued_after_sec
    created_before = now - timedelta(seconds=min_age_sec)
    chosen: list[str] = []
    with transaction.atomic():
        parked = list(
            HeartbeatRun.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("agent", "agent__company")
            .filter(queued_parked_filter(now), created_at__lt=created_before)
            .order_by("created_at", "id")[: conf.sweep_batch_size]
        )
        limit = conf.sweep_batch_size if limit is None else limit
        free_slots: dict[uuid.UUID, int] = {}
        for run in parked:
            if len(chosen) >= limit:
                break
            agent = run.agent
            if agent.id not in free_slots:
                # Running runs and queued runs with a dispatch out hold a slot each.
                busy = HeartbeatRun.objects.filter(
                    Q(status=RunStatus.RUNNING)
                    | Q(status=RunStatus.QUEUED, lease_expires_at__gt=now),
                    agent_id=agent.id,
                ).count()
                cap = heartbeat_policy_max_concurrent_runs(agent.runtime_config)
                startable = agent.is_invokable and agent.company.status != Company.Status.PAUSED
                free_slots[agent.id] = cap - busy if startable else 0
            if free_slots[agent.id] <= 0:
                continue
            free_slots[agent.id] -= 1
            chosen.append(str(run.id))
        if chosen:
            HeartbeatRun.objects.filter(pk__in=chosen).update(
                lease_expires_at=dispatch_lease_expiry(now)
            )
            for run_id in chosen:
                run_dispatch_on_commit(run_id)
    return ResumeResult(dispatched=len(chosen), run_ids=chosen)


def host_start_parked_runs(*, host: str, now: datetime | None = None) -> ResumeResult:
    """After a run of this host ended: if the host was full, hand out runs parked meanwhile.

    Only when the host is one run below its cap (it was full until now), so the usual finish
    costs one count; other parked runs wait for resume_queued_runs.
    """
    cap = heartbeat_conf().host_max_concurrent_runs
    running = HeartbeatRun.objects.running_on_host(host).count()
    if running != cap - 1:
        return ResumeResult(dispatched=0, run_ids=[])
    # Parked runs of any age: a refusal parked them, so no first dispatch is still out.
    return resume_queued_runs(now=now, limit=1, min_age_sec=0)


def company_start_parked_runs(*, company_id: uuid.UUID | str) -> list[uuid.UUID]:
    """A paused company became active again: hand out the runs queued for its agents meanwhile,
    each agent up to its free slots."""
    agent_ids = (
        HeartbeatRun.objects.filter(queued_parked_filter(timezone.now()), company_id=company_id)
        .values_list("agent_id", flat=True)
        .distinct()
    )
    dispatched: list[uuid.UUID] = []
    for agent_id in agent_ids:
        dispatched += agent_start_next_queued(agent_id=agent_id)
    return dispatched
