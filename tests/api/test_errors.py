"""The error format: JSON `{"error", "details"}` with the right status, never a 500."""

from __future__ import annotations

import pytest

from tests.factories import make_issue

pytestmark = pytest.mark.django_db


def test_unknown_api_route_answers_json_404(side_a):
    response = side_a.board.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"error": "Not found", "details": None}


def test_malformed_uuid_in_a_path_answers_404(side_a):
    assert side_a.board.get("/api/agents/not-a-uuid").status_code == 404


def test_unknown_issue_identifier_answers_404(side_a):
    response = side_a.board.get("/api/issues/NOPE-999")
    assert response.status_code == 404
    assert response.json()["error"] == "Issue not found"


def test_malformed_json_answers_400(side_a):
    response = side_a.board.generic(
        "POST",
        f"/api/companies/{side_a.company.id}/issues",
        b'{"title": ',
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["error"]


def test_nul_characters_in_json_answer_400_not_500(side_a):
    response = side_a.board.generic(
        "POST",
        f"/api/companies/{side_a.company.id}/agents",
        b'{"name": "x", "adapterConfig": {"k": "a\\u0000b"}}',
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]


def test_unpaired_surrogates_in_json_answer_400_not_500(side_a):
    response = side_a.board.generic(
        "POST",
        f"/api/companies/{side_a.company.id}/issues",
        b'{"title": "\\ud800"}',
        content_type="application/json",
    )
    assert response.status_code == 400


def test_nul_in_a_query_parameter_answers_400(side_a):
    response = side_a.board.get(f"/api/companies/{side_a.company.id}/issues", {"q": "a\x00b"})
    assert response.status_code == 400
    assert "q" in response.json()["details"]


def test_non_json_body_answers_415(side_a):
    issue = make_issue(side_a.company)
    response = side_a.board.generic(
        "POST", f"/api/issues/{issue.id}/comments", b"body=hi", content_type="text/plain"
    )
    assert response.status_code == 415
    assert set(response.json()) == {"error", "details"}


def test_wrong_method_answers_405_json(side_a):
    response = side_a.board.put(f"/api/companies/{side_a.company.id}", {}, format="json")
    assert response.status_code == 405
    assert "not allowed" in response.json()["error"]


def test_invalid_pagination_cursor_answers_404_json(side_a):
    response = side_a.board.get("/api/companies", {"cursor": "garbage"})
    assert response.status_code == 404
    assert response.json()["error"] == "Invalid cursor"


def test_validation_error_names_the_first_bad_field(side_a):
    issue = make_issue(side_a.company)
    response = side_a.board.patch(
        f"/api/issues/{issue.id}", {"priority": "urgent-ish"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("Validation error: priority:")
    assert "priority" in response.json()["details"]


def test_api_root_points_to_docs_schema_and_health(anonymous):
    response = anonymous.get("/api/")
    assert response.status_code == 200
    assert response.json()["docs"].endswith("/api/docs/")
    assert response.json()["schema"].endswith("/api/schema/")


@pytest.mark.django_db
def test_unknown_api_path_answers_json_404(client):
    response = client.get("/api/no-such-route")
    assert response.status_code == 404
    assert response.json()["error"] == "Not found"


@pytest.mark.django_db
def test_unknown_page_outside_the_api_answers_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_api_docs_page_loads_swagger_ui_from_this_server(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn.jsdelivr.net" not in page
