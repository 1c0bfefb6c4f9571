"""Actors for the API tests: two companies, each with a board member and an agent with a key;
an instance admin; and clients authenticated as each."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from rest_framework.test import APIClient

from heartbeat.models import Agent
from heartbeat.services import agent_key_create
from paperclip.credentials import secret_generate
from paperclip.models import BoardApiToken, Company, CompanyMembership
from paperclip.wsgi import get_wsgi_application
from tests.factories import make_agent, make_company


@dataclass
class Side:
    """One company with its board member and its agent, and clients acting as each."""

    company: Company
    user: object
    agent: Agent
    board: APIClient
    agent_client: APIClient


def board_client_for(user, **headers) -> APIClient:
    secret, prefix, digest = secret_generate("pcbt_")
    BoardApiToken.objects.create(user=user, name="tests", token_prefix=prefix, token_hash=digest)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}", **headers)
    client.bearer_secret = secret
    return client


def agent_client_for(agent: Agent, run_id=None) -> APIClient:
    secret = agent_key_create(
        agent_id=agent.id, name="tests", actor_type="system", actor_id="t"
    ).secret
    client = APIClient()
    client.bearer_secret = secret
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    if run_id is not None:
        headers["HTTP_X_PAPERCLIP_RUN_ID"] = str(run_id)
    client.credentials(**headers)
    return client


def make_side(name: str) -> Side:
    company = make_company(name=name)
    user = get_user_model().objects.create_user(username=f"board-{name.lower()}")
    CompanyMembership.objects.create(company=company, user=user)
    agent = make_agent(company, name=f"{name} engineer", role="engineer")
    return Side(company, user, agent, board_client_for(user), agent_client_for(agent))


@pytest.fixture
def side_a(db) -> Side:
    return make_side("Alpha")


@pytest.fixture
def side_b(db) -> Side:
    return make_side("Beta")


@pytest.fixture
def admin_client(db) -> APIClient:
    admin = get_user_model().objects.create_superuser(username="root", email="", password=None)
    return board_client_for(admin)


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


@pytest.fixture
def wsgi_app():
    """The production WSGI application on the test's connection: like Django's test client, it
    must not close the connection at request end (that would end the test's transaction)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
