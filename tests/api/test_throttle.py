"""Failed authentication is throttled per client address (API keys, board tokens, run
credentials) and, for the admin login, per account too: N failures, then 429 with Retry-After
for every attempt (the right credential included), then success once the window has passed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from heartbeat.models import AgentApiKey, HeartbeatRun
from paperclip.credentials import run_credential_issue
from paperclip.models import AuthFailureCounter
from tests.factories import make_run

pytestmark = pytest.mark.django_db

LIMIT = 3
WINDOW_SEC = 600


@pytest.fixture(autouse=True)
def small_limit(settings):
    settings.PAPERCLIP_AUTH_FAILURE_LIMIT = LIMIT
    settings.PAPERCLIP_AUTH_LOCKOUT_SEC = WINDOW_SEC
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(seconds=WINDOW_SEC)


def _get(secret: str, address: str = "203.0.113.7", path: str = "/api/agents/me"):
    return APIClient().get(path, HTTP_AUTHORIZATION=f"Bearer {secret}", REMOTE_ADDR=address)


def _fail(times: int, address: str = "203.0.113.7", secret: str = "pcak_wrong-guess") -> None:
    for _ in range(times):
        assert _get(secret, address).status_code == 401


def _window_passes() -> None:
    AuthFailureCounter.objects.update(
        last_failure_at=timezone.now() - timedelta(seconds=WINDOW_SEC + 1)
    )


def test_wrong_keys_up_to_the_limit_answer_401_then_the_right_key_answers_429(side_a):
    _fail(LIMIT)

    response = _get(side_a.agent_client.bearer_secret)

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= WINDOW_SEC
    assert set(response.json()) == {"error", "details"}
    assert "Too many failed authentication attempts" in response.json()["error"]


def test_attempts_refused_while_locked_do_not_extend_the_lock(side_a):
    _fail(LIMIT)
    counter = AuthFailureCounter.objects.get()

    for _ in range(5):
        assert _get("pcak_still-guessing").status_code == 429

    assert AuthFailureCounter.objects.get() == counter
    assert AuthFailureCounter.objects.get().failures == LIMIT


def test_the_right_key_works_again_once_the_window_has_passed(side_a):
    _fail(LIMIT)
    _window_passes()

    response = _get(side_a.agent_client.bearer_secret)

    assert response.status_code == 200
    assert response.json()["id"] == str(side_a.agent.id)


def test_a_failure_after_the_window_starts_a_new_count(side_a):
    _fail(LIMIT - 1)
    _window_passes()
    _fail(1)

    assert AuthFailureCounter.objects.get().failures == 1
    assert _get(side_a.agent_client.bearer_secret).status_code == 200


def test_board_tokens_and_run_credentials_are_refused_from_a_locked_address(side_a):
    run = make_run(side_a.agent, status=HeartbeatRun.Status.RUNNING)
    credential = run_credential_issue(
        run_id=str(run.id), agent_id=str(side_a.agent.id), company_id=str(side_a.company.id)
    )
    _fail(LIMIT, secret="pcbt_wrong-board-token")

    assert _get(side_a.board.bearer_secret, path="/api/companies").status_code == 429
    assert _get(credential).status_code == 429


def test_a_forged_run_credential_counts_as_a_failure(side_a):
    _fail(LIMIT, secret="pcr_.eJyrVkpUslIqSs1LBdJKSYlKtQDsAt0")

    assert _get(side_a.agent_client.bearer_secret).status_code == 429


def test_failures_from_one_address_do_not_lock_another(side_a):
    _fail(LIMIT, address="203.0.113.7")

    assert _get(side_a.agent_client.bearer_secret, address="198.51.100.2").status_code == 200


def test_a_revoked_key_or_an_ended_run_is_refused_without_counting(side_a):
    run = make_run(side_a.agent, status=HeartbeatRun.Status.SUCCEEDED)
    ended = run_credential_issue(
        run_id=str(run.id), agent_id=str(side_a.agent.id), company_id=str(side_a.company.id)
    )
    revoked = side_a.agent_client.bearer_secret
    AgentApiKey.objects.update(revoked_at=timezone.now())

    for secret in [ended, revoked] * LIMIT:
        assert _get(secret).status_code == 401

    assert not AuthFailureCounter.objects.exists()


def test_a_lock_recorded_by_another_host_is_honoured(side_a):
    # Another host's worker counted these failures: the counter is a row every host reads.
    AuthFailureCounter.objects.create(
        subject="api-client:203.0.113.7", failures=LIMIT, last_failure_at=timezone.now()
    )

    assert _get(side_a.agent_client.bearer_secret).status_code == 429


def test_counters_whose_window_has_passed_are_deleted_by_the_next_failure(side_a):
    _fail(1, address="198.51.100.2")
    _window_passes()

    _fail(1, address="203.0.113.7")

    assert list(AuthFailureCounter.objects.values_list("subject", flat=True)) == [
        "api-client:203.0.113.7"
    ]


# The admin login (django-axes)


@pytest.fixture
def board_login(db):
    return get_user_model().objects.create_user("alice", password="right-pw-123", is_staff=True)


def _login(password: str, address: str = "203.0.113.7", username: str = "alice"):
    data = {"username": username, "password": password, "next": reverse("admin:index")}
    return Client(REMOTE_ADDR=address).post(reverse("admin:login"), data)


def test_wrong_admin_passwords_then_the_right_one_answers_429(board_login):
    for _ in range(LIMIT - 1):
        assert _login("wrong-pw").status_code == 200
    # The failure that reaches the limit is answered with the lockout page already.
    assert _login("wrong-pw").status_code == 429

    response = _login("right-pw-123")

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= WINDOW_SEC
    assert "Too many failed logins" in response.content.decode()


def test_admin_account_is_locked_whatever_the_address_of_the_guesses(board_login):
    for n in range(LIMIT):
        _login("wrong-pw", address=f"198.51.100.{n + 1}")

    assert _login("right-pw-123", address="192.0.2.50").status_code == 429


def test_admin_address_is_locked_whatever_the_account_it_guesses(board_login):
    for n in range(LIMIT):
        _login("wrong-pw", username=f"someone-{n}")

    assert _login("right-pw-123").status_code == 429


def test_admin_login_works_again_once_the_window_has_passed(board_login):
    for _ in range(LIMIT):
        _login("wrong-pw")
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(seconds=WINDOW_SEC + 1))

    response = _login("right-pw-123")

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")
