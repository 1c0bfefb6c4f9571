"""Costs and monthly budgets on the database: each run's cost recorded once and added to the
month's spend of its agent and company exactly, however many runs finish at once; the budget
that pauses an agent or a company, the wakes it refuses, and what lets them run again."""

from __future__ import annotations

import json
import time
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from heartbeat.adapters import CliOutput, TokenUsage, UsageBasis
from heartbeat.models import (
    Agent,
    AgentRuntimeState,
    AgentTaskSession,
    AgentWakeupRequest,
    CostEvent,
    HeartbeatRun,
)
from heartbeat.run_log import RunLogSummary, RunLogWriter, run_log_path, run_log_ref
from heartbeat.services import (
    AgentStateConflict,
    BudgetBlocked,
    ClaimRefusal,
    RunOutcome,
    agent_resume,
    agent_update,
    budgets_month_rollover,
    cancel_run,
    reconcile_stranded_assigned_issues,
    run_claim,
    run_finalize,
    run_finalize_from_report,
    tick_timer_heartbeats,
    wake_agent,
)
from paperclip.models import ActivityLog, Company, spend_month_of
from paperclip.services import CompanyBudgetSpent, company_spend_add, company_update
from tests.factories import make_agent, make_company, make_issue, make_run
from tests.fake_cli import recorded
from tests.threads import race

SESSION = "7d1f2c4e-1b2a-4c3d-8e9f-0a1b2c3d4e5f"


def _claude_output(cost_usd: str) -> CliOutput:
    return CliOutput(
        cli="claude",
        provider="anthropic",
        usage_basis=UsageBasis.PER_RUN,
        session_id=SESSION,
        usage=TokenUsage(input_tokens=10, cached_input_tokens=100, output_tokens=20),
        cost_usd=Decimal(cost_usd),
        summary="Done.",
    )


def _running(agent: Agent, task: str = "chores") -> HeartbeatRun:
    return make_run(agent, status="running", context_snapshot={"taskKey": task})


def _finish(run: HeartbeatRun, cost_usd: str) -> HeartbeatRun:
    outcome = RunOutcome(status="succeeded", exit_code=0, cli_output=_claude_output(cost_usd))
    run_finalize(run=run, outcome=outcome)
    run.refresh_from_db()
    return run


def _claude_agent(company: Company | None = None, **fields) -> Agent:
    return make_agent(company, adapter_type="claude_local", adapter_config={}, **fields)


def _spend(agent: Agent) -> tuple[int, int]:
    agent.refresh_from_db()
    return agent.spent_monthly_cents, Company.objects.get(pk=agent.company_id).spent_monthly_cents


def _month_before(moment) -> date:
    return (spend_month_of(moment) - timedelta(days=1)).replace(day=1)


@pytest.mark.django_db
def test_a_runs_cost_is_recorded_once_and_adds_to_the_month_spend_of_agent_and_company():
    agent = _claude_agent()
    run = _finish(_running(agent), "0.5")

    assert _spend(agent) == (50, 50)
    cost = CostEvent.objects.get(run=run)
    assert (cost.cost_usd, cost.cost_cents, cost.month) == (
        Decimal("0.5"),
        50,
        spend_month_of(timezone.now()),
    )
    # The same report finalized twice (a supervisor and a reaper) costs once.
    run_finalize(run=run, outcome=RunOutcome(status="succeeded", cli_output=_claude_output("0.5")))
    assert CostEvent.objects.filter(run=run).count() == 1
    assert _spend(agent) == (50, 50)


@pytest.mark.django_db
def test_a_run_cancelled_after_its_cli_reported_keeps_its_ending_and_counts_its_cost_once():
    agent = _claude_agent()
    run = _running(agent)
    cancel_run(run.id)
    outcome = RunOutcome(
        status="succeeded",
        exit_code=0,
        log=RunLogSummary(
            log_bytes=10, log_sha256="ab" * 32, stdout_excerpt=None, stderr_excerpt=None
        ),
        cli_output=_claude_output("0.5"),
    )

    assert run_finalize(run=run, outcome=outcome) == "cancelled"
    assert run_finalize(run=run, outcome=outcome) == "cancelled"

    run.refresh_from_db()
    assert (run.status, run.session_id_after, run.usage_json["costCents"]) == (
        "cancelled",
        SESSION,
        50,
    )
    assert CostEvent.objects.filter(run=run).count() == 1
    assert _spend(agent) == (50, 50)
    assert AgentTaskSession.objects.get(agent=agent).session_id == SESSION


@pytest.mark.django_db
def test_reaching_the_agents_budget_pauses_it_and_tells_the_board():
    agent = _claude_agent(budget_monthly_cents=100)
    _finish(_running(agent), "0.6")
    crossing = _finish(_running(agent), "0.6")

    agent.refresh_from_db()
    assert (agent.status, agent.pause_reason, agent.spent_monthly_cents) == (
        "paused",
        "budget",
        120,
    )
    assert agent.paused_at is not None
    activity = ActivityLog.objects.get(action="budget.exceeded", entity_id=str(agent.id))
    assert activity.details["spentMonthlyCents"] == 120
    assert activity.details["budgetMonthlyCents"] == 100
    assert activity.run_id == crossing.id
    assert crossing.events.filter(
        level="warn", message__startswith="The agent's monthly budget is reached (120 of 100"
    ).exists()


@pytest.mark.django_db
def test_wake_of_an_agent_paused_for_its_budget_is_refused_with_the_reason(dispatched):
    agent = _claude_agent(budget_monthly_cents=50)
    _finish(_running(agent), "0.5")

    with pytest.raises(BudgetBlocked) as refused:
        wake_agent(agent_id=agent.id, reason="issue_commented", payload={"taskKey": "next"})

    assert "Agent is paused because its monthly budget is spent (50 of 50 cents)" in str(
        refused.value
    )
    assert refused.value.details == {
        "scopeType": "agent",
        "scopeId": str(agent.id),
        "spentMonthlyCents": 50,
        "budgetMonthlyCents": 50,
    }
    skipped = AgentWakeupRequest.objects.get(agent=agent, status="skipped")
    assert (skipped.reason, skipped.run_id) == ("budget.blocked", None)
    assert HeartbeatRun.objects.filter(agent=agent, status="queued").count() == 0


@pytest.mark.django_db
def test_runs_in_flight_finish_and_count_after_the_budget_is_reached():
    agent = _claude_agent(
        budget_monthly_cents=100, runtime_config={"heartbeat": {"maxConcurrentRuns": 2}}
    )
    first, second = _running(agent, "a"), _running(agent, "b")

    _finish(first, "1.0")
    in_flight = _finish(second, "0.3")

    assert in_flight.status == "succeeded"
    assert _spend(agent) == (130, 130)
    agent.refresh_from_db()
    assert (agent.status, agent.pause_reason) == ("paused", "budget")
    assert ActivityLog.objects.filter(action="budget.exceeded").count() == 1


@pytest.mark.django_db(transaction=True)
def test_raising_the_budget_resumes_the_agent_and_starts_its_queued_runs(dispatched):
    agent = _claude_agent(budget_monthly_cents=50)
    _finish(_running(agent), "0.5")
    waiting = make_run(agent, status="queued", context_snapshot={"taskKey": "waiting"})
    assert run_claim(run_id=waiting.id).refusal == ClaimRefusal.AGENT_NOT_INVOKABLE

    agent_update(
        agent_id=agent.id,
        changes={"budget_monthly_cents": 500},
        actor_type="user",
        actor_id="board",
    )

    agent.refresh_from_db()
    assert (agent.status, agent.pause_reason, agent.paused_at) == ("idle", None, None)
    resumed = ActivityLog.objects.get(action="budget.resumed", entity_id=str(agent.id))
    assert resumed.details["cause"] == "budget_changed"
    assert dispatched == [str(waiting.id)]
    assert wake_agent(agent_id=agent.id, payload={"taskKey": "new"}).run is not None


@pytest.mark.django_db
def test_removing_the_budget_resumes_the_agent():
    agent = _claude_agent(budget_monthly_cents=50)
    _finish(_running(agent), "0.5")

    agent_update(
        agent_id=agent.id, changes={"budget_monthly_cents": 0}, actor_type="user", actor_id="b"
    )

    agent.refresh_from_db()
    assert agent.status == "idle"


@pytest.mark.django_db
def test_lowering_the_budget_to_the_months_spend_pauses_the_agent():
    agent = _claude_agent(budget_monthly_cents=1000)
    _finish(_running(agent), "0.5")

    agent_update(
        agent_id=agent.id, changes={"budget_monthly_cents": 40}, actor_type="user", actor_id="b"
    )

    agent.refresh_from_db()
    assert (agent.status, agent.pause_reason) == ("paused", "budget")
    assert ActivityLog.objects.get(action="budget.exceeded").details["cause"] == "budget_changed"


@pytest.mark.django_db
def test_an_agent_whose_budget_is_spent_is_not_resumed_by_hand():
    agent = _claude_agent(budget_monthly_cents=50)
    _finish(_running(agent), "0.5")

    with pytest.raises(AgentStateConflict, match="monthly budget is spent"):
        agent_resume(agent_id=agent.id, actor_type="user", actor_id="board")

    agent.refresh_from_db()
    assert agent.status == "paused"


@pytest.mark.django_db(transaction=True)
def test_a_new_month_starts_the_spend_over_and_resumes_what_the_budget_paused(dispatched):
    company = make_company(budget_monthly_cents=100)
    agent = _claude_agent(company, budget_monthly_cents=100)
    _finish(_running(agent), "1.0")
    agent.refresh_from_db()
    company.refresh_from_db()
    assert (agent.status, company.status) == ("paused", "paused")
    waiting = make_run(agent, status="queued", context_snapshot={"taskKey": "waiting"})
    last_month = _month_before(timezone.now())
    Agent.objects.filter(pk=agent.pk).update(spend_month=last_month)
    Company.objects.filter(pk=company.pk).update(spend_month=last_month)

    result = budgets_month_rollover()

    assert (result.agents_resumed, result.companies_resumed) == ([agent.id], [company.id])
    agent.refresh_from_db()
    company.refresh_from_db()
    assert (agent.status, agent.spent_monthly_cents) == ("idle", 0)
    assert (company.status, company.spent_monthly_cents, company.pause_reason) == (
        "active",
        0,
        None,
    )
    causes = set(
        ActivityLog.objects.filter(action="budget.resumed").values_list("details__cause", flat=True)
    )
    assert causes == {"new_month"}
    assert str(waiting.id) in dispatched
    assert budgets_month_rollover().agents_resumed == []


@pytest.mark.django_db
def test_a_cost_of_last_month_finalized_late_does_not_count_in_the_new_month():
    company = make_company()
    now = timezone.now()
    company_spend_add(company_id=company.id, cents=30, month=spend_month_of(now), now=now)

    late = company_spend_add(company_id=company.id, cents=70, month=_month_before(now), now=now)

    company.refresh_from_db()
    assert late.spent_monthly_cents == company.spent_monthly_cents == 30
    assert company.spend_month == spend_month_of(now)


@pytest.mark.django_db
def test_reaching_the_companys_budget_pauses_it_and_refuses_wakes_of_all_its_agents(dispatched):
    company = make_company(budget_monthly_cents=100)
    spender, colleague = _claude_agent(company), _claude_agent(company)

    crossing = _finish(_running(spender), "1.25")

    company.refresh_from_db()
    assert (company.status, company.pause_reason, company.spent_monthly_cents) == (
        "paused",
        "budget",
        125,
    )
    assert crossing.events.filter(message__startswith="The company's monthly budget").exists()
    activity = ActivityLog.objects.get(action="budget.exceeded", entity_type="company")
    assert activity.details["scopeId"] == str(company.id)
    with pytest.raises(BudgetBlocked) as refused:
        wake_agent(agent_id=colleague.id, payload={"taskKey": "x"})
    assert refused.value.details["scopeType"] == "company"
    assert "Company is paused because its monthly budget is spent (125 of 100" in str(refused.value)


@pytest.mark.django_db(transaction=True)
def test_queued_runs_of_a_paused_company_wait_and_start_when_its_budget_is_raised(dispatched):
    company = make_company(budget_monthly_cents=100)
    agent = _claude_agent(company)
    _finish(_running(agent), "1.0")
    waiting = make_run(agent, status="queued", context_snapshot={"taskKey": "waiting"})

    assert run_claim(run_id=waiting.id).refusal == ClaimRefusal.COMPANY_PAUSED
    company_update(
        company=company,
        changes={"budget_monthly_cents": 1000},
        actor_type="user",
        actor_id="board",
    )

    company.refresh_from_db()
    assert (company.status, company.pause_reason) == ("active", None)
    assert ActivityLog.objects.filter(action="budget.resumed", entity_type="company").exists()
    assert dispatched == [str(waiting.id)]
    assert run_claim(run_id=waiting.id).claimed


@pytest.mark.django_db
def test_a_company_whose_budget_is_spent_cannot_be_set_active():
    company = make_company(budget_monthly_cents=100)
    _finish(_running(_claude_agent(company)), "1.0")
    company.refresh_from_db()

    with pytest.raises(CompanyBudgetSpent):
        company_update(
            company=company, changes={"status": "active"}, actor_type="user", actor_id="b"
        )


@pytest.mark.django_db
def test_timers_and_the_reconciler_leave_a_paused_companys_agents_alone(dispatched):
    company = make_company(status="paused", pause_reason="budget")
    agent = _claude_agent(
        company, runtime_config={"heartbeat": {"enabled": True, "intervalSec": 60}}
    )
    issue = make_issue(company, status="todo", assignee_agent_id=agent.id)
    make_run(agent, status="failed", context_snapshot={"issueId": str(issue.id)})

    timers = tick_timer_heartbeats(now=timezone.now() + timedelta(hours=1))
    reconciled = reconcile_stranded_assigned_issues()

    assert (timers.checked, timers.enqueued) == (0, 0)
    assert reconciled.dispatch_requeued == 0
    assert not AgentWakeupRequest.objects.filter(agent=agent).exists()


# --- Concurrency -------------------------------------------------------------------------------


def _run_with_claude_log(agent: Agent, index: int, cost_usd: float) -> tuple[HeartbeatRun, dict]:
    """A running run whose log holds a whole Claude run reporting cost_usd, and the exit
    report its shim would write."""
    run = make_run(agent, status="running", context_snapshot={"taskKey": f"task-{index}"})
    run.log_ref = run_log_ref(company_id=agent.company_id, agent_id=agent.id, run_id=run.id)
    HeartbeatRun.objects.filter(pk=run.pk).update(log_ref=run.log_ref)
    writer = RunLogWriter(
        path=run_log_path(run.log_ref), secrets=(), chunk_max_chars=65536, excerpt_max_chars=1024
    )
    session = f"session-{index}"
    events = [
        recorded.claude_init(session),
        recorded.claude_assistant_text(session, f"Working on task {index}."),
        recorded.claude_result(
            session,
            result=f"Task {index} done.",
            cost_usd=cost_usd,
            input_tokens=index,
            cached_input_tokens=0,
            output_tokens=1,
        ),
    ]
    writer.write("stdout", "".join(json.dumps(event) + "\n" for event in events).encode())
    log = writer.close()
    report = {
        "exitCode": 0,
        "log": {"bytes": log.log_bytes, "sha256": log.log_sha256, "stdoutExcerpt": None},
    }
    return run, report


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_twenty_runs_of_one_agent_reporting_cost_at_once_keep_the_monthly_spend_exact(
    run_logs, dispatched
):
    company = make_company()
    agent = _claude_agent(company, budget_monthly_cents=1000)
    # Costs that round differently (half up at .5 of a cent), 20 runs in all: 1004 cents.
    costs = [0.0421, 0.125, 1.005, 0.3333, 0.999] * 4
    runs = [_run_with_claude_log(agent, i, cost) for i, cost in enumerate(costs)]

    started = time.monotonic()
    results = race(
        [
            lambda run=run, report=report: run_finalize_from_report(run_id=run.id, report=report)
            for run, report in runs
        ]
    )
    took = time.monotonic() - started

    assert results == ["succeeded"] * 20, results
    cents = list(CostEvent.objects.filter(agent=agent).values_list("cost_cents", flat=True))
    assert len(cents) == 20 and sum(cents) == 1004
    assert _spend(agent) == (1004, 1004)
    assert AgentRuntimeState.objects.get(pk=agent.pk).total_cost_cents == 1004
    # The budget (1000 cents) was crossed by exactly one of them, and the agent paused once.
    agent.refresh_from_db()
    assert (agent.status, agent.pause_reason) == ("paused", "budget")
    assert ActivityLog.objects.filter(action="budget.exceeded").count() == 1
    print(f"\n20 concurrent finalizations of one agent with cost: {took:.2f} s")


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_runs_of_many_agents_reporting_cost_at_once_keep_the_companys_spend_exact(
    run_logs, dispatched
):
    company = make_company()
    agents = [_claude_agent(company) for _ in range(10)]
    runs = [_run_with_claude_log(agents[i % 10], i, 0.0421) for i in range(20)]

    results = race(
        [
            lambda run=run, report=report: run_finalize_from_report(run_id=run.id, report=report)
            for run, report in runs
        ]
    )

    assert results == ["succeeded"] * 20, results
    company.refresh_from_db()
    assert company.spent_monthly_cents == 80
    assert [_spend(agent)[0] for agent in agents] == [8] * 10
