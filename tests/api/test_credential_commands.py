"""`manage.py create_board_token` and `create_agent_key`: the printed value is a working
credential, shown once, and bad input is one line, never a traceback."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from heartbeat.models import AgentApiKey
from paperclip.models import ActivityLog, BoardApiToken
from tests.cluster import product_env
from tests.factories import make_agent, make_company

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def _command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_create_board_token_prints_only_a_token_that_authenticates_its_user(django_user_model):
    user = django_user_model.objects.create_superuser("admin", "", "pw")

    out, err = _command("create_board_token")

    secret = out.strip()
    assert "\n" not in secret and "shown once" in err
    me = _bearer(secret).get("/api/cli-auth/me").json()
    assert (me["userId"], me["source"]) == (str(user.pk), "board_key")
    token = BoardApiToken.objects.get(user=user)
    assert (token.name, token.expires_at) == ("manage.py", None)
    assert secret not in token.token_hash


def test_create_board_token_for_another_user_and_name(django_user_model):
    user = django_user_model.objects.create_user("alice")

    _command("create_board_token", "--user", "alice", "--name", "laptop")

    assert BoardApiToken.objects.get(user=user).name == "laptop"


def test_create_board_token_for_an_unknown_user_says_so_in_one_line(db):
    with pytest.raises(CommandError, match=r"^no user 'nobody'; pass --user") as raised:
        _command("create_board_token", "--user", "nobody")
    assert "\n" not in str(raised.value)


def test_create_agent_key_by_name_prints_only_a_key_that_authenticates_the_agent():
    agent = make_agent(name="Builder")

    out, err = _command("create_agent_key", "builder")

    me = _bearer(out.strip()).get("/api/agents/me").json()
    assert me["id"] == str(agent.id)
    assert "Builder" in err and "shown once" in err
    assert AgentApiKey.objects.get(agent=agent).name == "manage.py"
    assert ActivityLog.objects.filter(action="agent.key_created", agent_id=agent.id).exists()


def test_create_agent_key_by_id():
    agent = make_agent()

    _command("create_agent_key", str(agent.id))

    assert AgentApiKey.objects.filter(agent=agent).count() == 1


def test_create_agent_key_with_a_shared_name_asks_for_the_company():
    first = make_agent(make_company(issue_prefix="ONE"), name="Builder")
    make_agent(make_company(issue_prefix="TWO"), name="Builder")

    with pytest.raises(CommandError, match=r"2 agents are named 'Builder' .*ONE, TWO.*--company"):
        _command("create_agent_key", "Builder")
    _command("create_agent_key", "Builder", "--company", "one")

    assert AgentApiKey.objects.get().agent_id == first.id


def test_create_agent_key_for_an_unknown_agent_says_so_in_one_line():
    with pytest.raises(CommandError, match=r"^no agent 'ghost'; pass an agent's id or name$"):
        _command("create_agent_key", "ghost")


def test_create_agent_key_for_a_terminated_agent_is_refused():
    make_agent(name="Gone", status="terminated")

    with pytest.raises(CommandError, match=r"^agent 'Gone': .*terminated"):
        _command("create_agent_key", "Gone")
    assert not AgentApiKey.objects.exists()


@pytest.mark.timeout(120)
def test_bad_input_from_the_shell_ends_in_one_line_and_status_1(tmp_path):
    done = subprocess.run(
        [sys.executable, "manage.py", "create_agent_key", "ghost"],
        cwd=ROOT,
        env=product_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=100,
    )

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "CommandError: no agent 'ghost'; pass an agent's id or name"
    ]
