"""Claim: a worker takes a queued run, under the agent's concurrency cap, across hosts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from heartbeat import process_control
from heartbeat.conf import heartbeat_conf
from heartbeat.models import (
    Agent,
    AgentStatus,
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunStatus,
    WakeupStatus,
)
from heartbeat.run_log import LOG_STORE, run_log_ref
from heartbeat.services.events import run_event_append
from heartbeat.services.lifecycle import agent_name_key, run_scope_lock
from heartbeat.services.policy import heartbeat_policy_max_concurrent_runs
from heartbeat.services.sessions import run_session_to_resume
from heartbeat.services.sweeps import AdvisoryLock, advisory_lock_key, sweep_lock_scope
from issues.services.run_engine import issue_checkout_for_run, issue_execution_lock_take
from paperclip.models import Company


class ClaimRefusal(StrEnum):
    NOT_FOUND = "not_found"
    NOT_QUEUED = "not_queued"
    AGENT_NOT_INVOKABLE = "agent_not_invokable"
    COMPANY_PAUSED = "company_paused"
    AT_CAPACITY = "at_capacity"
    HOST_AT_CAPACITY = "host_at_capacity"


@dataclass(frozen=True)
class ClaimResult:
    run: HeartbeatRun | None
    refusal: ClaimRefusal | None = None
    # The run's agent as locked by a successful claim.
    agent: Agent | None = None

    @property
    def claimed(self) -> bool:
        return self.refusal is None


def run_claim(*, run_id: uuid.UUID | str, now: datetime | None = None) -> ClaimResult:
    """Take the run from `queued` to `running` for this process, or say why not.

    The cap check and the compare-and-set share one transaction that holds the agent's row
    lock, so however many workers on however many hosts race, an agent never runs more than
    maxConcurrentRuns at once, and a run is claimed at most once. The claimer records itself as
    the owner with a lease; the issue execution lock and the wake are stamped in the same commit.
    The session the run resumes is decided here, after the run before it on its task ended.
    """
    now = now or timezone.now()
    conf = heartbeat_conf()
    owner = process_control.self_identity()
    with transaction.atomic():
        run = HeartbeatRun.objects.filter(pk=run_id).first()
        if run is None:
            return ClaimResult(run=None, refusal=ClaimRefusal.NOT_FOUND)
        if run.status != RunStatus.QUEUED:
            return ClaimResult(run=run, refusal=ClaimRefusal.NOT_QUEUED)
        agent = Agent.objects.select_for_update(no_key=True).get(pk=run.agent_id)
        # Queued runs of a paused agent stay queued until it is resumed (reference 2.3).
        if not agent.is_invokable:
            return _park(run, ClaimRefusal.AGENT_NOT_INVOKABLE)
        # A paused company (its budget spent, or the board's pause) starts nothing; its queued
        # runs start when it is resumed.
        if Company.objects.filter(pk=agent.company_id, status=Company.Status.PAUSED).exists():
            return _park(run, ClaimRefusal.COMPANY_PAUSED)
        cap = heartbeat_policy_max_concurrent_runs(agent.runtime_config)
        running = HeartbeatRun.objects.filter(agent_id=agent.id, status=RunStatus.RUNNING).count()
        if running >= cap:
            return _park(run, ClaimRefusal.AT_CAPACITY)
        if _host_full(owner.host, conf.host_max_concurrent_runs):
            return _park(run, ClaimRefusal.HOST_AT_CAPACITY)
        # The issue before the run (lock order agent, issue, run): a wake joining this run
        # holds the issue and then updates the run.
        run_scope_lock(run=run)
        changes = {
            "status": RunStatus.RUNNING,
            "started_at": run.started_at or now,
            "owner_host": owner.host,
            "owner_boot_id": owner.boot_id,
            "owner_pid": owner.pid,
            "owner_started_at": owner.started_at,
            "owner_since": None,
            "lease_expires_at": now + timedelta(seconds=conf.lease_expiry_sec),
            "lease_renewed_at": now,
            "last_activity_at": now,
            "log_store": LOG_STORE,
            "log_ref": run_log_ref(company_id=agent.company_id, agent_id=agent.id, run_id=run.id),
            "session_id_before": run_session_to_resume(agent=agent, context=run.context_snapshot),
            "updated_at": now,
        }
        claimed = HeartbeatRun.objects.filter(pk=run.id, status=RunStatus.QUEUED).update(
            **{**changes, "started_at": Coalesce(F("started_at"), now)}
        )
        if not claimed:
            return ClaimResult(run=run, refusal=ClaimRefusal.NOT_QUEUED)
        for field, value in changes.items():
            setattr(run, field, value)
        AgentWakeupRequest.objects.filter(pk=run.wakeup_request_id).update(
            status=WakeupStatus.CLAIMED, claimed_at=now, updated_at=now
        )
        checked_out = _issue_lock_stamp(run=run, agent=agent, now=now)
        if checked_out:
            run.context_snapshot = {
                **(run.context_snapshot or {}),
                "paperclipHarnessCheckedOut": True,
            }
            HeartbeatRun.objects.filter(pk=run.id).update(context_snapshot=run.context_snapshot)
        Agent.objects.filter(pk=agent.id).update(status=AgentStatus.RUNNING, updated_at=now)
        run_event_append(
            run_id=run.id,
            company_id=run.company_id,
            agent_id=run.agent_id,
            event_type=HeartbeatRunEvent.EventType.LIFECYCLE,
            message="run started",
            payload={
                "ownerHost": owner.host,
                "ownerPid": owner.pid,
                "sessionIdBefore": run.session_id_before,
            },
        )
    return ClaimResult(run=run, agent=agent)


def _host_full(host: str, cap: int) -> bool:
    """Whether this host already executes `cap` runs, counted under a per-host lock held to
    commit, so claims racing on one host never start more than the cap together."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)",
            [advisory_lock_key(AdvisoryLock.HOST_RUNS), sweep_lock_scope(host)],
        )
    running = HeartbeatRun.objects.running_on_host(host).count()
    return running >= cap


def _park(run: HeartbeatRun, refusal: ClaimRefusal) -> ClaimResult:
    """Leave the run queued with no dispatch out for it, so the next finish of a run of its
    agent (which commits after this, behind the agent row lock) or the resume of the agent
    hands it out again."""
    HeartbeatRun.objects.filter(pk=run.id, status=RunStatus.QUEUED).update(lease_expires_at=None)
    return ClaimResult(run=run, refusal=refusal)


def _issue_lock_stamp(*, run: HeartbeatRun, agent: Agent, now: datetime) -> bool:
    """Point the issue's execution lock at the run; check the issue out when the agent owns it.

    Returns whether the run checked the issue out.
    """
    issue_id = run.issue_id
    if not issue_id:
        return False
    issue_execution_lock_take(
        issue_id=issue_id,
        company_id=run.company_id,
        run_id=run.id,
        agent_name_key=agent_name_key(agent.name),
        now=now,
    )
    reason = (run.context_snapshot or {}).get("wakeReason") or ""
    if not reason or reason == "issue_comment_mentioned" or reason.startswith("execution_"):
        return False
    return issue_checkout_for_run(
        issue_id=issue_id, company_id=run.company_id, agent_id=agent.id, run_id=run.id, now=now
    )
