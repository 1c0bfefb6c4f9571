"""Authentication: board sessions and tokens, agent keys, run credentials, run linking."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from heartbeat.models import AgentApiKey, HeartbeatRun
from paperclip.credentials import run_credential_issue
from paperclip.models import BoardApiToken
from tests.api.conftest import agent_client_for, board_client_for
from tests.factories import make_agent, make_run

pytestmark = pytest.mark.django_db


def bearer(secret: str, **headers) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}", **headers)
    return client


def test_missing_credentials_answer_401_json_with_bearer_challenge(anonymous):
    response = anonymous.get("/api/agents/me")
    assert response.status_code == 401
    assert response.json() == {
        "error": "Authentication credentials were not provided.",
        "details": None,
    }
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_unknown_api_key_answers_401(db):
    response = bearer("pcak_not-a-key").get("/api/agents/me")
    assert response.status_code == 401
    assert response.json()["error"] == "Invalid API key"


def test_agent_key_identifies_the_agent(side_a):
    response = side_a.agent_client.get("/api/agents/me")
    assert response.status_code == 200
    assert response.json()["id"] == str(side_a.agent.id)
    assert response.json()["companyId"] == str(side_a.company.id)


def test_revoked_agent_key_answers_401(side_a):
    AgentApiKey.objects.filter(agent=side_a.agent).update(revoked_at=timezone.now())
    assert side_a.agent_client.get("/api/agents/me").status_code == 401


@pytest.mark.parametrize("status", ["terminated", "pending_approval"])
def test_keys_of_terminated_or_pending_agents_answer_401(side_a, status):
    side_a.agent.status = status
    side_a.agent.save()
    response = side_a.agent_client.get("/api/agents/me")
    assert response.status_code == 401
    assert status in response.json()["error"]


def test_run_credential_works_while_its_run_is_running(side_a):
    run = make_run(side_a.agent, status=HeartbeatRun.Status.RUNNING)
    secret = run_credential_issue(
        run_id=run.id, agent_id=side_a.agent.id, company_id=side_a.company.id
    )
    response = bearer(secret).get("/api/agents/me")
    assert response.status_code == 200
    assert response.json()["id"] == str(side_a.agent.id)


def test_run_credential_expires_when_its_run_finishes(side_a):
    run = make_run(side_a.agent, status=HeartbeatRun.Status.SUCCEEDED)
    secret = run_credential_issue(
        run_id=run.id, agent_id=side_a.agent.id, company_id=side_a.company.id
    )
    response = bearer(secret).get("/api/agents/me")
    assert response.status_code == 401
    assert "not active" in response.json()["error"]


def test_forged_run_credential_answers_401(side_a):
    run = make_run(side_a.agent, status=HeartbeatRun.Status.RUNNING)
    secret = run_credential_issue(
        run_id=run.id, agent_id=side_a.agent.id, company_id=side_a.company.id
    )
    assert bearer(secret[:-2] + "xx").get("/api/agents/me").status_code == 401


def test_board_token_authenticates_the_board_user(side_a):
    response = side_a.board.get("/api/companies")
    assert response.status_code == 200
    assert [c["id"] for c in response.json()] == [str(side_a.company.id)]


def test_revoked_board_token_answers_401(side_a):
    BoardApiToken.objects.update(revoked_at=timezone.now())
    assert side_a.board.get("/api/companies").status_code == 401


def test_board_can_create_and_revoke_personal_tokens(side_a):
    created = side_a.board.post("/api/board/tokens", {"name": "ci"}, format="json")
    assert created.status_code == 201
    secret = created.json()["token"]
    assert secret.startswith("pcbt_")
    assert BoardApiToken.objects.filter(token_hash__contains=secret).count() == 0
    assert bearer(secret).get("/api/companies").status_code == 200
    revoked = side_a.board.delete(f"/api/board/tokens/{created.json()['id']}")
    assert revoked.status_code == 200
    assert bearer(secret).get("/api/companies").status_code == 401


def test_session_writes_need_the_csrf_token(side_a):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(side_a.user)
    url = f"/api/companies/{side_a.company.id}"
    assert client.get(url).status_code == 200
    refused = client.patch(url, {"name": "Renamed"}, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]


def test_session_writes_with_the_csrf_token_succeed(side_a):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(side_a.user)
    client.get("/admin/login/")
    token = client.cookies["csrftoken"].value
    response = client.patch(
        f"/api/companies/{side_a.company.id}",
        {"name": "Renamed"},
        format="json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert response.status_code == 200
    assert response.json()["name"] == "Renamed"


def test_run_header_naming_another_agents_run_is_refused(side_a):
    other = make_agent(side_a.company)
    run = make_run(other, status=HeartbeatRun.Status.RUNNING)
    client = agent_client_for(side_a.agent, run_id=run.id)
    response = client.get("/api/agents/me")
    assert response.status_code == 403
    assert "does not name a run of this agent" in response.json()["error"]


def test_malformed_run_header_answers_400_naming_the_header(side_a):
    client = agent_client_for(side_a.agent, run_id="not-a-uuid")
    response = client.get("/api/agents/me")
    assert response.status_code == 400
    assert "X-Paperclip-Run-Id" in response.json()["details"]


def test_board_actors_cannot_link_writes_to_runs(side_a):
    run = make_run(side_a.agent, status=HeartbeatRun.Status.RUNNING)
    client = board_client_for(side_a.user, HTTP_X_PAPERCLIP_RUN_ID=str(run.id))
    response = client.get("/api/companies")
    assert response.status_code == 403
    assert "Only agents link writes" in response.json()["error"]


def test_inactive_board_user_token_answers_401(side_a):
    get_user_model().objects.filter(pk=side_a.user.pk).update(is_active=False)
    assert side_a.board.get("/api/companies").status_code == 401
