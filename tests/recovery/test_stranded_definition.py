"""One definition of a stranded issue: Issue.objects.stranded() (the console's list and filter)
and the reconciler's locked, set-based page select the same issues."""

from __future__ import annotations

import pytest
from django.urls import reverse

from heartbeat.models import Agent, HeartbeatRun, WakeupStatus
from heartbeat.services.reconciler import issues_stranded
from issues.models import Issue
from paperclip.models import Company
from tests.factories import make_agent, make_company, make_issue, make_run, make_wakeup

pytestmark = pytest.mark.django_db


def _nothing(issue: Issue, agent: Agent) -> None:
    pass


def _failed_run(issue: Issue, agent: Agent) -> None:
    make_run(agent, status=HeartbeatRun.Status.FAILED, context_snapshot={"issueId": str(issue.id)})


def _queued_run(issue: Issue, agent: Agent) -> None:
    make_run(agent, status=HeartbeatRun.Status.QUEUED, context_snapshot={"issueId": str(issue.id)})


def _queued_wake(issue: Issue, agent: Agent) -> None:
    make_wakeup(agent, status=WakeupStatus.QUEUED, payload={"issueId": str(issue.id)})


def _deferred_wake(issue: Issue, agent: Agent) -> None:
    make_wakeup(
        agent, status=WakeupStatus.DEFERRED_ISSUE_EXECUTION, payload={"issueId": str(issue.id)}
    )


def _execution_lock_of_a_running_run(issue: Issue, agent: Agent) -> None:
    # The run holding the lock names no issue in its context: only the lock shows it is live.
    run = make_run(agent, status=HeartbeatRun.Status.RUNNING, context_snapshot={})
    Issue.objects.filter(pk=issue.pk).update(execution_run=run)


def _execution_lock_of_a_finished_run(issue: Issue, agent: Agent) -> None:
    run = make_run(agent, status=HeartbeatRun.Status.FAILED, context_snapshot={})
    Issue.objects.filter(pk=issue.pk).update(execution_run=run)


def _company_paused(issue: Issue, agent: Agent) -> None:
    Company.objects.filter(pk=issue.company_id).update(status=Company.Status.PAUSED)


CASES = {
    "nothing ever ran": (_nothing, "todo", True),
    "its last run failed": (_failed_run, "in_progress", True),
    "a queued run": (_queued_run, "todo", False),
    "a queued wake not yet a run": (_queued_wake, "todo", False),
    "a wake deferred behind a run": (_deferred_wake, "todo", False),
    "execution lock of a running run": (_execution_lock_of_a_running_run, "in_progress", False),
    "execution lock of a finished run": (_execution_lock_of_a_finished_run, "todo", True),
    "its company is paused": (_company_paused, "todo", False),
    "in review": (_nothing, "in_review", False),
}


def _issue(case: str) -> Issue:
    arrange, status, _ = CASES[case]
    agent = make_agent(make_company(), status=Agent.Status.IDLE)
    issue = make_issue(agent.company, status=status, assignee_agent_id=agent.id)
    arrange(issue, agent)
    return issue


@pytest.mark.parametrize("case", CASES)
def test_console_and_reconciler_agree_whether_an_issue_is_stranded(case):
    issue = _issue(case)
    expected = CASES[case][2]
    reconciler_ids = {stranded.issue_id for stranded in issues_stranded(limit=100).issues}
    assert Issue.objects.stranded().filter(pk=issue.pk).exists() is expected
    assert (issue.id in reconciler_ids) is expected


def test_admin_stranded_filter_lists_the_reconcilers_candidates_only(admin_client):
    issues = {case: _issue(case) for case in CASES}
    url = reverse("admin:issues_issue_changelist") + "?attention=stranded"
    page = admin_client.get(url).content.decode()
    reconciler_ids = {stranded.issue_id for stranded in issues_stranded(limit=100).issues}
    for case, issue in issues.items():
        assert (issue.identifier in page) is CASES[case][2], case
        assert (issue.id in reconciler_ids) is CASES[case][2], case
