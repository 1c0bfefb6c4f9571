"""Agents: CRUD under a company, me, inbox-lite, keys, runtime state."""

from __future__ import annotations

import pytest

from heartbeat.models import Agent, AgentApiKey, AgentRuntimeState
from paperclip.models import ActivityLog
from tests.api.conftest import agent_client_for
from tests.factories import make_agent, make_issue

pytestmark = pytest.mark.django_db


def test_company_agents_are_listed_for_board_and_agents(side_a):
    other = make_agent(side_a.company)
    for client in (side_a.board, side_a.agent_client):
        ids = {a["id"] for a in client.get(f"/api/companies/{side_a.company.id}/agents").json()}
        assert ids == {str(side_a.agent.id), str(other.id)}


def test_board_creates_an_idle_agent(side_a):
    response = side_a.board.post(
        f"/api/companies/{side_a.company.id}/agents",
        {
            "name": "Coder",
            "role": "engineer",
            "adapterType": "process",
            "adapterConfig": {"command": "true"},
            "runtimeConfig": {"heartbeat": {"maxConcurrentRuns": 2}},
        },
        format="json",
    )
    assert response.status_code == 201
    agent = Agent.objects.get(pk=response.json()["id"])
    assert (agent.status, agent.adapter_config) == ("idle", {"command": "true"})
    assert response.json()["runtimeConfig"] == {"heartbeat": {"maxConcurrentRuns": 2}}
    assert ActivityLog.objects.filter(entity_id=str(agent.id), action="agent.created").exists()


def test_agents_cannot_create_agents(side_a):
    response = side_a.agent_client.post(
        f"/api/companies/{side_a.company.id}/agents", {"name": "Clone"}, format="json"
    )
    assert response.status_code == 403


def test_agent_config_must_be_an_object(side_a):
    response = side_a.board.post(
        f"/api/companies/{side_a.company.id}/agents",
        {"name": "Bad", "adapterConfig": ["not", "an", "object"]},
        format="json",
    )
    assert response.status_code == 400
    assert "adapterConfig" in response.json()["details"]


def test_reports_to_another_company_answers_400(side_a, side_b):
    response = side_a.board.post(
        f"/api/companies/{side_a.company.id}/agents",
        {"name": "Spy", "reportsTo": str(side_b.agent.id)},
        format="json",
    )
    assert response.status_code == 400
    assert "reportsTo" in response.json()["details"]


def test_board_updates_only_the_named_fields(side_a):
    response = side_a.board.patch(
        f"/api/agents/{side_a.agent.id}", {"title": "Lead"}, format="json"
    )
    assert response.status_code == 200
    side_a.agent.refresh_from_db()
    assert (side_a.agent.title, side_a.agent.role) == ("Lead", "engineer")


def test_agents_cannot_update_agents(side_a):
    response = side_a.agent_client.patch(
        f"/api/agents/{side_a.agent.id}", {"title": "Boss"}, format="json"
    )
    assert response.status_code == 403


def test_me_is_for_agents_only(side_a):
    response = side_a.board.get("/api/agents/me")
    assert response.status_code == 403
    assert response.json()["error"] == "Agent authentication required"


def test_inbox_lists_open_assigned_issues_in_progress_first_then_priority(side_a):
    me = side_a.agent.id
    low = make_issue(side_a.company, status="todo", priority="low", assignee_agent_id=me)
    critical = make_issue(side_a.company, status="todo", priority="critical", assignee_agent_id=me)
    working = make_issue(side_a.company, status="in_progress", assignee_agent_id=me)
    blocked = make_issue(side_a.company, status="blocked", assignee_agent_id=me)
    make_issue(side_a.company, status="done", assignee_agent_id=me)
    make_issue(side_a.company, status="backlog", assignee_agent_id=me)
    make_issue(side_a.company, status="todo")
    response = side_a.agent_client.get("/api/agents/me/inbox-lite")
    assert response.status_code == 200
    assert [row["id"] for row in response.json()] == [
        str(working.id),
        str(critical.id),
        str(low.id),
        str(blocked.id),
    ]
    assert set(response.json()[0]) >= {"identifier", "title", "status", "priority", "updatedAt"}


def test_board_creates_lists_and_revokes_agent_keys(side_a):
    url = f"/api/agents/{side_a.agent.id}/keys"
    created = side_a.board.post(url, {"name": "laptop"}, format="json")
    assert created.status_code == 201
    secret = created.json()["token"]
    assert secret.startswith("pcak_")
    assert created.json()["key"] == secret
    assert not AgentApiKey.objects.filter(key_hash=secret).exists()
    assert created.json()["id"] in {k["id"] for k in side_a.board.get(url).json()}
    assert all("key" not in k and "token" not in k for k in side_a.board.get(url).json())
    revoked = side_a.board.delete(f"{url}/{created.json()['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["revokedAt"] is not None


def test_agents_cannot_manage_keys(side_a):
    response = side_a.agent_client.post(f"/api/agents/{side_a.agent.id}/keys", {}, format="json")
    assert response.status_code == 403


def test_terminated_agents_get_no_new_keys(side_a):
    Agent.objects.filter(pk=side_a.agent.pk).update(status="terminated")
    response = side_a.board.post(f"/api/agents/{side_a.agent.id}/keys", {}, format="json")
    assert response.status_code == 409


def test_runtime_state_is_404_until_the_first_run(side_a):
    url = f"/api/agents/{side_a.agent.id}/runtime-state"
    assert side_a.board.get(url).status_code == 404
    AgentRuntimeState.objects.create(
        agent=side_a.agent, company=side_a.company, adapter_type="process", session_id="s1"
    )
    response = side_a.agent_client.get(url)
    assert response.status_code == 200
    assert response.json()["sessionId"] == "s1"


def test_agent_key_of_one_agent_reads_a_colleague(side_a):
    colleague = make_agent(side_a.company)
    response = agent_client_for(colleague).get(f"/api/agents/{side_a.agent.id}")
    assert response.status_code == 200
    assert response.json()["name"] == side_a.agent.name


# Agents by name


def test_agent_is_found_by_its_short_name_in_a_company(side_a):
    response = side_a.board.get("/api/agents/alpha-engineer", {"companyId": str(side_a.company.id)})
    assert response.status_code == 200
    assert response.json()["id"] == str(side_a.agent.id)


def test_agent_short_name_of_two_agents_answers_409(side_a):
    make_agent(side_a.company, name="Alpha  Engineer")
    response = side_a.board.get("/api/agents/alpha-engineer", {"companyId": str(side_a.company.id)})
    assert response.status_code == 409
    assert len(response.json()["details"]["agentIds"]) == 2


def test_agent_short_name_in_another_company_answers_404(side_a, side_b):
    response = side_a.board.get("/api/agents/beta-engineer", {"companyId": str(side_b.company.id)})
    assert response.status_code == 404


def test_terminated_agents_are_not_found_by_name(side_a):
    Agent.objects.filter(pk=side_a.agent.pk).update(status="terminated")
    response = side_a.board.get("/api/agents/alpha-engineer", {"companyId": str(side_a.company.id)})
    assert response.status_code == 404
