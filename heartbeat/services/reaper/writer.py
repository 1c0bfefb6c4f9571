"""The reaper's batch writer: each verdict written for a whole batch in a fixed handful of
statements, its per-item values sent as one JSON document (see sweeps.sql_execute).

These are the one implementation of the lost-run rule: the sweep writes a batch of any size,
and its one-by-one fallback the same batch of one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.fields.json import KT
from django.utils import timezone

from heartbeat import process_control
from heartbeat.conf import HeartbeatConf
from heartbeat.models import (
    NOT_INVOKABLE_AGENT_STATUSES,
    Agent,
    AgentRuntimeState,
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunErrorCode,
    RunStatus,
    WakeupStatus,
)
from heartbeat.process_control import ProcessIdentity
from heartbeat.services.lifecycle import (
    agent_finalize_status,
    agent_name_key,
    agent_start_next_queued,
    issue_release_and_promote,
    queued_parked_filter,
    run_retry_wake_payload,
)
from heartbeat.services.reaper.decisions import (
    PROCESS_LOST_WAKE_REASON,
    ReapDecision,
    retry_context,
)
from heartbeat.services.runs import run_process_identity
from heartbeat.services.sweeps import (
    EventRow,
    QueuedRunRow,
    json_rows,
    run_events_insert,
    runs_dispatch_within_slots,
    runs_queue_with_wakes,
    sql_execute,
)
from issues.services.run_engine import (
    ExecutionLockMove,
    issues_execution_lock_move,
    issues_execution_lock_release,
)
from paperclip.services import ActivityRow, activity_log_record_many

logger = logging.getLogger(__name__)


@dataclass
class ReapPlan:
    """A run judged DETACHED or LOST, with its error text (retry ids set once it is queued)."""

    run: HeartbeatRun
    decision: ReapDecision
    message: str
    retry_id: uuid.UUID | None = None
    retry_wakeup_id: uuid.UUID | None = None


def runs_mark_detached(
    planned: list[ReapPlan], *, now: datetime, host: str, conf: HeartbeatConf
) -> list[uuid.UUID]:
    """Mark these runs process_detached (a compare-and-set from running and not yet detached),
    with an event and an activity row each; returns the runs marked."""
    # Other hosts leave the run alone while this host watches it: its lease covers the grace.
    lease = now + timedelta(seconds=conf.detached_grace_sec + conf.lease_expiry_sec)
    won = dict(
        sql_execute(
            f"""
            UPDATE {HeartbeatRun._meta.db_table} AS r SET error_code = %(code)s,
                error = v.error, detached_at = %(now)s, lease_expires_at = %(lease)s,
                updated_at = %(now)s, event_seq = r.event_seq + 1
            FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(id uuid, error text)
            WHERE r.id = v.id AND r.status = 'running'
                AND r.error_code IS DISTINCT FROM %(code)s
            RETURNING r.id, r.event_seq
            """,
            {
                "code": RunErrorCode.PROCESS_DETACHED,
                "now": now,
                "lease": lease,
                "rows": json_rows({"id": p.run.id, "error": p.message} for p in planned),
            },
        )
    )
    planned = [p for p in planned if p.run.id in won]
    run_events_insert(
        [
            _event(
                p.run,
                won[p.run.id],
                HeartbeatRunEvent.Level.WARN,
                p.message,
                _process_payload(p.run),
            )
            for p in planned
        ],
        now=now,
    )
    activity_log_record_many(
        rows=[_activity(p, "heartbeat.run_detached", host) for p in planned], now=now
    )
    return [p.run.id for p in planned]


def runs_mark_lost(
    planned: list[ReapPlan], *, now: datetime, host: str, boot_id: str, conf: HeartbeatConf
) -> list[ReapPlan]:
    """The lost-run rule, for a batch of any size (one run included): fail each run and its
    wake (a compare-and-set from running), queue its one retry or release its issue, write its
    event and activity row, and terminate its leftovers after commit; returns the runs failed.
    """
    # The compare-and-set from running fails the run and its wake in one statement; a run
    # that finished meanwhile is left alone.
    won = dict(
        sql_execute(
            f"""
            WITH failed AS (
                UPDATE {HeartbeatRun._meta.db_table} AS r SET status = %(failed)s,
                    error_code = %(code)s, error = v.error, finished_at = %(now)s,
                    updated_at = %(now)s, event_seq = r.event_seq + 1
                FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(id uuid, error text)
                WHERE r.id = v.id AND r.status = 'running'
                RETURNING r.id, r.event_seq, r.wakeup_request_id, v.error
            ), wakes AS (
                UPDATE {AgentWakeupRequest._meta.db_table} AS w SET status = %(failed)s,
                    finished_at = %(now)s, error = failed.error, updated_at = %(now)s
                FROM failed WHERE w.id = failed.wakeup_request_id
            )
            SELECT id, event_seq FROM failed
            """,
            {
                "failed": WakeupStatus.FAILED,
                "code": RunErrorCode.PROCESS_LOST,
                "now": now,
                "rows": json_rows({"id": p.run.id, "error": p.message} for p in planned),
            },
        )
    )
    planned = [p for p in planned if p.run.id in won]
    if not planned:
        return []
    for p in planned:
        p.run.status = RunStatus.FAILED
    retried = [p for p in planned if p.decision.retry]
    released = [p for p in planned if not p.decision.retry]
    events = _retries_insert(retried, now=now) if retried else []
    if released:
        _issues_release(released, now=now)
    events.extend(_lost_event(p, won[p.run.id]) for p in planned)
    run_events_insert(events, now=now)
    activity_log_record_many(
        rows=[_activity(p, "heartbeat.run_process_lost", host) for p in planned],
        now=now,
    )
    _terminate_after_commit(
        [p for p in planned if p.decision.terminate], host=host, boot_id=boot_id, conf=conf
    )
    return planned


def _retries_insert(planned: list[ReapPlan], *, now: datetime) -> list[EventRow]:
    """Queue one retry per run, in this transaction; run_one_retry_per_run backs it up.

    The wake and the run point at each other; the foreign keys are checked at commit.
    """
    for p in planned:
        p.retry_id, p.retry_wakeup_id = uuid.uuid4(), uuid.uuid4()
    # Paused agents' retries stay parked (queued, reference 3.2).
    leases = runs_dispatch_within_slots(
        [(p.retry_id, p.run.agent_id) for p in planned],
        runtime_configs={
            p.run.agent_id: p.run.agent.runtime_config for p in planned if p.run.agent.is_invokable
        },
        now=now,
    )
    runs_queue_with_wakes(
        [
            QueuedRunRow(
                run_id=p.retry_id,
                wakeup_id=p.retry_wakeup_id,
                company_id=p.run.company_id,
                agent_id=p.run.agent_id,
                wake_reason=PROCESS_LOST_WAKE_REASON,
                wake_payload=run_retry_wake_payload(p.run),
                context=retry_context(p.run.context_snapshot, lost_run_id=p.run.id),
                retry_of_run_id=p.run.id,
                process_loss_retry_count=p.run.process_loss_retry_count + 1,
                lease=lease,
                session_id_before=p.run.session_id_before,
            )
            for p, lease in zip(planned, leases, strict=True)
        ],
        now=now,
    )
    # The issue's execution lock moves to the retry only if it still names the lost run.
    issues_execution_lock_move(
        moves=[
            ExecutionLockMove(
                from_run_id=p.run.id,
                to_run_id=p.retry_id,
                agent_name_key=agent_name_key(p.run.agent.name),
            )
            for p in planned
        ],
        now=now,
    )
    return [
        EventRow(
            run_id=p.retry_id,
            company_id=p.run.company_id,
            agent_id=p.run.agent_id,
            seq=1,
            level=HeartbeatRunEvent.Level.WARN,
            message="Queued automatic retry after orphaned child process was confirmed dead",
            payload={"retryOfRunId": str(p.run.id)},
        )
        for p in planned
    ]


def _issues_release(planned: list[ReapPlan], *, now: datetime) -> None:
    """Release the issue locks the lost runs hold; promote deferred wakes where there are."""
    issues_execution_lock_release(run_ids=[p.run.id for p in planned], now=now)
    by_issue = {p.run.issue_id: p.run for p in planned if p.run.issue_id}
    if not by_issue:
        return
    waiting = set(
        _wakeups_of_issues(by_issue)
        .filter(status=WakeupStatus.DEFERRED_ISSUE_EXECUTION)
        .values_list("issue_key", flat=True)
        .distinct()
    )
    for issue_id in sorted(waiting):
        issue_release_and_promote(run=by_issue[issue_id], now=now)


def agents_settle_after_loss(planned: list[ReapPlan], *, now: datetime) -> None:
    """Agent status and runtime state, in one transaction after the batch committed (the
    documented lock order is agent before run, and the batch held runs).

    The batch form of agent_finalize_status and runtime_state_record for runs that failed
    without output or usage: two statements for all agents. An agent's first heartbeat
    goes through agent_finalize_status itself, which owns the first-heartbeat telemetry.
    """
    if not planned:
        return
    last_of_agent: dict[uuid.UUID, ReapPlan] = {}
    for p in planned:
        last_of_agent[p.run.agent_id] = p
    try:
        with transaction.atomic():
            settled = _agents_mark_failed(list(last_of_agent), now=now)
            for agent_id in sorted(set(last_of_agent) - settled):
                agent_finalize_status(agent_id=agent_id, outcome=RunStatus.FAILED, now=now)
            _runtime_states_record_lost(list(last_of_agent.values()), now=now)
    except Exception:
        # The runs are failed and retried already; the agents settle on their next run.
        logger.exception("could not settle agents %s after reaping", list(last_of_agent))
    # Each lost run freed one of its agent's slots: a run parked at the cap may start now
    # instead of waiting for resume_queued_runs. One query finds the few agents that have
    # such a run (paused agents' retries stay parked, reference 3.2).
    # Only agents that could run at lock time are probed (a paused agent's retries stay
    # parked, and its resume starts them); the database checks the status again. The
    # EXISTS is in the select list, evaluated per agent: as a condition the planner made
    # it a join over every queued run, whose number grows with each batch of retries.
    invokable = [agent_id for agent_id, p in last_of_agent.items() if p.run.agent.is_invokable]
    if not invokable:
        return
    parked = HeartbeatRun.objects.filter(
        queued_parked_filter(timezone.now()), agent_id=OuterRef("id")
    )
    agents = (
        Agent.objects.filter(id__in=invokable)
        .exclude(status__in=NOT_INVOKABLE_AGENT_STATUSES)
        .annotate(has_parked=Exists(parked))
        .values_list("id", "has_parked")
    )
    waiting = [agent_id for agent_id, has_parked in agents if has_parked]
    for agent_id in sorted(waiting):
        agent_start_next_queued(agent_id=agent_id)


def _terminate_after_commit(
    planned: list[ReapPlan], *, host: str, boot_id: str, conf: HeartbeatConf
) -> None:
    targets = [
        (run_process_identity(p.run, host=host, boot_id=boot_id), str(p.run.id)) for p in planned
    ]
    if targets:
        # Kills cannot be rolled back: only once the failure is committed.
        transaction.on_commit(partial(_terminate_leftovers, targets, conf.terminate_grace_sec))


def _agents_mark_failed(agent_ids: list[uuid.UUID], *, now: datetime) -> set[uuid.UUID]:
    """agent_finalize_status(outcome=failed) for agents that had a heartbeat before; returns
    the agents settled (paused and terminated ones count as settled: they stay as they are)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH locked AS (
                SELECT id, status FROM {Agent._meta.db_table}
                WHERE id = ANY(%s) AND last_heartbeat_at IS NOT NULL
                ORDER BY id FOR NO KEY UPDATE
            ), changed AS (
                UPDATE {Agent._meta.db_table} AS a SET
                    status = CASE WHEN EXISTS (
                        SELECT 1 FROM {HeartbeatRun._meta.db_table} AS r
                        WHERE r.agent_id = a.id AND r.status = 'running'
                    ) THEN 'running' ELSE 'error' END,
                    last_heartbeat_at = %s, updated_at = %s
                FROM locked
                WHERE a.id = locked.id AND locked.status NOT IN ('paused', 'terminated')
            )
            SELECT id FROM locked
            UNION SELECT id FROM {Agent._meta.db_table}
            WHERE id = ANY(%s) AND status IN ('paused', 'terminated')
            """,
            [agent_ids, now, now, agent_ids],
        )
        return {row[0] for row in cursor.fetchall()}


def _runtime_states_record_lost(planned: list[ReapPlan], *, now: datetime) -> None:
    """runtime_state_record for each agent's last lost run (no usage, no session): one upsert."""
    sql_execute(
        f"""
        INSERT INTO {AgentRuntimeState._meta.db_table} (
            agent_id, company_id, adapter_type, state_json, last_run_id, last_run_status,
            last_error, total_input_tokens, total_output_tokens, total_cached_input_tokens,
            total_cost_cents, created_at, updated_at)
        SELECT a.id, a.company_id, a.adapter_type, '{{}}'::jsonb, v.run_id, %(failed)s, v.error,
            0, 0, 0, 0, %(now)s, %(now)s
        FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(agent_id uuid, run_id uuid, error text)
        JOIN {Agent._meta.db_table} AS a ON a.id = v.agent_id
        ON CONFLICT (agent_id) DO UPDATE SET adapter_type = EXCLUDED.adapter_type,
            last_run_id = EXCLUDED.last_run_id, last_run_status = EXCLUDED.last_run_status,
            last_error = EXCLUDED.last_error, updated_at = EXCLUDED.updated_at
        """,
        {
            "failed": RunStatus.FAILED,
            "now": now,
            "rows": json_rows(
                {"agent_id": p.run.agent_id, "run_id": p.run.id, "error": p.message}
                for p in planned
            ),
        },
    )


def _terminate_leftovers(targets: list[tuple[ProcessIdentity | None, str]], grace: float) -> None:
    for identity, marker in targets:
        try:
            report = process_control.terminate_tree(identity, marker=marker, grace=grace)
            if report.survivors:
                logger.error("run %s: processes %s survived SIGKILL", marker, report.survivors)
        except Exception:
            logger.exception("terminating the leftovers of run %s failed", marker)


def _wakeups_of_issues(issue_ids: Iterable[str]) -> QuerySet[AgentWakeupRequest]:
    """Wakes whose payload names any of these issues, with the name as issue_key."""
    return AgentWakeupRequest.objects.annotate(issue_key=KT("payload__issueId")).filter(
        issue_key__in=list(issue_ids)
    )


def _lost_event(p: ReapPlan, seq: int) -> EventRow:
    payload = _process_payload(p.run)
    message = p.message
    if p.decision.terminate:
        payload["descendantOnlyCleanup"] = True
    if p.retry_id is not None:
        payload["retryRunId"] = str(p.retry_id)
        message = message.removesuffix("; retrying once") + f"; queued retry {p.retry_id}"
    return _event(p.run, seq, HeartbeatRunEvent.Level.ERROR, message, payload)


def _process_payload(run: HeartbeatRun) -> dict:
    payload = {}
    if run.process_pid is not None:
        payload["processPid"] = run.process_pid
    if run.process_group_id is not None:
        payload["processGroupId"] = run.process_group_id
    return payload


def _event(run: HeartbeatRun, seq: int, level: str, message: str, payload: dict) -> EventRow:
    return EventRow(
        run_id=run.id,
        company_id=run.company_id,
        agent_id=run.agent_id,
        seq=seq,
        level=level,
        message=message,
        payload=payload,
    )


def _activity(p: ReapPlan, action: str, host: str) -> ActivityRow:
    details = {
        "verdict": p.decision.verdict.value,
        "error": p.message,
        "reapedBy": host,
        **_process_payload(p.run),
    }
    if p.decision.cause is not None:
        details["cause"] = p.decision.cause.value
        details["errorCode"] = RunErrorCode.PROCESS_LOST.value
    else:
        details["errorCode"] = RunErrorCode.PROCESS_DETACHED.value
    if p.run.issue_id:
        details["issueId"] = p.run.issue_id
    if p.decision.terminate:
        details["descendantsTerminated"] = True
    if p.retry_id:
        details["retryRunId"] = str(p.retry_id)
    return ActivityRow(
        company_id=p.run.company_id,
        actor_id="reaper",
        action=action,
        entity_type="heartbeat_run",
        entity_id=p.run.id,
        agent_id=p.run.agent_id,
        run_id=p.run.id,
        details=details,
    )
