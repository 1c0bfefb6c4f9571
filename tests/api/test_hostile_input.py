"""Malformed input from an authenticated caller: every probe class of the adversarial pass gets
a 4xx with the JSON error body, never a 500 or an HTML page."""

from __future__ import annotations

import base64

import pytest
from django.test import override_settings

from heartbeat.models import HeartbeatRun
from heartbeat.run_log import run_log_path
from issues.models import Issue
from tests.factories import make_issue, make_run

pytestmark = pytest.mark.django_db


def assert_json_error(response, status: int) -> None:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"error", "details"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/issues/%00"),
        ("patch", "/api/issues/%00"),
        ("delete", "/api/issues/%00"),
        ("get", "/api/issues/%00/comments"),
        ("post", "/api/issues/%00/comments"),
        ("post", "/api/issues/%00/checkout"),
        ("post", "/api/issues/%00/release"),
        ("get", "/api/issues/%00/heartbeat-context"),
        ("get", "/api/issues/%00/runs"),
        ("get", "/api/issues/%00/live-runs"),
        ("get", "/api/issues/%00/active-run"),
        ("get", "/api/issues/PAP-1%00"),
    ],
)
def test_nul_character_in_an_issue_reference_answers_json_404(side_a, method, path):
    response = getattr(side_a.agent_client, method)(path, {}, format="json")
    assert_json_error(response, 404)
    assert response.json()["error"] == "Issue not found"


def test_issue_identifier_still_finds_its_issue(side_a):
    issue = make_issue(side_a.company)
    response = side_a.agent_client.get(f"/api/issues/{issue.identifier.lower()}")
    assert response.status_code == 200
    assert response.json()["id"] == str(issue.id)


def _cursor(query: bytes) -> str:
    return base64.b64encode(query).decode()


LIST_ROUTES = [
    "/api/companies",
    "/api/companies/{company}/issues",
    "/api/companies/{company}/agents",
    "/api/companies/{company}/heartbeat-runs",
    "/api/companies/{company}/activity",
    "/api/issues/{issue}/runs",
    "/api/agents/{agent}/keys",
    "/api/board/tokens",
]


def _list_path(side, route: str) -> str:
    issue = make_issue(side.company)
    return route.format(company=side.company.id, issue=issue.id, agent=side.agent.id)


# /api/companies is ordered by name, where any text is a position.
@pytest.mark.parametrize("route", LIST_ROUTES[1:])
@pytest.mark.parametrize("position", [b"p=abc", b"p=2026-13-45"])
def test_cursor_position_its_ordering_column_cannot_hold_answers_json_404(side_a, route, position):
    response = side_a.board.get(_list_path(side_a, route), {"cursor": _cursor(position)})
    assert_json_error(response, 404)
    assert response.json()["error"] == "Invalid cursor"


@pytest.mark.parametrize("route", LIST_ROUTES)
def test_cursor_position_with_a_nul_character_answers_json_404(side_a, route):
    response = side_a.board.get(_list_path(side_a, route), {"cursor": _cursor(b"p=a%00b")})
    assert_json_error(response, 404)
    assert response.json()["error"] == "Invalid cursor"


def test_cursor_handed_out_by_the_api_still_pages(side_a):
    for _ in range(3):
        make_issue(side_a.company)
    url = f"/api/companies/{side_a.company.id}/issues"
    first = side_a.board.get(url, {"limit": 2})
    next_url = first["Link"].split(";")[0].strip("<>")
    second = side_a.board.get(next_url)
    assert second.status_code == 200
    assert len(first.json()) + len(second.json()) == 3


@pytest.mark.parametrize("limit", ["abc", "0", "-1", "1001", "1e3"])
def test_malformed_list_limit_answers_400_naming_it(side_a, limit):
    response = side_a.board.get(f"/api/companies/{side_a.company.id}/issues", {"limit": limit})
    assert_json_error(response, 400)
    assert "limit" in response.json()["details"]


def test_log_offset_far_beyond_the_log_reads_nothing(side_a, tmp_path):
    with override_settings(PAPERCLIP_HEARTBEAT={"run_log_dir": str(tmp_path)}):
        run = make_run(side_a.agent, log_store="local_file", log_ref="c/a/r.ndjson")
        path = run_log_path(run.log_ref)
        path.parent.mkdir(parents=True)
        path.write_text('{"stream": "stdout", "chunk": "hello"}\n')
        response = side_a.agent_client.get(
            f"/api/heartbeat-runs/{run.id}/log", {"offset": 4611686018427387904}
        )
    assert response.status_code == 200
    assert (response.json()["content"], response.json()["nextOffset"]) == ("", None)


def test_log_ref_reaching_outside_the_log_dir_is_not_served(side_a, tmp_path):
    (tmp_path / "secret.txt").write_text("password=hunter2\n")
    (tmp_path / "logs").mkdir()
    with override_settings(PAPERCLIP_HEARTBEAT={"run_log_dir": str(tmp_path / "logs")}):
        run = make_run(side_a.agent, log_store="local_file", log_ref="../secret.txt")
        response = side_a.board.get(f"/api/heartbeat-runs/{run.id}/log")
    assert response.status_code == 200
    assert response.json()["content"] == ""


def test_log_offset_past_its_documented_maximum_answers_400(side_a):
    run = make_run(side_a.agent, status=HeartbeatRun.Status.SUCCEEDED)
    response = side_a.agent_client.get(f"/api/heartbeat-runs/{run.id}/log", {"offset": 2**63})
    assert_json_error(response, 400)
    assert "offset" in response.json()["details"]


def test_json_body_nested_ten_thousand_deep_answers_400(side_a):
    body = b'{"title": "t", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    response = side_a.board.generic(
        "POST", f"/api/companies/{side_a.company.id}/issues", body, content_type="application/json"
    )
    assert_json_error(response, 400)
    assert "nest" in response.json()["error"]
    assert not Issue.objects.exists()


def test_json_body_nested_just_past_the_limit_answers_400(side_a):
    config = b'{"k": ' * 40 + b"1" + b"}" * 40
    body = b'{"name": "deep", "adapterConfig": ' + config + b"}"
    response = side_a.board.generic(
        "POST", f"/api/companies/{side_a.company.id}/agents", body, content_type="application/json"
    )
    assert_json_error(response, 400)
    assert "nest" in response.json()["error"]


def test_number_overflowing_to_infinity_answers_400(side_a):
    body = b'{"name": "inf", "adapterConfig": {"timeoutSec": 1e400}}'
    response = side_a.board.generic(
        "POST", f"/api/companies/{side_a.company.id}/agents", body, content_type="application/json"
    )
    assert_json_error(response, 400)
    assert "finite" in response.json()["error"]


def test_ten_megabyte_body_answers_json_413(side_a):
    body = b'{"title": "' + b"a" * 10_000_000 + b'"}'
    response = side_a.board.generic(
        "POST", f"/api/companies/{side_a.company.id}/issues", body, content_type="application/json"
    )
    assert_json_error(response, 413)
    assert "too large" in response.json()["error"]


def test_body_that_is_not_utf8_answers_400(side_a):
    response = side_a.board.generic(
        "POST",
        f"/api/companies/{side_a.company.id}/issues",
        b'{"title": "\xff\xfe"}',
        content_type="application/json",
    )
    assert_json_error(response, 400)


def test_body_of_the_wrong_json_type_answers_400(side_a):
    response = side_a.board.post(
        f"/api/companies/{side_a.company.id}/issues", ["not", "an", "object"], format="json"
    )
    assert_json_error(response, 400)


def test_too_many_query_parameters_answer_json_400(side_a):
    query = "&".join(f"p{n}=1" for n in range(1_500))
    response = side_a.board.get(f"/api/companies/{side_a.company.id}/issues?{query}")
    assert_json_error(response, 400)


def test_bad_host_header_under_the_api_answers_json_400(side_a):
    response = side_a.board.get("/api/companies", HTTP_HOST="evil.example")
    assert_json_error(response, 400)


@pytest.mark.parametrize("method", ["patch", "post", "delete"])
def test_writing_to_an_agent_path_that_is_not_an_id_answers_json_404(side_a, method):
    response = getattr(side_a.board, method)("/api/agents/not-an-id", {}, format="json")
    assert_json_error(response, 404)
