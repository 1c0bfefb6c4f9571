"""The production WSGI handler: API requests skip the page-only middleware and keep everything
else (security headers, the board's session); pages keep the whole stack."""

from __future__ import annotations

import io
import json
from wsgiref.util import setup_testing_defaults

from django.test import Client


def _call(app, path: str, **environ) -> tuple[str, dict, bytes]:
    request = {"PATH_INFO": path, "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO()}
    request.update(environ)
    setup_testing_defaults(request)
    request["HTTP_HOST"] = "127.0.0.1"
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = status, dict(headers)

    body = app(request, start_response)
    content = b"".join(body)
    body.close()
    return answer["status"], answer["headers"], content


def test_api_reads_through_the_production_handler_keep_the_security_headers(side_a, wsgi_app):
    secret = side_a.agent_client.bearer_secret
    status, headers, body = _call(wsgi_app, "/api/agents/me", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert status.startswith("200")
    assert json.loads(body)["id"] == str(side_a.agent.id)
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"


def test_the_boards_browser_session_authenticates_api_reads_through_the_handler(side_a, wsgi_app):
    browser = Client()
    browser.force_login(side_a.user)
    session = browser.cookies["sessionid"].value
    status, _, body = _call(wsgi_app, "/api/companies", HTTP_COOKIE=f"sessionid={session}")
    assert status.startswith("200")
    assert [company["id"] for company in json.loads(body)] == [str(side_a.company.id)]


def test_the_admin_login_page_keeps_the_whole_middleware_stack(db, wsgi_app):
    status, headers, body = _call(wsgi_app, "/admin/login/")
    assert status.startswith("200")
    assert b"csrfmiddlewaretoken" in body
    assert "csrftoken" in headers.get("Set-Cookie", "")
