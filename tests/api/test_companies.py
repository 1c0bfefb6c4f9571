"""Companies: who sees and edits which, and the activity feed."""

from __future__ import annotations

import pytest

from paperclip.models import ActivityLog, Company, CompanyMembership

pytestmark = pytest.mark.django_db


def test_board_member_lists_only_their_companies(side_a, side_b):
    response = side_a.board.get("/api/companies")
    assert response.status_code == 200
    assert [c["id"] for c in response.json()] == [str(side_a.company.id)]


def test_instance_admin_lists_every_company(side_a, side_b, admin_client):
    ids = {c["id"] for c in admin_client.get("/api/companies").json()}
    assert ids == {str(side_a.company.id), str(side_b.company.id)}


def test_agent_lists_only_its_own_company(side_a, side_b):
    ids = [c["id"] for c in side_a.agent_client.get("/api/companies").json()]
    assert ids == [str(side_a.company.id)]


def test_company_json_uses_camel_case_keys(side_a):
    body = side_a.board.get(f"/api/companies/{side_a.company.id}").json()
    assert body["issuePrefix"] == side_a.company.issue_prefix
    assert body["requireBoardApprovalForNewAgents"] is True
    assert "issue_prefix" not in body


def test_board_creates_a_company_and_becomes_its_owner(side_a):
    response = side_a.board.post(
        "/api/companies", {"name": "Gamma", "issuePrefix": "gam"}, format="json"
    )
    assert response.status_code == 201
    company = Company.objects.get(pk=response.json()["id"])
    assert company.issue_prefix == "GAM"
    membership = CompanyMembership.objects.get(company=company)
    assert (membership.user_id, membership.role) == (side_a.user.pk, "owner")
    assert ActivityLog.objects.filter(company=company, action="company.created").exists()


def test_company_create_without_prefix_names_the_field(side_a):
    response = side_a.board.post("/api/companies", {"name": "Gamma"}, format="json")
    assert response.status_code == 400
    assert "issuePrefix" in response.json()["details"]
    assert "issuePrefix" in response.json()["error"]


def test_duplicate_issue_prefix_answers_409(side_a):
    response = side_a.board.post(
        "/api/companies",
        {"name": "Copy", "issuePrefix": side_a.company.issue_prefix},
        format="json",
    )
    assert response.status_code == 409


def test_agents_cannot_create_companies(side_a):
    response = side_a.agent_client.post(
        "/api/companies", {"name": "Rogue", "issuePrefix": "RGE"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["error"] == "Board access required"


def test_board_pauses_a_company_with_a_reason(side_a):
    response = side_a.board.patch(
        f"/api/companies/{side_a.company.id}",
        {"status": "paused", "pauseReason": "budget"},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["status"] == "paused"
    assert response.json()["pausedAt"] is not None
    assert response.json()["pauseReason"] == "budget"


def test_agents_cannot_update_their_company(side_a):
    response = side_a.agent_client.patch(
        f"/api/companies/{side_a.company.id}", {"name": "Mine"}, format="json"
    )
    assert response.status_code == 403


def test_company_status_outside_the_choices_answers_400(side_a):
    response = side_a.board.patch(
        f"/api/companies/{side_a.company.id}", {"status": "sleeping"}, format="json"
    )
    assert response.status_code == 400
    assert "status" in response.json()["details"]


def test_activity_feed_lists_the_company_events_newest_first(side_a):
    side_a.board.patch(f"/api/companies/{side_a.company.id}", {"name": "A2"}, format="json")
    response = side_a.board.get(f"/api/companies/{side_a.company.id}/activity")
    assert response.status_code == 200
    assert response.json()[0]["action"] == "company.updated"
    assert response.json()[0]["actorType"] == "user"


def test_activity_feed_filters_by_entity(side_a):
    response = side_a.board.get(
        f"/api/companies/{side_a.company.id}/activity",
        {"entityType": "agent", "entityId": str(side_a.agent.id)},
    )
    assert response.status_code == 200
    assert {row["entityId"] for row in response.json()} <= {str(side_a.agent.id)}


def test_list_pages_follow_the_link_header(side_a, admin_client):
    for n in range(3):
        Company.objects.create(name=f"Extra {n}", issue_prefix=f"EXT{n}")
    first = admin_client.get("/api/companies", {"limit": 2})
    assert len(first.json()) == 2
    next_url = first["Link"].split(";")[0].strip("<>")
    second = admin_client.get(next_url)
    assert second.status_code == 200
    assert not {c["id"] for c in first.json()} & {c["id"] for c in second.json()}
