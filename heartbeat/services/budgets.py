"""Usage, cost and monthly budgets (reference 1.2 and 1.11 cost_events, 2.2 step 4).

Each finished run's usage and cost come from its CLI's output. The cost is written once, as an
append-only CostEvent, in the transaction that finalizes the run; the same transaction adds it
to the month's spend of the agent and of the company with one UPDATE each, so the spend stays
exact however many runs finish at once (it is never read, added to and written back).

An agent or a company whose spend reaches its budget is paused with the pause reason `budget`:
runs already executing finish (their cost still counts), wakes are refused with the reason, and
queued runs wait. Raising or removing the budget, or a new month, resumes it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import partial

from django.db import connection, transaction
from django.utils import timezone

from heartbeat.adapters import CliOutput, TokenUsage, UsageBasis
from heartbeat.models import (
    BUDGET_PAUSE_REASON,
    NOT_INVOKABLE_AGENT_STATUSES,
    Agent,
    AgentStatus,
    CostEvent,
    HeartbeatRun,
    HeartbeatRunEvent,
)
from heartbeat.services.events import run_event_append
from heartbeat.services.lifecycle import agent_start_next_queued
from paperclip.models import Company, spend_month_of, spend_under_budget
from paperclip.services import (
    activity_log_record,
    companies_spend_month_rollover,
    company_spend_add,
    spend_increment_sql,
)

BUDGET_BLOCKED_REASON = "budget.blocked"
_AGENT_SPEND_INCREMENT = spend_increment_sql(Agent._meta.db_table)


@dataclass(frozen=True)
class RunCost:
    """What a run used and cost, as its run record and cost record keep it."""

    provider: str
    model: str | None
    # The run's own usage (for a cumulative CLI, the difference from the session's last run).
    usage: TokenUsage | None
    cost_usd: Decimal | None
    cost_cents: int
    usage_json: dict


def run_cost_from_output(
    *, run: HeartbeatRun, output: CliOutput, model: str | None
) -> RunCost | None:
    """The run's usage and cost from its CLI's output; None when the output reported neither.

    `model` is the configured one, for CLIs that do not name theirs. A CLI that counts tokens
    for the whole session (Codex) is charged the difference from the session's previous run.
    """
    if output.usage is None and output.cost_usd is None:
        return None
    usage = output.usage
    usage_json: dict = {"usageBasis": output.usage_basis.value}
    if usage is not None and output.usage_basis == UsageBasis.SESSION_CUMULATIVE:
        earlier = _session_usage_before(run=run, session_id=output.session_id)
        usage_json.update(
            rawInputTokens=usage.input_tokens,
            rawCachedInputTokens=usage.cached_input_tokens,
            rawOutputTokens=usage.output_tokens,
            derivedFromSessionTotals=earlier is not None and usage.covers(earlier),
        )
        if earlier is not None and usage.covers(earlier):
            usage = usage.minus(earlier)
    if usage is not None:
        usage_json.update(
            inputTokens=usage.input_tokens,
            cachedInputTokens=usage.cached_input_tokens,
            outputTokens=usage.output_tokens,
        )
        if usage.cache_creation_input_tokens:
            usage_json["cacheCreationInputTokens"] = usage.cache_creation_input_tokens
    model = output.model or model
    usage_json.update(
        costUsd=float(output.cost_usd) if output.cost_usd is not None else None,
        costCents=output.cost_cents,
        model=model,
        provider=output.provider,
    )
    return RunCost(
        provider=output.provider,
        model=model,
        usage=usage,
        cost_usd=output.cost_usd,
        cost_cents=output.cost_cents,
        usage_json=usage_json,
    )


def _session_usage_before(*, run: HeartbeatRun, session_id: str | None) -> TokenUsage | None:
    """The session's totals after its previous run (through run_agent_session_idx)."""
    if not session_id:
        return None
    earlier = (
        HeartbeatRun.objects.filter(
            agent_id=run.agent_id, session_id_after=session_id, usage_json__has_key="rawInputTokens"
        )
        .exclude(pk=run.id)
        .order_by("-created_at")
        .values_list("usage_json", flat=True)
        .first()
    )
    if not isinstance(earlier, dict):
        return None
    return TokenUsage(
        input_tokens=int(earlier.get("rawInputTokens") or 0),
        cached_input_tokens=int(earlier.get("rawCachedInputTokens") or 0),
        output_tokens=int(earlier.get("rawOutputTokens") or 0),
    )


@dataclass(frozen=True)
class CostRecorded:
    # False when the run's cost was recorded before (a second finalize of one report).
    recorded: bool
    agent_paused: bool = False
    company_paused: bool = False


_COST_EVENT_INSERT = f"""
INSERT INTO {CostEvent._meta.db_table} (
    id, company_id, agent_id, run_id, occurred_at, month, provider, model, input_tokens,
    cached_input_tokens, output_tokens, cost_usd, cost_cents)
VALUES (%(id)s, %(company_id)s, %(agent_id)s, %(run_id)s, %(now)s, %(month)s, %(provider)s,
    %(model)s, %(input)s, %(cached)s, %(output)s, %(cost_usd)s, %(cost_cents)s)
ON CONFLICT (run_id) DO NOTHING
RETURNING id
"""


def run_cost_record(*, run: HeartbeatRun, cost: RunCost, now: datetime) -> CostRecorded:
    """Record the run's cost once, add it to the month's spend of the agent and the company, and
    pause whichever of them it brings to its budget. In the caller's transaction, after the
    agent's status was settled (a pause must not be overwritten)."""
    month = spend_month_of(now)
    usage = cost.usage or TokenUsage()
    with connection.cursor() as cursor:
        cursor.execute(
            _COST_EVENT_INSERT,
            {
                "id": uuid.uuid4(),
                "company_id": run.company_id,
                "agent_id": run.agent_id,
                "run_id": run.id,
                "now": now,
                "month": month,
                "provider": cost.provider,
                "model": cost.model,
                "input": usage.input_tokens,
                "cached": usage.cached_input_tokens,
                "output": usage.output_tokens,
                "cost_usd": cost.cost_usd,
                "cost_cents": cost.cost_cents,
            },
        )
        inserted = cursor.fetchone() is not None
        if not inserted:
            return CostRecorded(recorded=False)
        if cost.cost_cents == 0:
            return CostRecorded(recorded=True)
        cursor.execute(
            _AGENT_SPEND_INCREMENT,
            {"id": run.agent_id, "cents": cost.cost_cents, "month": month, "now": now},
        )
        spent, budget, spend_month = cursor.fetchone()
    agent_paused = False
    if budget > 0 and spend_month == month and spent >= budget:
        agent_paused = _agent_budget_pause(
            run=run, spent=spent, budget=budget, month=month, now=now
        )
    company = company_spend_add(
        company_id=run.company_id, cents=cost.cost_cents, month=month, now=now, run_id=run.id
    )
    if company.paused:
        _event(
            run,
            f"The company's monthly budget is reached ({company.spent_monthly_cents} of "
            f"{company.budget_monthly_cents} cents): the company is paused. Runs executing "
            "finish; wakes of its agents are refused until its budget is raised or the month "
            "ends.",
            {
                "scopeType": "company",
                "scopeId": str(run.company_id),
                "spentMonthlyCents": company.spent_monthly_cents,
                "budgetMonthlyCents": company.budget_monthly_cents,
            },
        )
    return CostRecorded(recorded=True, agent_paused=agent_paused, company_paused=company.paused)


def _event(run: HeartbeatRun, message: str, payload: dict) -> None:
    run_event_append(
        run_id=run.id,
        company_id=run.company_id,
        agent_id=run.agent_id,
        event_type=HeartbeatRunEvent.EventType.LIFECYCLE,
        level=HeartbeatRunEvent.Level.WARN,
        message=message,
        payload=payload,
    )


def _budget_details(*, scope_id, spent: int, budget: int, month: date) -> dict:
    return {
        "scopeType": "agent",
        "scopeId": str(scope_id),
        "spentMonthlyCents": spent,
        "budgetMonthlyCents": budget,
        "month": month.isoformat(),
    }


def _budget_activity(
    agent: Agent, *, action: str, cause: str, month: date, run_id: uuid.UUID | None = None
) -> None:
    activity_log_record(
        company_id=agent.company_id,
        action=action,
        entity_type="agent",
        entity_id=agent.id,
        agent_id=agent.id,
        run_id=run_id,
        details={
            **_budget_details(
                scope_id=agent.id,
                spent=agent.monthly_spend_cents(month),
                budget=agent.budget_monthly_cents,
                month=month,
            ),
            "cause": cause,
        },
    )


def _agent_budget_pause(
    *, run: HeartbeatRun, spent: int, budget: int, month: date, now: datetime
) -> bool:
    # Compare-and-set from an invokable status: one run pauses the agent however many of its
    # runs reach the budget together, and a pause by the board is left as it is.
    paused = (
        Agent.objects.filter(pk=run.agent_id)
        .exclude(status__in=NOT_INVOKABLE_AGENT_STATUSES)
        .update(
            status=AgentStatus.PAUSED,
            pause_reason=BUDGET_PAUSE_REASON,
            paused_at=now,
            updated_at=now,
        )
    )
    if not paused:
        return False
    agent = Agent.objects.get(pk=run.agent_id)
    _budget_activity(agent, action="budget.exceeded", cause="spend", month=month, run_id=run.id)
    _event(
        run,
        f"The agent's monthly budget is reached ({spent} of {budget} cents): the agent is "
        "paused. Its runs executing finish; wakes are refused until its budget is raised or "
        "the month ends.",
        _budget_details(scope_id=run.agent_id, spent=spent, budget=budget, month=month),
    )
    return True


def agent_budget_settle(
    *, agent: Agent, now: datetime, cause: str = "budget_changed"
) -> str | None:
    """After the agent's budget changed (in the caller's transaction, agent row locked): pause
    it if its month's spend now reaches the budget, resume it if it was paused for the budget
    and no longer is. Returns the activity action written, or None."""
    month = spend_month_of(now)
    reached = agent.budget_reached(month)
    if agent.is_budget_paused and not reached:
        if _agent_budget_resume(agent_id=agent.id, month=month, now=now, cause=cause):
            agent.refresh_from_db()
            return "budget.resumed"
        return None
    if reached and agent.is_invokable:
        Agent.objects.filter(pk=agent.id).update(
            status=AgentStatus.PAUSED,
            pause_reason=BUDGET_PAUSE_REASON,
            paused_at=now,
            updated_at=now,
        )
        agent.refresh_from_db()
        _budget_activity(agent, action="budget.exceeded", cause=cause, month=month)
        return "budget.exceeded"
    return None


def _agent_budget_resume(*, agent_id, month: date, now: datetime, cause: str) -> bool:
    """Resume an agent paused for its budget if it is under budget now (compare-and-set); its
    queued runs are handed out after commit."""
    resumed = Agent.objects.filter(
        spend_under_budget(month),
        pk=agent_id,
        status=AgentStatus.PAUSED,
        pause_reason=BUDGET_PAUSE_REASON,
    ).update(status=AgentStatus.IDLE, pause_reason=None, paused_at=None, updated_at=now)
    if not resumed:
        return False
    agent = Agent.objects.get(pk=agent_id)
    _budget_activity(agent, action="budget.resumed", cause=cause, month=month)
    transaction.on_commit(partial(agent_start_next_queued, agent_id=agent_id))
    return True


@dataclass(frozen=True)
class WakeBlock:
    """Why no new run may start for an agent: its company is paused, or it is paused for its
    budget (reference 2.2 step 4: the wake is skipped as `budget.blocked`, 409 with this)."""

    scope_type: str
    scope_id: uuid.UUID
    reason: str
    spent_monthly_cents: int
    budget_monthly_cents: int

    @property
    def details(self) -> dict:
        return {
            "scopeType": self.scope_type,
            "scopeId": str(self.scope_id),
            "spentMonthlyCents": self.spent_monthly_cents,
            "budgetMonthlyCents": self.budget_monthly_cents,
        }


def agent_wake_block(*, agent: Agent, now: datetime | None = None) -> WakeBlock | None:
    """Whether the agent's company or budget refuses new runs now (None: nothing does)."""
    month = spend_month_of(now or timezone.now())
    company = agent.company
    if company.status == Company.Status.PAUSED:
        spent = company.monthly_spend_cents(month)
        reason = (
            f"Company is paused because its monthly budget is spent ({spent} of "
            f"{company.budget_monthly_cents} cents): raise the budget to resume it"
            if company.is_budget_paused
            else "Company is paused and cannot start new work"
        )
        return WakeBlock("company", company.pk, reason, spent, company.budget_monthly_cents)
    if agent.is_budget_paused:
        spent = agent.monthly_spend_cents(month)
        return WakeBlock(
            "agent",
            agent.pk,
            f"Agent is paused because its monthly budget is spent ({spent} of "
            f"{agent.budget_monthly_cents} cents): raise the budget to resume it",
            spent,
            agent.budget_monthly_cents,
        )
    return None


@dataclass(frozen=True)
class RolloverResult:
    agents_resumed: list[uuid.UUID]
    companies_resumed: list[uuid.UUID]


def budgets_month_rollover(*, now: datetime | None = None) -> RolloverResult:
    """A new month: spends of an earlier month start again from 0, and agents and companies
    paused for their budget resume (queued runs start). Idempotent; run by the schedule."""
    now = now or timezone.now()
    month = spend_month_of(now)
    Agent.objects.filter(spend_month__lt=month).update(
        spent_monthly_cents=0, spend_month=month, updated_at=now
    )
    candidates = Agent.objects.filter(
        spend_under_budget(month), status=AgentStatus.PAUSED, pause_reason=BUDGET_PAUSE_REASON
    ).values_list("pk", flat=True)
    agents = []
    for agent_id in candidates:
        with transaction.atomic():
            if _agent_budget_resume(agent_id=agent_id, month=month, now=now, cause="new_month"):
                agents.append(agent_id)
    return RolloverResult(
        agents_resumed=agents, companies_resumed=companies_spend_month_rollover(now=now)
    )
