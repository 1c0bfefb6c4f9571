"""docs/wake-rules.md row 27: a run woken by a comment tells its process which comment."""

from __future__ import annotations

import sys

import pytest

from heartbeat.models import AgentWakeupRequest, HeartbeatRun
from heartbeat.run_log import run_log_path
from heartbeat.services import run_execute
from issues.models import Issue
from issues.services import issue_comment_post
from tests.factories import make_agent, make_issue

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

PRINT_WAKE = (
    "import os; print('wake', os.environ['PAPERCLIP_WAKE_REASON'], "
    "os.environ['PAPERCLIP_WAKE_COMMENT_ID'])"
)


@pytest.mark.timeout(60)
def test_row27_comment_wake_reaches_the_process_environment(run_logs, dispatched, supervisor):
    agent = make_agent(
        adapter_type="process",
        adapter_config={"command": sys.executable, "args": ["-c", PRINT_WAKE]},
    )
    issue = make_issue(agent.company, status=Issue.Status.TODO, assignee_agent_id=agent.id)
    comment = issue_comment_post(
        issue_id=issue.id, company_id=agent.company_id, body="Go", actor_type="user", actor_id="7"
    )
    run = AgentWakeupRequest.objects.get(agent=agent).run
    run_execute(run_id=run.id)
    supervisor.settle(run.id)
    run.refresh_from_db()
    assert run.status == HeartbeatRun.Status.SUCCEEDED
    assert f"wake issue_commented {comment.id}" in run_log_path(run.log_ref).read_text()
