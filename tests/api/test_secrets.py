"""Who reads an agent's adapter secrets: the board reads the values of adapterConfig.env (and
http headers); the agent itself and the company's other agents read the names only; another
company does not see the agent at all."""

from __future__ import annotations

import pytest

from heartbeat.run_log import REDACTED
from tests.api.conftest import agent_client_for
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

CONFIG = {
    "command": "codex",
    "env": {"OPENAI_KEY": "sk-live-value-1", "MODE": "fast"},
    "headers": {"Authorization": "Bearer hook-secret-1"},
}
MASKED = {
    **CONFIG,
    "env": {"OPENAI_KEY": REDACTED, "MODE": REDACTED},
    "headers": {"Authorization": REDACTED},
}


@pytest.fixture
def configured(side_a):
    side_a.agent.adapter_config = CONFIG
    side_a.agent.save()
    return side_a.agent


def test_board_member_reads_the_values(side_a, configured):
    body = side_a.board.get(f"/api/agents/{configured.id}").json()
    assert body["adapterConfig"] == CONFIG


def test_board_member_reads_the_values_in_the_company_list(side_a, configured):
    agents = side_a.board.get(f"/api/companies/{side_a.company.id}/agents").json()
    assert agents[0]["adapterConfig"] == CONFIG


def test_the_agent_itself_reads_the_names_only(side_a, configured):
    assert side_a.agent_client.get(f"/api/agents/{configured.id}").json()["adapterConfig"] == (
        MASKED
    )
    assert side_a.agent_client.get("/api/agents/me").json()["adapterConfig"] == MASKED


def test_another_agent_of_the_company_reads_the_names_only(side_a, configured):
    colleague = agent_client_for(make_agent(side_a.company, name="colleague"))
    assert colleague.get(f"/api/agents/{configured.id}").json()["adapterConfig"] == MASKED
    listed = colleague.get(f"/api/companies/{side_a.company.id}/agents").json()
    assert next(a for a in listed if a["id"] == str(configured.id))["adapterConfig"] == MASKED


def test_another_company_does_not_see_the_agent(side_b, configured):
    for client in (side_b.board, side_b.agent_client):
        response = client.get(f"/api/agents/{configured.id}")
        assert response.status_code == 404
        assert "sk-live-value-1" not in response.content.decode()


def test_values_are_write_only_for_agents_and_stored_as_sent_by_the_board(side_a, configured):
    config = {**CONFIG, "env": {"OPENAI_KEY": "sk-live-value-2"}}
    response = side_a.board.patch(
        f"/api/agents/{configured.id}", {"adapterConfig": config}, format="json"
    )
    assert response.json()["adapterConfig"]["env"] == {"OPENAI_KEY": "sk-live-value-2"}
    configured.refresh_from_db()
    assert configured.adapter_config["env"] == {"OPENAI_KEY": "sk-live-value-2"}
    body = side_a.agent_client.get("/api/agents/me").json()
    assert body["adapterConfig"]["env"] == {"OPENAI_KEY": REDACTED}
