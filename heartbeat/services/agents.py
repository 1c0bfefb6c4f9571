"""Agent state changes made by the board: create, edit, API keys, pause, resume, terminate,
delete."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone

from heartbeat.models import Agent, AgentApiKey, AgentStatus, HeartbeatRun
from heartbeat.services.budgets import agent_budget_settle
from heartbeat.services.lifecycle import agent_start_next_queued
from heartbeat.services.runs import cancel_run
from paperclip.credentials import secret_generate
from paperclip.models import spend_month_of
from paperclip.services import (
    activity_log_record,
    credential_last_use_due,
    protected_rows_summary,
)

AGENT_KEY_PREFIX = "pcak_"
AGENT_EDITABLE_FIELDS = frozenset(
    {
        "name",
        "role",
        "title",
        "icon",
        "capabilities",
        "reports_to_id",
        "adapter_type",
        "adapter_config",
        "runtime_config",
        "budget_monthly_cents",
        "metadata",
    }
)


class AgentError(Exception):
    def __init__(self, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.details = details


class AgentInvalidInput(AgentError):
    """An argument names something that does not exist in the agent's company."""


class AgentStateConflict(AgentError):
    """The agent's status does not allow the change (e.g. resuming a terminated agent)."""


@dataclass(frozen=True)
class AgentKeyCreated:
    key: AgentApiKey
    secret: str


def _check_reports_to(*, company_id, reports_to_id, agent_id=None) -> None:
    if reports_to_id is None:
        return
    if agent_id is not None and str(reports_to_id) == str(agent_id):
        raise AgentInvalidInput(
            "reportsTo: an agent cannot report to itself", {"reportsTo": ["Cannot be itself."]}
        )
    if not Agent.objects.filter(pk=reports_to_id, company_id=company_id).exists():
        raise AgentInvalidInput(
            "reportsTo: no such agent in this company",
            {"reportsTo": ["No such agent in this company."]},
        )


def agent_create(
    *,
    company_id: uuid.UUID | str,
    name: str,
    fields: dict[str, Any] | None = None,
    actor_type: str = "system",
    actor_id: str = "system",
) -> Agent:
    """A new agent, idle and ready to be woken (a board member creating it is the approval)."""
    fields = dict(fields or {})
    unknown = set(fields) - AGENT_EDITABLE_FIELDS
    if unknown:
        raise AgentInvalidInput(f"Unknown agent fields: {sorted(unknown)}")
    _check_reports_to(company_id=company_id, reports_to_id=fields.get("reports_to_id"))
    with transaction.atomic():
        agent = Agent.objects.create(company_id=company_id, name=name, **fields)
        activity_log_record(
            company_id=company_id,
            action="agent.created",
            entity_type="agent",
            entity_id=agent.id,
            actor_type=actor_type,
            actor_id=actor_id,
            agent_id=agent.id,
            details={"name": name, "adapterType": agent.adapter_type},
        )
    return agent


def agent_update(
    *, agent_id: uuid.UUID | str, changes: dict[str, Any], actor_type: str, actor_id: str
) -> Agent:
    """Change the agent's editable fields. A new budget takes effect at once: raising (or
    removing) it resumes an agent paused for its budget, lowering it to the month's spend
    pauses the agent."""
    unknown = set(changes) - AGENT_EDITABLE_FIELDS
    if unknown:
        raise AgentInvalidInput(f"Unknown agent fields: {sorted(unknown)}")
    with transaction.atomic():
        agent = Agent.objects.select_for_update(no_key=True).get(pk=agent_id)
        if "reports_to_id" in changes:
            _check_reports_to(
                company_id=agent.company_id,
                reports_to_id=changes["reports_to_id"],
                agent_id=agent.id,
            )
        for field, value in changes.items():
            setattr(agent, field, value)
        agent.save()
        activity_log_record(
            company_id=agent.company_id,
            action="agent.updated",
            entity_type="agent",
            entity_id=agent.id,
            actor_type=actor_type,
            actor_id=actor_id,
            agent_id=agent.id,
            details={"changes": sorted(changes)},
        )
        if "budget_monthly_cents" in changes:
            agent_budget_settle(agent=agent, now=timezone.now())
    return agent


def agent_key_create(
    *, agent_id: uuid.UUID | str, name: str, actor_type: str, actor_id: str
) -> AgentKeyCreated:
    """A new API key for the agent; the secret is returned once and only its hash is kept."""
    agent = Agent.objects.get(pk=agent_id)
    if agent.status == AgentStatus.TERMINATED:
        raise AgentStateConflict("A terminated agent gets no new keys", {"status": agent.status})
    secret, prefix, digest = secret_generate(AGENT_KEY_PREFIX)
    with transaction.atomic():
        key = AgentApiKey.objects.create(
            company_id=agent.company_id, agent=agent, name=name, key_prefix=prefix, key_hash=digest
        )
        activity_log_record(
            company_id=agent.company_id,
            action="agent.key_created",
            entity_type="agent",
            entity_id=agent.id,
            actor_type=actor_type,
            actor_id=actor_id,
            agent_id=agent.id,
            details={"keyId": str(key.id), "name": name},
        )
    return AgentKeyCreated(key=key, secret=secret)


def agent_key_revoke(
    *, agent_id: uuid.UUID | str, key_id: uuid.UUID | str, actor_type: str, actor_id: str
) -> AgentApiKey:
    """Revoke a key (idempotent: revoking twice keeps the first revocation time)."""
    with transaction.atomic():
        key = AgentApiKey.objects.select_for_update().get(pk=key_id, agent_id=agent_id)
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            activity_log_record(
                company_id=key.company_id,
                action="agent.key_revoked",
                entity_type="agent",
                entity_id=agent_id,
                actor_type=actor_type,
                actor_id=actor_id,
                agent_id=agent_id,
                details={"keyId": str(key.id)},
            )
    return key


def agent_key_touch(*, key_id: uuid.UUID, last_used_at: datetime | None) -> None:
    """Stamp the key's last use. `last_used_at` is the value the caller read with the key, so a
    request within the resolution of the previous stamp writes nothing (the board tokens' rule)."""
    now = timezone.now()
    if credential_last_use_due(last_used_at=last_used_at, now=now):
        AgentApiKey.objects.filter(pk=key_id).update(last_used_at=now)


# Reasons written on runs cancelled because their agent stopped (reference 4.2, related behavior).
CANCELLED_BY_PAUSE = "Cancelled due to agent pause"
CANCELLED_BY_TERMINATION = "Cancelled due to agent termination"


@dataclass(frozen=True)
class AgentStateChange:
    agent: Agent
    cancelled_run_ids: tuple[uuid.UUID, ...] = ()


def _agent_set_status(
    *,
    agent_id: uuid.UUID | str,
    allowed_from: tuple[str, ...] | None,
    status: str,
    action: str,
    actor_type: str,
    actor_id: str,
    reason: str | None = None,
) -> Agent:
    now = timezone.now()
    with transaction.atomic():
        agent = Agent.objects.select_for_update(no_key=True).get(pk=agent_id)
        if allowed_from is not None and agent.status not in allowed_from:
            raise AgentStateConflict(
                f"Cannot {action.split('.')[-1]} an agent that is {agent.status}",
                {"status": agent.status},
            )
        previous = agent.status
        agent.status = status
        if status == AgentStatus.PAUSED:
            agent.paused_at = agent.paused_at or now
            agent.pause_reason = reason
        elif status != AgentStatus.TERMINATED:
            agent.paused_at = None
            agent.pause_reason = None
        agent.save(update_fields=["status", "paused_at", "pause_reason", "updated_at"])
        activity_log_record(
            company_id=agent.company_id,
            action=action,
            entity_type="agent",
            entity_id=agent.id,
            actor_type=actor_type,
            actor_id=actor_id,
            agent_id=agent.id,
            details={"previousStatus": previous, "reason": reason},
        )
    return agent


def _agent_cancel_active_runs(agent: Agent, reason: str) -> tuple[uuid.UUID, ...]:
    """Cancel the agent's queued and running runs (killing their processes); called after the
    agent's new status committed, so nothing claims or dispatches for it meanwhile."""
    run_ids = list(
        HeartbeatRun.objects.active()
        .filter(agent=agent)
        .order_by("created_at")
        .values_list("id", flat=True)
    )
    for run_id in run_ids:
        cancel_run(run_id, reason=reason)
    return tuple(run_ids)


def agent_pause(
    *, agent_id: uuid.UUID | str, reason: str | None = None, actor_type: str, actor_id: str
) -> AgentStateChange:
    """Pause an agent: no new runs start for it, and its queued and running runs are cancelled."""
    agent = _agent_set_status(
        agent_id=agent_id,
        allowed_from=tuple(s for s in AgentStatus.values if s != AgentStatus.TERMINATED),
        status=AgentStatus.PAUSED,
        action="agent.paused",
        actor_type=actor_type,
        actor_id=actor_id,
        reason=reason,
    )
    cancelled = _agent_cancel_active_runs(agent, CANCELLED_BY_PAUSE)
    agent.refresh_from_db()
    return AgentStateChange(agent=agent, cancelled_run_ids=cancelled)


def agent_resume(*, agent_id: uuid.UUID | str, actor_type: str, actor_id: str) -> AgentStateChange:
    """Resume a paused agent (idle); runs queued while it was paused (retries) start now. An
    agent whose monthly budget is spent stays paused until its budget is raised."""
    with transaction.atomic():
        agent = Agent.objects.select_for_update(no_key=True).get(pk=agent_id)
        month = spend_month_of(timezone.now())
        if agent.status == AgentStatus.PAUSED and agent.budget_reached(month):
            raise AgentStateConflict(
                "The agent's monthly budget is spent: raise budgetMonthlyCents above the "
                "month's spend to resume it",
                {
                    "status": agent.status,
                    "spentMonthlyCents": agent.monthly_spend_cents(month),
                    "budgetMonthlyCents": agent.budget_monthly_cents,
                },
            )
        agent = _agent_set_status(
            agent_id=agent_id,
            allowed_from=(AgentStatus.PAUSED,),
            status=AgentStatus.IDLE,
            action="agent.resumed",
            actor_type=actor_type,
            actor_id=actor_id,
        )
        transaction.on_commit(partial(agent_start_next_queued, agent_id=agent.id))
    return AgentStateChange(agent=agent)


def agent_terminate(
    *, agent_id: uuid.UUID | str, actor_type: str, actor_id: str
) -> AgentStateChange:
    """Terminate an agent for good: its credentials stop working and its active runs are
    cancelled. Terminating twice changes nothing."""
    agent = Agent.objects.get(pk=agent_id)
    if agent.status == AgentStatus.TERMINATED:
        return AgentStateChange(agent=agent)
    agent = _agent_set_status(
        agent_id=agent_id,
        allowed_from=None,
        status=AgentStatus.TERMINATED,
        action="agent.terminated",
        actor_type=actor_type,
        actor_id=actor_id,
    )
    cancelled = _agent_cancel_active_runs(agent, CANCELLED_BY_TERMINATION)
    agent.refresh_from_db()
    return AgentStateChange(agent=agent, cancelled_run_ids=cancelled)


def agent_delete(*, agent_id: uuid.UUID | str, actor_type: str, actor_id: str) -> None:
    """Delete an agent that never ran; its keys, runtime state, wakes and task sessions go with
    it, and the company's activity records the deletion.

    Refused (AgentStateConflict, nothing deleted) while the agent has queued or running runs
    (a live or coming agent process, and the issue locks it holds: pausing the agent cancels
    them), and once it has run at all or is assigned an issue: runs, cost records and
    assignments are kept as the record of its work, so terminating is the way to retire it.
    """
    with transaction.atomic():
        # FOR UPDATE, not no_key: inserting a run takes a key-share lock on its agent, so no run
        # starts for the agent while it is judged.
        agent = Agent.objects.select_for_update().get(pk=agent_id)
        active = HeartbeatRun.objects.active().filter(agent=agent).count()
        if active:
            raise AgentStateConflict(
                f"Agent {agent.name} has {active} queued or running run(s): pause it (which "
                "cancels them) before deleting it",
                {"activeRuns": active},
            )
        deleted_id, company_id = agent.id, agent.company_id
        try:
            agent.delete()
        except ProtectedError as exc:
            raise AgentStateConflict(
                f"Agent {agent.name} cannot be deleted: it has "
                f"{protected_rows_summary(exc.protected_objects)}, kept as the record of its "
                "work. Terminate the agent instead.",
                {"status": agent.status},
            ) from None
        activity_log_record(
            company_id=company_id,
            action="agent.deleted",
            entity_type="agent",
            entity_id=deleted_id,
            actor_type=actor_type,
            actor_id=actor_id,
            details={"name": agent.name},
        )
