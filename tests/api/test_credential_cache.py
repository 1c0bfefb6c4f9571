"""Credentials across processes: the web server caches agent and user rows by their row
version, and a change written by another process (here, the test's) is seen by its very next
request: a revoked key, a terminated agent, an ended run, a revoked board token are refused,
and a changed agent is served as it is now."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from django.contrib.auth import get_user_model

from heartbeat.models import HeartbeatRun
from heartbeat.services import (
    agent_key_create,
    agent_key_revoke,
    agent_terminate,
    agent_update,
    cancel_run,
)
from paperclip.credentials import run_credential_issue, secret_generate
from paperclip.models import BoardApiToken, CompanyMembership
from paperclip.services import board_token_revoke
from tests.cluster import running_web_server
from tests.factories import make_agent, make_company, make_run

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]


def _get(origin: str, path: str, secret: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{origin}{path}", headers={"Authorization": f"Bearer {secret}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _agent_with_key():
    agent = make_agent(make_company(), name="Cached")
    created = agent_key_create(agent_id=agent.id, name="k", actor_type="system", actor_id="t")
    return agent, created


def test_a_key_revoked_in_another_process_is_refused_at_the_next_request(tmp_path):
    agent, created = _agent_with_key()
    with running_web_server(tmp_path) as origin:
        assert _get(origin, "/api/agents/me", created.secret)[0] == 200
        agent_key_revoke(
            agent_id=agent.id, key_id=created.key.id, actor_type="system", actor_id="t"
        )
        status, body = _get(origin, "/api/agents/me", created.secret)
    assert (status, body["error"]) == (401, "API key revoked")


def test_an_agent_terminated_in_another_process_is_refused_at_the_next_request(tmp_path):
    agent, created = _agent_with_key()
    with running_web_server(tmp_path) as origin:
        assert _get(origin, "/api/agents/me/inbox-lite", created.secret)[0] == 200
        agent_terminate(agent_id=agent.id, actor_type="system", actor_id="t")
        status, body = _get(origin, "/api/agents/me/inbox-lite", created.secret)
    assert status == 401
    assert "terminated" in body["error"]


def test_a_run_credential_is_refused_once_its_run_ended_in_another_process(tmp_path):
    agent = make_agent(make_company(), name="Runner")
    run = make_run(agent, status=HeartbeatRun.Status.QUEUED)
    secret = run_credential_issue(
        run_id=str(run.id), agent_id=str(agent.id), company_id=str(agent.company_id)
    )
    with running_web_server(tmp_path) as origin:
        assert _get(origin, "/api/agents/me", secret)[0] == 200
        cancel_run(run.id)
        status, body = _get(origin, "/api/agents/me", secret)
    assert HeartbeatRun.objects.get(pk=run.id).status == HeartbeatRun.Status.CANCELLED
    assert (status, body["error"]) == (401, "Run credential expired: its run is not active")


def test_an_agent_changed_in_another_process_is_served_as_it_is_now(tmp_path):
    agent, created = _agent_with_key()
    with running_web_server(tmp_path) as origin:
        assert _get(origin, "/api/agents/me", created.secret)[1]["title"] is None
        agent_update(
            agent_id=agent.id, changes={"title": "Staff"}, actor_type="system", actor_id="t"
        )
        status, body = _get(origin, "/api/agents/me", created.secret)
    assert (status, body["title"]) == (200, "Staff")


def test_a_board_token_revoked_in_another_process_is_refused_at_the_next_request(tmp_path):
    company = make_company()
    user = get_user_model().objects.create_user(username="cached-board")
    CompanyMembership.objects.create(company=company, user=user)
    secret, prefix, digest = secret_generate("pcbt_")
    token = BoardApiToken.objects.create(
        user=user, name="t", token_prefix=prefix, token_hash=digest
    )
    with running_web_server(tmp_path) as origin:
        assert _get(origin, f"/api/companies/{company.id}", secret)[0] == 200
        board_token_revoke(token=token)
        status, _ = _get(origin, f"/api/companies/{company.id}", secret)
    assert status == 401
