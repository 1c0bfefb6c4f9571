"""Wakes: a reason to run an agent becomes a queued run, joins an active run, waits behind one,
or is recorded as skipped (reference 2.2)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Case, IntegerField, Q, Value, When
from django.db.models.fields.json import KT
from django.utils import timezone

from heartbeat.models import (
    ACTIVE_RUN_STATUSES,
    Agent,
    AgentWakeupRequest,
    HeartbeatRun,
    RunStatus,
    WakeSource,
    WakeupStatus,
)
from heartbeat.services.budgets import BUDGET_BLOCKED_REASON, WakeBlock, agent_wake_block
from heartbeat.services.lifecycle import (
    agent_name_key,
    run_create_queued,
    runs_of_issue,
    wakeups_of_issue,
)
from heartbeat.services.policy import heartbeat_policy
from issues.models import Issue
from issues.services.run_engine import issue_execution_lock_take, issues_execution_lock_clear
from paperclip.services import activity_log_record

ISSUE_NOT_FOUND_REASON = "issue_execution_issue_not_found"
TIMER_DISABLED_REASON = "heartbeat.disabled"
ON_DEMAND_DISABLED_REASON = "heartbeat.wakeOnDemand.disabled"
SAME_NAME_REASON = "issue_execution_same_name"
DEFERRED_REASON = "issue_execution_deferred"
DEFERRED_CONTEXT_KEY = "_paperclipWakeContext"
_ONE_ACTIVE_RUN_PER_ISSUE = "run_one_active_per_issue"
_IDEMPOTENCY_CONSTRAINT = "wakeup_agent_idempotency_uniq"


class AgentNotFound(Exception):
    """No agent has this id (the API answers 404)."""

    def __init__(self, agent_id: object) -> None:
        super().__init__("Agent not found")
        self.agent_id = agent_id


class AgentNotInvokable(Exception):
    """The agent is paused, terminated or pending approval (the API answers 409)."""

    def __init__(
        self,
        agent_id: object,
        status: str,
        message: str = "Agent is not invokable in its current state",
        details: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.agent_id = agent_id
        self.status = status
        self.details = details


class BudgetBlocked(AgentNotInvokable):
    """The agent's company is paused, or the agent is paused for its monthly budget: the wake
    is recorded as skipped (`budget.blocked`) and refused with the reason and its scope
    (reference 2.2 step 4; the API answers 409)."""

    def __init__(self, agent: Agent, block: WakeBlock) -> None:
        super().__init__(agent.id, agent.status, block.reason, block.details)
        self.block = block


class WakeOutcome(StrEnum):
    QUEUED = "queued"
    COALESCED = "coalesced"
    DEFERRED = "deferred"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class WakeResult:
    outcome: WakeOutcome
    wakeup: AgentWakeupRequest
    # The run that will serve the wake: new (queued), joined (coalesced), else None.
    run: HeartbeatRun | None
    # True when an idempotency key matched an earlier wake and that wake is returned.
    replayed: bool = False


@dataclass(frozen=True)
class _Wake:
    """One wake request, already enriched; shared by the paths below."""

    agent: Agent
    source: str
    trigger_detail: str | None
    reason: str | None
    payload: dict[str, Any]
    context: dict[str, Any]
    idempotency_key: str | None
    actor_type: str | None
    actor_id: str | None
    now: datetime

    @property
    def is_comment_wake(self) -> bool:
        return bool(self.context.get("wakeCommentId") or self.context.get("commentId"))

    def row(self, **fields: Any) -> AgentWakeupRequest:
        values = {
            "company_id": self.agent.company_id,
            "agent": self.agent,
            "source": self.source,
            "trigger_detail": self.trigger_detail,
            "reason": self.reason,
            "payload": self.payload or None,
            "requested_by_actor_type": self.actor_type,
            "requested_by_actor_id": self.actor_id,
            "idempotency_key": self.idempotency_key,
            **fields,
        }
        return AgentWakeupRequest.objects.create(**values)


def _first_present(*values: Any) -> Any:
    return next((value for value in values if value not in (None, "")), None)


def wake_context_enrich(
    *,
    context: Mapping[str, Any],
    payload: Mapping[str, Any],
    source: str,
    trigger_detail: str | None,
    reason: str | None,
) -> dict[str, Any]:
    """The run context of a wake: each key filled from the wake only when still empty."""
    ctx = dict(context)

    def fill(key: str, value: Any) -> None:
        if ctx.get(key) in (None, "") and value not in (None, ""):
            ctx[key] = value

    issue_id = payload.get("issueId")
    fill("wakeReason", reason)
    fill("issueId", str(issue_id) if issue_id else None)
    fill("taskId", _first_present(payload.get("taskId"), issue_id))
    fill(
        "taskKey",
        _first_present(
            ctx.get("taskKey"),
            ctx.get("taskId"),
            ctx.get("issueId"),
            payload.get("taskKey"),
            payload.get("taskId"),
            issue_id,
        ),
    )
    comment_id = payload.get("commentId")
    fill("commentId", comment_id)
    fill("wakeCommentId", comment_id)
    comment_ids = _merged_ids(ctx.get("wakeCommentIds"), payload.get("wakeCommentIds"), comment_id)
    if comment_ids:
        ctx["wakeCommentIds"] = comment_ids
    fill("wakeSource", source)
    fill("wakeTriggerDetail", trigger_detail)
    for key in ("issueId", "taskId", "taskKey"):
        if ctx.get(key) is not None:
            ctx[key] = str(ctx[key])
    return ctx


def _merged_ids(*sources: Any) -> list[str]:
    merged: list[str] = []
    for source in sources:
        for value in source if isinstance(source, list) else [source]:
            if value not in (None, "") and str(value) not in merged:
                merged.append(str(value))
    return merged


def context_merge(existing: Mapping[str, Any] | None, incoming: Mapping[str, Any]) -> dict:
    """Shallow merge of a joining wake's context into a run's; comment ids accumulate."""
    merged = {**(existing or {}), **incoming}
    comment_ids = _merged_ids(
        (existing or {}).get("wakeCommentIds"),
        incoming.get("wakeCommentIds"),
        incoming.get("wakeCommentId"),
    )
    if comment_ids:
        merged["wakeCommentIds"] = comment_ids
    return merged


def wake_agent(
    *,
    agent_id: uuid.UUID | str,
    source: str = WakeSource.ON_DEMAND,
    trigger_detail: str | None = None,
    reason: str | None = None,
    payload: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    requested_by_actor_type: str | None = None,
    requested_by_actor_id: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> WakeResult:
    """Wake an agent: queue a run, join the active one, defer behind another agent's, or skip.

    Raises AgentNotFound, BudgetBlocked (a paused company, or an agent paused for its budget:
    the wake is kept as skipped) and AgentNotInvokable. A repeated idempotency key for the same
    agent returns the first wake's result (`replayed=True`) and changes nothing.
    """
    agent = _agent_or_raise(agent_id)
    if idempotency_key:
        earlier = _replay(agent, idempotency_key)
        if earlier is not None:
            return earlier
    block = agent_wake_block(agent=agent)
    if block is not None:
        AgentWakeupRequest.objects.create(
            company_id=agent.company_id,
            agent=agent,
            source=source,
            trigger_detail=trigger_detail,
            reason=BUDGET_BLOCKED_REASON,
            payload=_json_safe(payload or {}) or None,
            status=WakeupStatus.SKIPPED,
            requested_by_actor_type=requested_by_actor_type,
            requested_by_actor_id=requested_by_actor_id,
            idempotency_key=idempotency_key,
            finished_at=timezone.now(),
            error=block.reason,
        )
        raise BudgetBlocked(agent, block)
    if not agent.is_invokable:
        raise AgentNotInvokable(agent.id, agent.status)
    payload = _json_safe(payload or {})
    wake = _Wake(
        agent=agent,
        source=source,
        trigger_detail=trigger_detail,
        reason=reason,
        payload=payload,
        context=wake_context_enrich(
            context=_json_safe(context or {}),
            payload=payload,
            source=source,
            trigger_detail=trigger_detail,
            reason=reason,
        ),
        idempotency_key=idempotency_key,
        actor_type=requested_by_actor_type,
        actor_id=requested_by_actor_id,
        now=timezone.now(),
    )
    try:
        with transaction.atomic():
            skip_reason = _policy_skip_reason(wake)
            if skip_reason is not None:
                return _skip(wake, skip_reason)
            if wake.context.get("issueId"):
                return _wake_for_issue(wake)
            return _wake_without_issue(wake)
    except IntegrityError as exc:
        # Two requests with one idempotency key raced: the loser returns the winner's wake.
        if idempotency_key and _violated_constraint(exc) == _IDEMPOTENCY_CONSTRAINT:
            earlier = _replay(agent, idempotency_key)
            if earlier is not None:
                return earlier
        raise


def agent_invoke(
    *,
    agent_id: uuid.UUID | str,
    actor_type: str,
    actor_id: str,
    source: str = WakeSource.ON_DEMAND,
    trigger_detail: str | None = None,
    reason: str | None = None,
    payload: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    context: Mapping[str, Any] | None = None,
    via: str | None = None,
) -> WakeResult:
    """A wake someone asked for (the API's wakeup and invoke routes, the console's wake and
    retry actions): wake_agent with the caller in the run's context, and a `heartbeat.invoked`
    activity row saying who asked and what came of it (`via` names the console or client).

    Raises what wake_agent raises; a refused wake writes no activity.
    """
    result = wake_agent(
        agent_id=agent_id,
        source=source,
        trigger_detail=trigger_detail,
        reason=reason,
        payload=payload,
        idempotency_key=idempotency_key,
        requested_by_actor_type=actor_type,
        requested_by_actor_id=actor_id,
        context={**(context or {}), "triggeredBy": actor_type, "actorId": actor_id},
    )
    details = {"source": source, "outcome": result.outcome.value}
    if via:
        details["via"] = via
    if payload and payload.get("retryOfRunId"):
        details["retryOfRunId"] = str(payload["retryOfRunId"])
    activity_log_record(
        company_id=result.wakeup.company_id,
        action="heartbeat.invoked",
        entity_type="agent",
        entity_id=result.wakeup.agent_id,
        actor_type=actor_type,
        actor_id=actor_id,
        agent_id=result.wakeup.agent_id,
        run_id=result.run.id if result.run else None,
        details=details,
    )
    return result


def _json_safe(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document as stored: ids, dates and the like become strings (JSON columns)."""
    return json.loads(json.dumps(dict(document), cls=DjangoJSONEncoder))


def _agent_or_raise(agent_id: uuid.UUID | str) -> Agent:
    try:
        agent = Agent.objects.select_related("company").filter(pk=agent_id).first()
    except (ValueError, ValidationError):
        agent = None
    if agent is None:
        raise AgentNotFound(agent_id)
    return agent


def _replay(agent: Agent, idempotency_key: str) -> WakeResult | None:
    wakeup = (
        AgentWakeupRequest.objects.filter(agent=agent, idempotency_key=idempotency_key)
        .select_related("run")
        .first()
    )
    if wakeup is None:
        return None
    outcome = {
        WakeupStatus.COALESCED: WakeOutcome.COALESCED,
        WakeupStatus.DEFERRED_ISSUE_EXECUTION: WakeOutcome.DEFERRED,
        WakeupStatus.SKIPPED: WakeOutcome.SKIPPED,
    }.get(wakeup.status, WakeOutcome.QUEUED)
    return WakeResult(outcome=outcome, wakeup=wakeup, run=wakeup.run, replayed=True)


def _violated_constraint(exc: IntegrityError) -> str | None:
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)


def _policy_skip_reason(wake: _Wake) -> str | None:
    policy = heartbeat_policy(wake.agent.runtime_config)
    if wake.source == WakeSource.TIMER and not policy.enabled:
        return TIMER_DISABLED_REASON
    if wake.source != WakeSource.TIMER and not policy.wake_on_demand:
        return ON_DEMAND_DISABLED_REASON
    return None


def _skip(wake: _Wake, reason: str) -> WakeResult:
    # The skip reason replaces the requested one (reference 2.2 step 6).
    wakeup = wake.row(status=WakeupStatus.SKIPPED, reason=reason, finished_at=wake.now)
    return WakeResult(outcome=WakeOutcome.SKIPPED, wakeup=wakeup, run=None)


def _queue(wake: _Wake) -> WakeResult:
    wakeup = wake.row(status=WakeupStatus.QUEUED)
    run = run_create_queued(
        agent=wake.agent,
        wakeup=wakeup,
        context=wake.context,
        invocation_source=wake.source,
        trigger_detail=wake.trigger_detail,
    )
    return WakeResult(outcome=WakeOutcome.QUEUED, wakeup=wakeup, run=run)


def _coalesce(wake: _Wake, run: HeartbeatRun, *, reason: str | None) -> WakeResult:
    merged = context_merge(run.context_snapshot, wake.context)
    HeartbeatRun.objects.filter(pk=run.pk).update(context_snapshot=merged, updated_at=wake.now)
    run.context_snapshot = merged
    wakeup = wake.row(
        status=WakeupStatus.COALESCED,
        reason=reason,
        coalesced_count=1,
        run=run,
        finished_at=wake.now,
    )
    return WakeResult(outcome=WakeOutcome.COALESCED, wakeup=wakeup, run=run)


def _wake_for_issue(wake: _Wake) -> WakeResult:
    issue_id = wake.context["issueId"]
    try:
        issue = (
            Issue.objects.select_for_update()
            .filter(pk=issue_id, company_id=wake.agent.company_id)
            .first()
        )
    except (ValueError, ValidationError):
        issue = None
    if issue is None:
        return _skip(wake, ISSUE_NOT_FOUND_REASON)
    active = _issue_active_run(issue, now=wake.now)
    if active is None:
        try:
            with transaction.atomic():
                return _queue(wake)
        except IntegrityError as exc:
            # A run for the issue appeared without the issue lock (a racing host): join it.
            if _violated_constraint(exc) != _ONE_ACTIVE_RUN_PER_ISSUE:
                raise
            active = _issue_active_run(issue, now=wake.now)
            if active is None:
                raise
    holder_key = issue.execution_agent_name_key or agent_name_key(active.agent.name)
    same_agent = holder_key == agent_name_key(wake.agent.name)
    if same_agent and (not wake.is_comment_wake or active.status == RunStatus.QUEUED):
        return _coalesce(wake, active, reason=SAME_NAME_REASON)
    return _defer(wake, issue)


def _issue_active_run(issue: Issue, *, now: datetime) -> HeartbeatRun | None:
    """The issue's queued or running run; a lock left on a finished run is cleared first."""
    if issue.execution_run_id is not None:
        run = HeartbeatRun.objects.select_related("agent").filter(pk=issue.execution_run_id).first()
        if run is not None and run.status in ACTIVE_RUN_STATUSES:
            return run
        issues_execution_lock_clear(issue_ids=[issue.pk])
        issue.execution_run_id = None
        issue.execution_agent_name_key = None
    run = (
        runs_of_issue(issue.id)
        .active()
        .filter(company_id=issue.company_id)
        .select_related("agent")
        .order_by(
            Case(
                When(status=RunStatus.RUNNING, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            ),
            "created_at",
        )
        .first()
    )
    if run is not None:
        # A run queued before the lock existed (or by an older version): adopt it.
        issue_execution_lock_take(
            issue_id=issue.pk,
            company_id=issue.company_id,
            run_id=run.id,
            agent_name_key=agent_name_key(run.agent.name),
            now=now,
            touch_updated_at=False,
        )
        issue.execution_agent_name_key = agent_name_key(run.agent.name)
    return run


def _defer(wake: _Wake, issue: Issue) -> WakeResult:
    waiting = (
        wakeups_of_issue(issue.id)
        .select_for_update()
        .filter(agent=wake.agent, status=WakeupStatus.DEFERRED_ISSUE_EXECUTION)
        .order_by("requested_at")
        .first()
    )
    if waiting is None:
        payload = {**wake.payload, "issueId": str(issue.id), DEFERRED_CONTEXT_KEY: wake.context}
        wakeup = wake.row(
            status=WakeupStatus.DEFERRED_ISSUE_EXECUTION, reason=DEFERRED_REASON, payload=payload
        )
        return WakeResult(outcome=WakeOutcome.DEFERRED, wakeup=wakeup, run=None)
    payload = dict(waiting.payload or {})
    payload[DEFERRED_CONTEXT_KEY] = context_merge(payload.get(DEFERRED_CONTEXT_KEY), wake.context)
    AgentWakeupRequest.objects.filter(pk=waiting.pk).update(
        payload=payload, coalesced_count=waiting.coalesced_count + 1, updated_at=wake.now
    )
    waiting.payload = payload
    waiting.coalesced_count += 1
    # The joining wake is kept as its own row for the audit trail (and its idempotency key).
    wake.row(
        status=WakeupStatus.COALESCED,
        reason=DEFERRED_REASON,
        coalesced_count=1,
        finished_at=wake.now,
    )
    return WakeResult(outcome=WakeOutcome.DEFERRED, wakeup=waiting, run=None)


def _wake_without_issue(wake: _Wake) -> WakeResult:
    # The agent row lock serialises wakes of one agent, so two timer ticks cannot both queue.
    Agent.objects.select_for_update(no_key=True).filter(pk=wake.agent.pk).values_list("pk").first()
    task_key = wake.context.get("taskKey")
    # Same scope: the same task key, or both without one.
    scope = HeartbeatRun.objects.alias(task_key=KT("context_snapshot__taskKey")).filter(
        Q(task_key=task_key) if task_key else Q(task_key__isnull=True),
        agent=wake.agent,
    )
    active = list(scope.active().order_by("-created_at")[:50])
    queued = next((run for run in active if run.status == RunStatus.QUEUED), None)
    running = next((run for run in active if run.status == RunStatus.RUNNING), None)
    # A comment that arrives while its scope is running needs a follow-up run to be read.
    target = queued or (None if wake.is_comment_wake else running)
    if target is not None:
        return _coalesce(wake, target, reason=wake.reason)
    return _queue(wake)
