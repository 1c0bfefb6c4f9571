"""Lifecycle primitives shared by the run engine and recovery: queue a run, hand it to the
workers, release an issue and promote its deferred wake, settle the agent after a run.

Lock order (to stay free of deadlocks between workers, wakes and sweeps): agent row, then issue
row, then run rows (run_scope_lock takes the first two for a run). The agent row is locked FOR
NO KEY UPDATE, which does not conflict with the KEY SHARE lock that inserting a run or a wakeup
takes on its agent.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.db.models.fields.json import KT
from django.utils import timezone
from django_q.tasks import async_task

from heartbeat.conf import heartbeat_conf
from heartbeat.models import (
    Agent,
    AgentRuntimeState,
    AgentStatus,
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunStatus,
    WakeupStatus,
)
from heartbeat.services.events import run_event_append
from heartbeat.services.policy import (
    MAX_CONCURRENT_RUNS_LIMIT,
    heartbeat_policy_max_concurrent_runs,
)
from issues.models import Issue
from issues.services.run_engine import (
    issue_execution_lock_end,
    issue_execution_lock_take,
    issue_reopen_for_comment_wake,
)
from paperclip.models import Company
from paperclip.telemetry import telemetry_client

logger = logging.getLogger(__name__)

EXECUTE_RUN_TASK = "heartbeat.tasks.execute_run"
FIRST_HEARTBEAT_EVENT = "agent.first_heartbeat"


def agent_name_key(name: str) -> str:
    """The issue lock's agent key (reference 2.3): the trimmed, lower-cased agent name."""
    return name.strip().lower()


def runs_of_issue(issue_id: uuid.UUID | str):
    """Runs whose context names this issue, through the expression index on issueId."""
    return HeartbeatRun.objects.alias(issue_key=KT("context_snapshot__issueId")).filter(
        issue_key=str(issue_id)
    )


def wakeups_of_issue(issue_id: uuid.UUID | str):
    """Wakes whose payload names this issue, through the expression index on issueId."""
    return AgentWakeupRequest.objects.alias(issue_key=KT("payload__issueId")).filter(
        issue_key=str(issue_id)
    )


def run_scope_lock(*, run: HeartbeatRun) -> None:
    """Lock the run's agent row, then its issue row, in the caller's transaction.

    Taken before changing a run that a wake may be joining: a wake holds the issue (or the
    agent) and then updates the run, so changing the run first and locking the issue after
    would deadlock with it.
    """
    Agent.objects.select_for_update(no_key=True).filter(pk=run.agent_id).values_list("pk").first()
    issue_id = run.issue_id
    if issue_id:
        try:
            Issue.objects.select_for_update().filter(pk=issue_id).values_list("pk").first()
        except (ValueError, ValidationError):
            # Not an issue id at all: there is no issue row to order against.
            return


def dispatch_lease_expiry(now: datetime) -> datetime:
    """Until when a run handed to django-q2 now is not handed out again."""
    return now + timedelta(seconds=heartbeat_conf().dispatch_lease_sec)


def queued_parked_filter(now: datetime) -> Q:
    """Queued runs with no dispatch out for them: never handed out, parked by a worker that
    could not claim them (agent at its cap or paused), or whose dispatch lease ran out."""
    return Q(status=RunStatus.QUEUED) & (
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)
    )


def run_dispatch_on_commit(run_id: uuid.UUID | str) -> None:
    """Hand the run to a django-q2 worker once the transaction that queued it commits.

    The caller stamps the run's dispatch lease (lease_expires_at) in that same transaction.
    """
    transaction.on_commit(partial(_run_dispatch, str(run_id)))


def _run_dispatch(run_id: str) -> None:
    try:
        # save=False: the run's outcome lives in the run row, and django-q2 prunes saved
        # successes by loading all of them on every save (save_limit), which would cost every
        # run O(save_limit). Failed tasks are still saved.
        async_task(EXECUTE_RUN_TASK, run_id, task_name=f"run-{run_id}", save=False)
    except Exception:
        # The run stays queued and parked; the next finish of its agent or resume_queued_runs
        # hands it out again.
        logger.exception("dispatch of run %s failed; it is parked for resume", run_id)
        HeartbeatRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
            lease_expires_at=None
        )


def run_retry_wake_payload(run: HeartbeatRun) -> dict:
    """The payload of the wake that queues a retry of run: its issue as the run's context names
    it (the value as is), and the retried run."""
    return {
        key: value
        for key, value in (("issueId", run.issue_id), ("retryOfRunId", str(run.id)))
        if value
    }


def run_retry_context(
    context: Mapping[str, Any] | None,
    *,
    retry_of_run_id: uuid.UUID | str,
    retry_reason: str,
    **markers: Any,
) -> dict:
    """A retry's context: a copy of the retried run's with the retry markers set, and any other
    key given (a wakeReason, forceFreshSession).

    retryReason is overwritten as in the reference, but earlier reasons are kept in
    retryReasons so the reconciler still recognises a retried recovery (reference 9.5: the
    reaper and the reconciler alternated 433 times because this was lost).
    """
    copied = dict(context or {})
    reasons = list(copied.get("retryReasons") or [])
    previous = copied.get("retryReason")
    if isinstance(previous, str) and previous and previous not in reasons:
        reasons.append(previous)
    reasons.append(retry_reason)
    copied.update(
        retryOfRunId=str(retry_of_run_id),
        retryReason=retry_reason,
        retryReasons=reasons,
        **markers,
    )
    return copied


def run_create_queued(
    *,
    agent: Agent,
    wakeup: AgentWakeupRequest,
    context: dict,
    invocation_source: str,
    trigger_detail: str | None,
    retry_of_run: HeartbeatRun | None = None,
    process_loss_retry_count: int = 0,
) -> HeartbeatRun:
    """Insert a queued run for the wake, link the wake to it, and dispatch it after commit.

    Raises IntegrityError (from a savepoint, so the caller's transaction survives) when the
    database refuses a second active run for the same issue (run_one_active_per_issue) or a
    second retry of the same run (run_one_retry_per_run).
    """
    now = timezone.now()
    with transaction.atomic():
        run = HeartbeatRun.objects.create(
            company_id=agent.company_id,
            agent=agent,
            invocation_source=invocation_source,
            trigger_detail=trigger_detail,
            status=RunStatus.QUEUED,
            wakeup_request=wakeup,
            context_snapshot=context,
            retry_of_run=retry_of_run,
            process_loss_retry_count=process_loss_retry_count,
            lease_expires_at=dispatch_lease_expiry(now),
        )
        AgentWakeupRequest.objects.filter(pk=wakeup.pk).update(run=run, updated_at=now)
        wakeup.run = run
        run_event_append(
            run_id=run.id,
            company_id=run.company_id,
            agent_id=agent.id,
            event_type=HeartbeatRunEvent.EventType.LIFECYCLE,
            message="run queued",
            payload={
                "wakeupRequestId": str(wakeup.id),
                "source": invocation_source,
                "reason": wakeup.reason,
                **({"retryOfRunId": str(retry_of_run.id)} if retry_of_run else {}),
            },
        )
    run_dispatch_on_commit(run.id)
    return run


def agent_start_next_queued(*, agent_id: uuid.UUID | str) -> list[uuid.UUID]:
    """Dispatch the agent's oldest parked queued runs, as many as it has free slots.

    A slot is held by each running run and by each queued run whose dispatch is still out, so
    a queued run already waiting for a worker is not handed out twice. Only an optimisation of
    who gets a worker first: the claim re-checks the cap under the agent's row lock, so a stale
    count here can never over-run the agent. Call it after the commit that freed a slot.
    """
    now = timezone.now()
    parked_runs = HeartbeatRun.objects.filter(queued_parked_filter(now), agent_id=agent_id)
    # Most finishes leave nothing parked: one query answers that, without a transaction.
    if not parked_runs.exists():
        return []
    with transaction.atomic():
        parked = list(
            HeartbeatRun.objects.select_for_update(skip_locked=True)
            .filter(queued_parked_filter(now), agent_id=agent_id)
            .order_by("created_at", "id")
            .values_list("id", flat=True)[:MAX_CONCURRENT_RUNS_LIMIT]
        )
        if not parked:
            return []
        agent = (
            Agent.objects.filter(pk=agent_id)
            .select_related("company")
            .only("status", "runtime_config", "company__status")
            .first()
        )
        # Paused or unapproved agents, and agents of a paused company, keep their queued runs
        # queued (reference 2.3 step 1).
        if agent is None or not agent.is_invokable or agent.company.status == Company.Status.PAUSED:
            return []
        cap = heartbeat_policy_max_concurrent_runs(agent.runtime_config)
        busy = HeartbeatRun.objects.filter(
            Q(status=RunStatus.RUNNING) | Q(status=RunStatus.QUEUED, lease_expires_at__gt=now),
            agent_id=agent_id,
        ).count()
        run_ids = parked[: max(cap - busy, 0)]
        HeartbeatRun.objects.filter(pk__in=run_ids).update(
            lease_expires_at=dispatch_lease_expiry(now)
        )
        for run_id in run_ids:
            run_dispatch_on_commit(run_id)
    return run_ids


def issue_release_and_promote(*, run: HeartbeatRun, now: datetime) -> HeartbeatRun | None:
    """Release the issue's execution lock held by this run and promote the oldest deferred wake.

    Reference 2.6. Runs in the caller's transaction (or its own). The run must already be
    terminal. checkout_run is left alone: the reference's tests require it to keep pointing at
    the finished run. Returns the promoted run, if any. No savepoint of its own: an error
    aborts the caller's transaction.
    """
    with transaction.atomic(savepoint=False):
        locked = Issue.objects.select_for_update()
        issue_id = run.issue_id
        if issue_id:
            issue = locked.filter(pk=issue_id, company_id=run.company_id).first()
        else:
            issue = locked.filter(execution_run_id=run.id).first()
        if issue is None:
            return None
        if issue.execution_run_id is not None and issue.execution_run_id != run.id:
            return None
        if issue.execution_run_id == run.id:
            issue_execution_lock_end(issue_id=issue.pk, run_id=run.id, now=now)
        return _promote_deferred_wake(issue=issue, now=now)


def _promote_deferred_wake(*, issue: Issue, now: datetime) -> HeartbeatRun | None:
    # Another active run still holds the issue (one active run per issue, enforced by the DB).
    if runs_of_issue(issue.id).active().exists():
        return None
    deferred = (
        wakeups_of_issue(issue.id)
        .filter(status=WakeupStatus.DEFERRED_ISSUE_EXECUTION, company_id=issue.company_id)
        .select_related("agent")
        .select_for_update(of=("self",))
        .order_by("requested_at", "id")
    )
    for wake in deferred:
        if not wake.agent.is_invokable:
            AgentWakeupRequest.objects.filter(pk=wake.pk).update(
                status=WakeupStatus.FAILED,
                finished_at=now,
                error="Deferred wake could not be promoted: agent is not invokable",
                updated_at=now,
            )
            continue
        payload = wake.payload or {}
        context = dict(payload.get("_paperclipWakeContext") or {})
        context.setdefault("issueId", str(issue.id))
        if _carries_comment(context, payload):
            issue_reopen_for_comment_wake(issue=issue, agent_id=wake.agent_id, now=now)
        try:
            promoted = run_create_queued(
                agent=wake.agent,
                wakeup=wake,
                context=context,
                invocation_source=wake.source,
                trigger_detail=wake.trigger_detail,
            )
        except IntegrityError:
            # A concurrent wake queued a run for the issue first; this wake stays deferred.
            logger.info("promotion of wake %s lost to another active run", wake.id)
            return None
        AgentWakeupRequest.objects.filter(pk=wake.pk).update(
            status=WakeupStatus.QUEUED,
            reason="issue_execution_promoted",
            run=promoted,
            claimed_at=None,
            finished_at=None,
            error=None,
            updated_at=now,
        )
        issue_execution_lock_take(
            issue_id=issue.pk,
            company_id=issue.company_id,
            run_id=promoted.id,
            agent_name_key=agent_name_key(wake.agent.name),
            now=now,
        )
        return promoted
    return None


def _carries_comment(context: dict, payload: dict) -> bool:
    return bool(
        context.get("wakeCommentIds")
        or context.get("commentId")
        or payload.get("commentId")
        or payload.get("wakeCommentIds")
    )


def agent_finalize_status(*, agent_id: uuid.UUID | str, outcome: str, now: datetime) -> None:
    """Settle the agent after one of its runs ended (reference 2.5).

    The agent is `running` while it has another running run, else `idle` after success or
    cancel and `error` otherwise. Paused and terminated agents are left as they are. The first
    finished run sends `agent.first_heartbeat` after commit; the compare-and-set on
    `last_heartbeat_at IS NULL` makes that exactly once however many finalizers race. No
    savepoint of its own: an error aborts the caller's transaction.
    """
    with transaction.atomic(savepoint=False):
        # The row lock orders us after a concurrent claim, so a run it just started is seen.
        agent = (
            Agent.objects.select_for_update(no_key=True)
            .filter(pk=agent_id)
            .only("id", "status", "role", "last_heartbeat_at")
            .first()
        )
        if agent is None or agent.status in (AgentStatus.PAUSED, AgentStatus.TERMINATED):
            return
        if HeartbeatRun.objects.filter(agent_id=agent_id, status=RunStatus.RUNNING).exists():
            status = AgentStatus.RUNNING
        elif outcome in (RunStatus.SUCCEEDED, RunStatus.CANCELLED):
            status = AgentStatus.IDLE
        else:
            status = AgentStatus.ERROR
        changes = {"status": status, "last_heartbeat_at": now, "updated_at": now}
        if agent.last_heartbeat_at is not None:
            Agent.objects.filter(pk=agent_id).update(**changes)
            return
        first = Agent.objects.filter(pk=agent_id, last_heartbeat_at__isnull=True).update(**changes)
        if first:
            transaction.on_commit(
                partial(_track_first_heartbeat, agent_role=agent.role, agent_id=str(agent.id))
            )
        else:
            Agent.objects.filter(pk=agent_id).update(**changes)


def _track_first_heartbeat(*, agent_role: str, agent_id: str) -> None:
    try:
        telemetry_client().track(
            FIRST_HEARTBEAT_EVENT, {"agent_role": agent_role, "agent_id": agent_id}
        )
    except Exception:
        # Telemetry is best effort; it must never fail a run that already finished.
        logger.exception("telemetry %s failed for agent %s", FIRST_HEARTBEAT_EVENT, agent_id)


_RUNTIME_STATE_UPSERT = f"""
INSERT INTO {AgentRuntimeState._meta.db_table} AS state (
    agent_id, company_id, adapter_type, state_json, last_run_id, last_run_status, last_error,
    session_id, total_input_tokens, total_output_tokens, total_cached_input_tokens,
    total_cost_cents, created_at, updated_at)
SELECT agent.id, agent.company_id, agent.adapter_type, '{{}}'::jsonb, %(run_id)s, %(status)s,
    %(error)s, %(session_id)s, %(input)s, %(output)s, %(cached)s, %(cost)s, %(now)s, %(now)s
FROM {Agent._meta.db_table} AS agent WHERE agent.id = %(agent_id)s
ON CONFLICT (agent_id) DO UPDATE SET
    adapter_type = EXCLUDED.adapter_type,
    last_run_id = EXCLUDED.last_run_id,
    last_run_status = EXCLUDED.last_run_status,
    last_error = EXCLUDED.last_error,
    session_id = COALESCE(EXCLUDED.session_id, state.session_id),
    total_input_tokens = state.total_input_tokens + EXCLUDED.total_input_tokens,
    total_output_tokens = state.total_output_tokens + EXCLUDED.total_output_tokens,
    total_cached_input_tokens =
        state.total_cached_input_tokens + EXCLUDED.total_cached_input_tokens,
    total_cost_cents = state.total_cost_cents + EXCLUDED.total_cost_cents,
    updated_at = EXCLUDED.updated_at
"""


def runtime_state_record(*, run: HeartbeatRun, error: str | None = None) -> None:
    """Record the run as the agent's last run in its runtime state (created on first use).

    One upsert, so two runs of one agent finishing together cannot race on the insert.
    """
    usage = run.usage_json if isinstance(run.usage_json, dict) else {}
    with connection.cursor() as cursor:
        cursor.execute(
            _RUNTIME_STATE_UPSERT,
            {
                "agent_id": str(run.agent_id),
                "run_id": str(run.id),
                "status": run.status,
                "error": error,
                "session_id": run.session_id_after,
                "input": _usage_int(usage, "inputTokens"),
                "output": _usage_int(usage, "outputTokens"),
                "cached": _usage_int(usage, "cachedInputTokens"),
                "cost": _usage_int(usage, "costCents"),
                "now": timezone.now(),
            },
        )


def _usage_int(usage: dict, key: str) -> int:
    try:
        return max(int(usage.get(key) or 0), 0)
    except (TypeError, ValueError):
        return 0
