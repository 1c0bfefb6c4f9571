"""Cross-company isolation: company A's board member and agent get 404 on every object of
company B, for every route and method, exactly as if the object did not exist."""

from __future__ import annotations

import pytest

from heartbeat.models import AgentRuntimeState, HeartbeatRun
from issues.models import IssueComment
from tests.factories import make_issue, make_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def b_objects(side_b):
    issue = make_issue(side_b.company, status="todo", assignee_agent_id=side_b.agent.id)
    run = make_run(
        side_b.agent,
        status=HeartbeatRun.Status.RUNNING,
        context_snapshot={"issueId": str(issue.id)},
    )
    comment = IssueComment.objects.create(company=side_b.company, issue=issue, body="secret")
    AgentRuntimeState.objects.create(
        agent=side_b.agent, company=side_b.company, adapter_type="process"
    )
    key = side_b.agent.api_keys.first()
    return {
        "company": side_b.company.id,
        "agent": side_b.agent.id,
        "issue": issue.id,
        "identifier": issue.identifier,
        "run": run.id,
        "comment": comment.id,
        "key": key.id,
    }


ROUTES = [
    ("get", "/api/companies/{company}", None),
    ("patch", "/api/companies/{company}", {"name": "Mine now"}),
    ("get", "/api/companies/{company}/activity", None),
    ("get", "/api/companies/{company}/agents", None),
    ("post", "/api/companies/{company}/agents", {"name": "Implant"}),
    ("get", "/api/companies/{company}/issues", None),
    ("post", "/api/companies/{company}/issues", {"title": "Injected"}),
    ("get", "/api/companies/{company}/heartbeat-runs", None),
    ("get", "/api/companies/{company}/live-runs", None),
    ("get", "/api/agents/{agent}", None),
    ("patch", "/api/agents/{agent}", {"title": "Mine"}),
    ("get", "/api/agents/{agent}/runtime-state", None),
    ("get", "/api/agents/{agent}/keys", None),
    ("post", "/api/agents/{agent}/keys", {"name": "stolen"}),
    ("delete", "/api/agents/{agent}/keys/{key}", None),
    ("post", "/api/agents/{agent}/wakeup", {}),
    ("post", "/api/agents/{agent}/heartbeat/invoke", None),
    ("post", "/api/agents/{agent}/pause", {}),
    ("post", "/api/agents/{agent}/resume", None),
    ("post", "/api/agents/{agent}/terminate", None),
    ("get", "/api/heartbeat-runs/{run}", None),
    ("post", "/api/heartbeat-runs/{run}/cancel", None),
    ("get", "/api/heartbeat-runs/{run}/log", None),
    ("get", "/api/heartbeat-runs/{run}/events", None),
    ("get", "/api/issues/{issue}", None),
    ("get", "/api/issues/{identifier}", None),
    ("patch", "/api/issues/{issue}", {"title": "Hijacked"}),
    ("delete", "/api/issues/{issue}", None),
    ("post", "/api/issues/{issue}/checkout", {"expectedStatuses": ["todo"]}),
    ("post", "/api/issues/{issue}/release", None),
    ("get", "/api/issues/{issue}/comments", None),
    ("post", "/api/issues/{issue}/comments", {"body": "hi"}),
    ("get", "/api/issues/{issue}/comments/{comment}", None),
    ("get", "/api/issues/{issue}/heartbeat-context", None),
    ("get", "/api/issues/{issue}/active-run", None),
    ("get", "/api/issues/{issue}/live-runs", None),
    ("get", "/api/issues/{issue}/runs", None),
]


@pytest.mark.parametrize("actor", ["board", "agent_client"])
@pytest.mark.parametrize(("method", "template", "body"), ROUTES)
def test_company_a_gets_404_on_company_b_objects(side_a, b_objects, actor, method, template, body):
    client = getattr(side_a, actor)
    url = template.format(**b_objects)
    response = getattr(client, method)(url, body, format="json")
    assert response.status_code == 404, (url, response.content)
    assert "secret" not in response.content.decode()
    assert set(response.json()) == {"error", "details"}
