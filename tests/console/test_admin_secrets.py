"""The agent page of the admin never shows adapter secrets (env and headers values), and saving
the page without touching them keeps them."""

import json

import pytest
from django.urls import reverse

from heartbeat.run_log import REDACTED
from tests.factories import make_agent

CONFIG = {"command": "codex", "env": {"OPENAI_KEY": "sk-live-value-1", "MODE": "fast-mode"}}


@pytest.fixture
def configured(company_a):
    return make_agent(company_a, name="ada", adapter_config=CONFIG)


def _agent_form(agent, adapter_config) -> dict:
    return {
        "name": agent.name,
        "role": agent.role,
        "adapter_type": agent.adapter_type,
        "adapter_config": json.dumps(adapter_config),
        "runtime_config": "{}",
        "budget_monthly_cents": "0",
        "metadata": "null",
    }


def _change(client, agent, adapter_config):
    url = reverse("admin:heartbeat_agent_change", args=[agent.pk])
    return client.post(url, _agent_form(agent, adapter_config))


@pytest.mark.django_db
def test_agent_page_shows_secret_names_but_not_values(board_client, configured):
    page = board_client.get(reverse("admin:heartbeat_agent_change", args=[configured.pk]))
    html = page.content.decode()
    assert "OPENAI_KEY" in html and REDACTED in html
    assert "sk-live-value-1" not in html and "fast-mode" not in html


@pytest.mark.django_db
def test_saving_with_masked_values_keeps_the_stored_ones(board_client, configured):
    masked = {**CONFIG, "env": {"OPENAI_KEY": REDACTED, "MODE": REDACTED}, "cwd": "/srv"}
    response = _change(board_client, configured, masked)
    assert response.status_code == 302
    configured.refresh_from_db()
    assert configured.adapter_config == {**CONFIG, "cwd": "/srv"}


@pytest.mark.django_db
def test_a_typed_value_replaces_the_stored_one(board_client, configured):
    typed = {**CONFIG, "env": {"OPENAI_KEY": "sk-live-value-2", "MODE": REDACTED}}
    assert _change(board_client, configured, typed).status_code == 302
    configured.refresh_from_db()
    assert configured.adapter_config["env"] == {
        "OPENAI_KEY": "sk-live-value-2",
        "MODE": "fast-mode",
    }


@pytest.mark.django_db
def test_a_masked_value_for_a_new_name_is_a_form_error(board_client, configured):
    config = {**CONFIG, "env": {**CONFIG["env"], "NEW_KEY": REDACTED}}
    response = _change(board_client, configured, config)
    assert response.status_code == 200
    assert "type a value for NEW_KEY" in response.content.decode()
    configured.refresh_from_db()
    assert configured.adapter_config == CONFIG
