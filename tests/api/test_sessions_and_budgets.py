"""The task-session routes (reference section 7) and how budgets answer over the API."""

from __future__ import annotations

import pytest
from django.utils import timezone

from heartbeat.models import Agent, AgentRuntimeState, AgentTaskSession, AgentWakeupRequest
from paperclip.models import ActivityLog, Company, spend_month_of

pytestmark = pytest.mark.django_db


def _session(agent, task_key: str, session_id: str) -> AgentTaskSession:
    return AgentTaskSession.objects.create(
        company_id=agent.company_id,
        agent=agent,
        adapter_type="claude_local",
        task_key=task_key,
        session_id=session_id,
    )


def test_board_lists_the_agents_sessions_per_task(side_a):
    _session(side_a.agent, "issue-1", "s-1")

    response = side_a.board.get(f"/api/agents/{side_a.agent.id}/task-sessions")

    assert response.status_code == 200
    (session,) = response.json()
    assert {key: session[key] for key in ("taskKey", "sessionId", "adapterType")} == {
        "taskKey": "issue-1",
        "sessionId": "s-1",
        "adapterType": "claude_local",
    }
    assert (session["sessionDisplayId"], session["sessionParamsJson"]) == (
        "s-1",
        {"sessionId": "s-1"},
    )


def test_task_sessions_are_for_the_agents_own_board_only(side_a, side_b):
    _session(side_a.agent, "issue-1", "s-1")
    url = f"/api/agents/{side_a.agent.id}/task-sessions"
    assert side_b.board.get(url).status_code == 404
    assert side_a.agent_client.get(url).status_code == 403


def test_reset_of_one_task_drops_only_its_session(side_a):
    _session(side_a.agent, "issue-1", "s-1")
    _session(side_a.agent, "issue-2", "s-2")

    response = side_a.board.post(
        f"/api/agents/{side_a.agent.id}/runtime-state/reset-session",
        {"taskKey": "issue-1"},
        format="json",
    )

    assert response.status_code == 200 and response.json() is None
    assert list(AgentTaskSession.objects.values_list("task_key", flat=True)) == ["issue-2"]
    activity = ActivityLog.objects.get(action="agent.runtime_session_reset")
    assert activity.details == {"taskKey": "issue-1", "sessionsCleared": 1}


def test_reset_without_a_task_drops_every_session_of_the_agent(side_a):
    _session(side_a.agent, "issue-1", "s-1")
    AgentRuntimeState.objects.create(
        agent=side_a.agent, company=side_a.company, adapter_type="claude_local", session_id="s-1"
    )

    response = side_a.board.post(
        f"/api/agents/{side_a.agent.id}/runtime-state/reset-session", {}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["sessionId"] is None
    assert not AgentTaskSession.objects.exists()


def test_wake_of_an_agent_paused_for_its_budget_answers_409_with_the_reason(side_a):
    agent = side_a.agent
    Agent.objects.filter(pk=agent.pk).update(
        status="paused",
        pause_reason="budget",
        budget_monthly_cents=100,
        spent_monthly_cents=130,
        spend_month=spend_month_of(timezone.now()),
    )

    response = side_a.board.post(f"/api/agents/{agent.id}/wakeup", {}, format="json")

    assert response.status_code == 409
    body = response.json()
    assert body["error"].startswith("Agent is paused because its monthly budget is spent")
    assert body["details"] == {
        "scopeType": "agent",
        "scopeId": str(agent.id),
        "spentMonthlyCents": 130,
        "budgetMonthlyCents": 100,
    }
    assert AgentWakeupRequest.objects.get(agent=agent).reason == "budget.blocked"


def test_a_paused_companys_agents_are_not_woken(side_a):
    Company.objects.filter(pk=side_a.company.pk).update(status="paused", pause_reason="holiday")

    response = side_a.board.post(f"/api/agents/{side_a.agent.id}/wakeup", {}, format="json")

    assert response.status_code == 409
    assert response.json()["error"] == "Company is paused and cannot start new work"
    assert response.json()["details"]["scopeType"] == "company"


def test_company_whose_budget_is_spent_cannot_be_set_active_over_the_api(side_a):
    company = side_a.company
    Company.objects.filter(pk=company.pk).update(
        status="paused",
        pause_reason="budget",
        budget_monthly_cents=100,
        spent_monthly_cents=100,
        spend_month=spend_month_of(timezone.now()),
    )

    response = side_a.board.patch(
        f"/api/companies/{company.id}", {"status": "active"}, format="json"
    )

    assert response.status_code == 409
    assert "monthly budget is spent" in response.json()["error"]
    assert response.json()["details"]["spentMonthlyCents"] == 100

    raised = side_a.board.patch(
        f"/api/companies/{company.id}", {"budgetMonthlyCents": 500}, format="json"
    )

    assert raised.status_code == 200
    assert (raised.json()["status"], raised.json()["pauseReason"]) == ("active", None)
