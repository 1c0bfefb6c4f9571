"""Paperclip's company dashboard summary (`dashboard get`)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tests.factories import make_agent, make_issue, make_run

pytestmark = pytest.mark.django_db


def test_dashboard_counts_agents_issues_and_runs_of_the_company(side_a, side_b):
    make_agent(side_a.company, status="paused")
    make_agent(side_b.company)
    for status in ("todo", "in_progress", "blocked", "done", "cancelled"):
        make_issue(side_a.company, status=status, assignee_user_id="7")
    response = side_a.board.get(f"/api/companies/{side_a.company.id}/dashboard")
    body = response.json()
    assert body["agents"] == {"active": 1, "running": 0, "paused": 1, "error": 0}
    assert body["tasks"] == {"open": 3, "inProgress": 1, "blocked": 1, "done": 1}
    assert len(body["runActivity"]) == 14
    assert body["runActivity"][-1]["date"] == timezone.now().date().isoformat()


def test_dashboard_counts_a_failed_run_whose_retry_succeeded_as_recovered(side_a):
    lost = make_run(side_a.agent, status="failed", error_code="process_lost")
    make_run(side_a.agent, status="succeeded", retry_of_run=lost)
    make_run(side_a.agent, status="failed", error_code="adapter_failed")
    today = side_a.board.get(f"/api/companies/{side_a.company.id}/dashboard").json()["runActivity"][
        -1
    ]
    assert (today["succeeded"], today["failed"], today["recovered"], today["total"]) == (1, 1, 1, 3)
    assert today["failedByErrorCode"] == {"adapter_failed": 1}


def test_dashboard_of_another_company_answers_404(side_a, side_b):
    assert side_a.board.get(f"/api/companies/{side_b.company.id}/dashboard").status_code == 404
