"""What the board sees of sessions, usage, cost and budgets: the run page, the dashboard, the
activity log, and the console pages of sessions and cost records."""

from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from heartbeat.models import Agent, AgentTaskSession, CostEvent
from paperclip.models import ActivityLog, Company, spend_month_of
from tests.factories import make_agent, make_issue, make_run

FRAGMENT = reverse("heartbeat-dashboard-fragment")


def _page(client, url) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def _budget_paused(agent: Agent, *, spent: int, budget: int) -> None:
    Agent.objects.filter(pk=agent.pk).update(
        status="paused",
        pause_reason="budget",
        spent_monthly_cents=spent,
        budget_monthly_cents=budget,
        spend_month=spend_month_of(timezone.now()),
    )


@pytest.mark.django_db
def test_run_page_shows_the_summary_usage_cost_and_session(admin_client_, agent_a):
    run = make_run(
        agent_a,
        status="succeeded",
        result_json={"summary": "Fixed the typo.\nChecked the build.", "numTurns": 3},
        usage_json={
            "usageBasis": "per_run",
            "inputTokens": 12,
            "cachedInputTokens": 28000,
            "outputTokens": 240,
            "costUsd": 0.0421,
            "costCents": 4,
            "model": "claude-sonnet-4-5",
        },
        session_id_before="s-1",
        session_id_after="s-1",
    )

    page = _page(admin_client_, reverse("admin:heartbeat_heartbeatrun_change", args=[run.pk]))

    assert '<div class="pc-summary">Fixed the typo.\nChecked the build.</div>' in page
    assert "12 input (28,000 cached) and 240 output tokens; $0.0421 (4 cents); claude-sonnet" in (
        page
    )
    assert "resumed s-1" in page


@pytest.mark.django_db
def test_queued_run_of_an_agent_paused_for_its_budget_says_when_it_starts(admin_client_, agent_a):
    _budget_paused(agent_a, spent=120, budget=100)
    run = make_run(agent_a, status="queued")

    page = _page(admin_client_, reverse("admin:heartbeat_heartbeatrun_change", args=[run.pk]))

    assert "paused because its monthly budget is spent" in page
    assert "budget is raised or the month ends" in page


@pytest.mark.django_db
def test_failed_resume_says_a_fresh_session_retry_follows(admin_client_, agent_a):
    failed = make_run(agent_a, status="failed", error_code="session_unknown")
    retry = make_run(agent_a, status="queued", retry_of_run=failed)

    page = _page(admin_client_, reverse("admin:heartbeat_heartbeatrun_change", args=[failed.pk]))

    assert f"fresh session {str(retry.pk)[:8]} is queued" in page


@pytest.mark.django_db
def test_dashboard_counts_and_lists_what_the_budget_paused_first(admin_client_, agent_a):
    _budget_paused(agent_a, spent=120, budget=100)
    make_agent(agent_a.company, name="thrifty", budget_monthly_cents=1000)
    Company.objects.filter(pk=agent_a.company_id).update(budget_monthly_cents=5000)

    page = _page(admin_client_, FRAGMENT)

    counter = page.split('id="pc-budget-paused-count"')[1].split("</li>")[0]
    assert '<span class="pc-count">1</span> paused for budget' in counter
    budgets = page.split('id="pc-budgets"')[1].split('id="pc-supervisors"')[0]
    rows = budgets.split("<tr")[2:]
    assert "ada" in rows[0] and "120 cents" in rows[0] and "paused: budget spent" in rows[0]
    assert "120%" in rows[0]
    assert any("thrifty" in row and "0%" in row for row in rows)
    assert any("Acme" in row and "5000 cents" in row for row in rows)


@pytest.mark.django_db
def test_board_sees_only_its_companies_budgets(board_client, agent_a, agent_b):
    _budget_paused(agent_a, spent=120, budget=100)
    _budget_paused(agent_b, spent=99, budget=50)

    budgets = _page(board_client, FRAGMENT).split('id="pc-budgets"')[1]

    assert "ada" in budgets and "bob" not in budgets


@pytest.mark.django_db
def test_budget_crossing_is_in_the_activity_log(admin_client_, agent_a):
    ActivityLog.objects.create(
        company_id=agent_a.company_id,
        action="budget.exceeded",
        entity_type="agent",
        entity_id=str(agent_a.id),
        agent=agent_a,
        details={"spentMonthlyCents": 120, "budgetMonthlyCents": 100},
    )

    page = _page(admin_client_, reverse("admin:paperclip_activitylog_changelist"))

    assert "budget.exceeded" in page


@pytest.mark.django_db
def test_cost_records_and_sessions_have_console_pages_for_the_board(board_client, agent_a):
    run = make_run(agent_a, status="succeeded")
    CostEvent.objects.create(
        company_id=agent_a.company_id,
        agent=agent_a,
        run=run,
        occurred_at=timezone.now(),
        month=spend_month_of(timezone.now()),
        provider="anthropic",
        model="claude-sonnet-4-5",
        cost_usd=Decimal("0.0421"),
        cost_cents=4,
    )
    AgentTaskSession.objects.create(
        company_id=agent_a.company_id,
        agent=agent_a,
        adapter_type="claude_local",
        task_key="issue-1",
        session_id="s-1",
        last_run=run,
    )

    costs = _page(board_client, reverse("admin:heartbeat_costevent_changelist"))
    sessions = _page(board_client, reverse("admin:heartbeat_agenttasksession_changelist"))

    assert "claude-sonnet-4-5" in costs and "0.0421" in costs
    assert "issue-1" in sessions and "s-1" in sessions


@pytest.mark.django_db
def test_board_resets_a_session_from_the_console(board_client, agent_a):
    session = AgentTaskSession.objects.create(
        company_id=agent_a.company_id,
        agent=agent_a,
        adapter_type="claude_local",
        task_key="issue-1",
        session_id="s-1",
    )

    response = board_client.post(
        reverse("admin:heartbeat_agenttasksession_changelist"),
        {"action": "reset_sessions", "_selected_action": [str(session.pk)]},
    )

    assert response.status_code == 302
    assert not AgentTaskSession.objects.exists()
    assert ActivityLog.objects.filter(action="agent.runtime_session_reset").exists()


@pytest.mark.django_db
def test_other_companies_cost_records_are_not_shown(board_client, agent_b):
    CostEvent.objects.create(
        company_id=agent_b.company_id,
        agent=agent_b,
        run=make_run(agent_b, status="succeeded"),
        occurred_at=timezone.now(),
        month=spend_month_of(timezone.now()),
        provider="openai",
        model="secret-model",
    )

    assert "secret-model" not in _page(
        board_client, reverse("admin:heartbeat_costevent_changelist")
    )


@pytest.mark.django_db
def test_issues_of_a_paused_company_are_not_called_stranded(admin_client_, agent_a):
    issue = make_issue(agent_a.company, status="todo", assignee_agent_id=agent_a.id)
    make_run(agent_a, status="failed", context_snapshot={"issueId": str(issue.id)})
    stranded = _page(admin_client_, FRAGMENT).split('id="pc-stranded"')[1]
    assert issue.identifier in stranded.split('id="pc-escalated"')[0]

    Company.objects.filter(pk=agent_a.company_id).update(status="paused", pause_reason="budget")

    stranded = _page(admin_client_, FRAGMENT).split('id="pc-stranded"')[1]
    assert issue.identifier not in stranded.split('id="pc-escalated"')[0]
