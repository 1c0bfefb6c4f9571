"""Board tokens and agent keys made in the console: through the services, the value shown once
on the page that answers the creation, never in a message."""

from __future__ import annotations

import re

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from rest_framework.test import APIClient

from heartbeat.models import AgentApiKey
from heartbeat.services.agents import agent_key_create
from paperclip.models import ActivityLog, BoardApiToken
from paperclip.services import board_token_create

pytestmark = pytest.mark.django_db

ADD_BOARD_TOKEN = reverse("admin:paperclip_boardapitoken_add")
ADD_AGENT_KEY = reverse("admin:heartbeat_agentapikey_add")


def _shown_secret(response) -> str:
    return re.search(r'<code id="pc-secret">([^<]+)</code>', response.content.decode()).group(1)


def _bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_adding_a_board_token_shows_a_working_token_of_the_user_once(admin_client_, instance_admin):
    response = admin_client_.post(ADD_BOARD_TOKEN, {"name": "laptop"})

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = _shown_secret(response)
    me = _bearer(secret).get("/api/cli-auth/me").json()
    assert (me["userId"], me["source"]) == (str(instance_admin.pk), "board_key")
    token = BoardApiToken.objects.get()
    assert token.name == "laptop"
    assert not list(get_messages(response.wsgi_request))
    change_page = admin_client_.get(
        reverse("admin:paperclip_boardapitoken_change", args=[token.pk])
    )
    assert secret not in change_page.content.decode()


def test_a_board_member_adds_a_key_for_an_agent_of_their_company(
    board_client, board_user_a, agent_a
):
    response = board_client.post(ADD_AGENT_KEY, {"agent": agent_a.pk, "name": "ci"})

    assert response.status_code == 200
    me = _bearer(_shown_secret(response)).get("/api/agents/me").json()
    assert me["id"] == str(agent_a.id)
    assert AgentApiKey.objects.get().name == "ci"
    activity = ActivityLog.objects.get(action="agent.key_created")
    assert (activity.actor_type, activity.actor_id) == ("user", str(board_user_a.pk))


def test_a_board_member_cannot_add_a_key_for_another_companys_agent(board_client, agent_b):
    response = board_client.post(ADD_AGENT_KEY, {"agent": agent_b.pk, "name": "ci"})

    assert "Select a valid choice" in response.content.decode()
    assert not AgentApiKey.objects.exists()


def test_a_terminated_agent_gets_no_key_and_the_form_says_why(admin_client_, agent_a):
    agent_a.status = "terminated"
    agent_a.save(update_fields=["status"])

    response = admin_client_.post(ADD_AGENT_KEY, {"agent": agent_a.pk, "name": "ci"})

    assert "A terminated agent gets no new keys" in response.content.decode()
    assert not AgentApiKey.objects.exists()


def test_saving_a_board_tokens_page_neither_mints_a_second_token_nor_changes_it(
    admin_client_, instance_admin
):
    token, _ = board_token_create(user_id=instance_admin.pk, name="laptop")
    change = reverse("admin:paperclip_boardapitoken_change", args=[token.pk])

    # What revoking by hand on the change page looked like: it used to create a second,
    # working token named "renamed" and leave the first one working.
    response = admin_client_.post(
        change,
        {
            "name": "renamed",
            "user": instance_admin.pk,
            "revoked_at_0": "2026-11-30",
            "revoked_at_1": "12:00:00",
        },
    )

    assert response.status_code == 403
    assert list(BoardApiToken.objects.values_list("name", "revoked_at")) == [("laptop", None)]


def test_revoking_board_tokens_in_the_console_stops_them_at_once(admin_client_, instance_admin):
    token, secret = board_token_create(user_id=instance_admin.pk, name="laptop")

    response = admin_client_.post(
        reverse("admin:paperclip_boardapitoken_changelist"),
        {"action": "revoke_selected", "_selected_action": [str(token.pk)]},
    )

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert _bearer(secret).get("/api/cli-auth/me").status_code == 401


def test_a_board_member_revokes_an_agent_key_through_its_service(
    board_client, board_user_a, agent_a
):
    created = agent_key_create(agent_id=agent_a.pk, name="ci", actor_type="user", actor_id="x")
    changelist = reverse("admin:heartbeat_agentapikey_changelist")

    board_client.post(
        changelist, {"action": "revoke_selected", "_selected_action": [str(created.key.pk)]}
    )

    created.key.refresh_from_db()
    assert created.key.revoked_at is not None
    assert AgentApiKey.objects.count() == 1
    activity = ActivityLog.objects.get(action="agent.key_revoked")
    assert (activity.actor_type, activity.actor_id) == ("user", str(board_user_a.pk))
    assert _bearer(created.secret).get("/api/agents/me").status_code == 401


def test_a_credential_is_never_deleted_in_the_console(admin_client_, instance_admin):
    token, _ = board_token_create(user_id=instance_admin.pk, name="laptop")

    response = admin_client_.post(
        reverse("admin:paperclip_boardapitoken_delete", args=[token.pk]), {"post": "yes"}
    )

    assert response.status_code == 403
    assert BoardApiToken.objects.filter(pk=token.pk).exists()
