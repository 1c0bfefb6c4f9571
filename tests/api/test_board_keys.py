"""Paperclip's board routes: who am I (`whoami`) and board API keys (`token board ...`)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from paperclip.models import BoardApiToken

pytestmark = pytest.mark.django_db


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_whoami_names_the_board_user_its_companies_and_key(side_a):
    response = side_a.board.get("/api/cli-auth/me")
    assert response.status_code == 200
    body = response.json()
    token = BoardApiToken.objects.get(user=side_a.user)
    assert (body["userId"], body["user"]["name"]) == (str(side_a.user.pk), "board-alpha")
    assert (body["source"], body["keyId"]) == ("board_key", str(token.id))
    assert body["companyIds"] == [str(side_a.company.id)]
    assert body["memberships"] == [
        {"companyId": str(side_a.company.id), "membershipRole": "member", "status": "active"}
    ]
    assert body["isInstanceAdmin"] is False


def test_whoami_of_an_agent_answers_401(side_a):
    response = side_a.agent_client.get("/api/cli-auth/me")
    assert response.status_code == 401
    assert response.json()["error"] == "Board authentication required"


# Board API keys


def test_board_key_created_without_expiry_lasts_thirty_days_and_works(side_a):
    response = side_a.board.post("/api/board-api-keys", {"name": "ci"}, format="json")
    assert response.status_code == 201
    body = response.json()
    token = BoardApiToken.objects.get(pk=body["id"])
    assert token.expires_at - timezone.now() > timedelta(days=29, hours=23)
    assert body["token"].startswith("pcbt_")
    assert bearer(body["token"]).get("/api/cli-auth/me").json()["keyId"] == body["id"]


def test_board_key_with_null_expiry_never_expires(side_a):
    response = side_a.board.post(
        "/api/board-api-keys", {"name": "forever", "expiresAt": None}, format="json"
    )
    assert response.json()["expiresAt"] is None


def test_board_key_expiring_in_the_past_answers_400(side_a):
    past = (timezone.now() - timedelta(hours=1)).isoformat()
    response = side_a.board.post("/api/board-api-keys", {"expiresAt": past}, format="json")
    assert response.status_code == 400
    assert "expiresAt" in response.json()["details"]


def test_expired_board_key_no_longer_authenticates(side_a):
    secret = side_a.board.post("/api/board-api-keys", {}, format="json").json()["token"]
    BoardApiToken.objects.filter(name="paperclipai cli").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert bearer(secret).get("/api/cli-auth/me").status_code == 401


def test_board_key_for_a_company_the_user_cannot_see_answers_404(side_a, side_b):
    response = side_a.board.post(
        "/api/board-api-keys", {"requestedCompanyId": str(side_b.company.id)}, format="json"
    )
    assert response.status_code == 404
    assert not BoardApiToken.objects.filter(name="paperclipai cli").exists()


def test_board_keys_list_hides_revoked_keys_unless_asked(side_a):
    key_id = side_a.board.post("/api/board-api-keys", {"name": "old"}, format="json").json()["id"]
    revoked = side_a.board.delete(f"/api/board-api-keys/{key_id}")
    assert revoked.json() == {"ok": True, "keyId": key_id}
    active = {k["id"] for k in side_a.board.get("/api/board-api-keys").json()}
    every = {k["id"] for k in side_a.board.get("/api/board-api-keys?includeInactive=true").json()}
    assert key_id not in active
    assert key_id in every


def test_revoking_another_users_board_key_answers_404(side_a, side_b):
    key_id = side_b.board.post("/api/board-api-keys", {}, format="json").json()["id"]
    assert side_a.board.delete(f"/api/board-api-keys/{key_id}").status_code == 404
    assert BoardApiToken.objects.get(pk=key_id).revoked_at is None
