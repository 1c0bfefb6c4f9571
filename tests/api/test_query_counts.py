"""Every route answers in a constant number of queries, however many rows the company has
(no N+1): the counts are asserted on an empty company and on a filled one."""

from __future__ import annotations

import pytest

from heartbeat.models import HeartbeatRun
from issues.models import IssueComment
from tests.factories import make_issue, make_run

pytestmark = pytest.mark.django_db


def fill(side, count: int) -> None:
    for n in range(count):
        issue = make_issue(side.company, status="todo", assignee_agent_id=side.agent.id)
        IssueComment.objects.create(company=side.company, issue=issue, body=f"c{n}")
        make_run(
            side.agent,
            status=HeartbeatRun.Status.SUCCEEDED,
            context_snapshot={"issueId": str(issue.id)},
        )


def queries_for(client, url: str, django_assert_num_queries, expected: int) -> None:
    client.get(url)  # warm up: a first use stamps the credential's last_used_at
    with django_assert_num_queries(expected):
        response = client.get(url)
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("rows", [0, 30])
@pytest.mark.parametrize(
    ("actor", "template", "expected"),
    [
        ("agent_client", "/api/agents/me", 1),
        ("agent_client", "/api/agents/me/inbox-lite", 2),
        ("agent_client", "/api/issues/{issue}", 2),
        ("agent_client", "/api/issues/{issue}/heartbeat-context", 3),
        ("agent_client", "/api/issues/{issue}/comments", 3),
        ("board", "/api/companies", 2),
        ("board", "/api/companies/{company}/issues", 3),
        ("board", "/api/companies/{company}/agents", 3),
        ("board", "/api/companies/{company}/heartbeat-runs", 3),
        ("board", "/api/companies/{company}/live-runs", 3),
        ("board", "/api/companies/{company}/activity", 3),
        ("board", "/api/issues/{issue}/runs", 3),
    ],
)
def test_read_routes_use_a_constant_number_of_queries(
    side_a, django_assert_num_queries, rows, actor, template, expected
):
    fill(side_a, rows)
    issue = make_issue(side_a.company, status="todo", assignee_agent_id=side_a.agent.id)
    url = template.format(company=side_a.company.id, issue=issue.id)
    queries_for(getattr(side_a, actor), url, django_assert_num_queries, expected)


def _comment_queries(side, issue, django_assert_max_num_queries) -> int:
    url = f"/api/issues/{issue.id}/comments"
    side.board.post(url, {"body": "warm up"}, format="json")
    with django_assert_max_num_queries(100) as captured:
        response = side.board.post(url, {"body": "counted"}, format="json")
    assert response.status_code == 201
    return len(captured)


def test_posting_a_comment_costs_the_same_queries_on_a_busy_issue(
    side_a, django_assert_max_num_queries
):
    quiet = make_issue(side_a.company, status="todo")
    empty = _comment_queries(side_a, quiet, django_assert_max_num_queries)
    fill(side_a, 30)
    busy = make_issue(side_a.company, status="todo")
    for n in range(30):
        IssueComment.objects.create(company=side_a.company, issue=busy, body=f"old {n}")
    assert _comment_queries(side_a, busy, django_assert_max_num_queries) == empty
