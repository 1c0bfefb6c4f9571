"""The issues services that the run engine and the sweeps call for their writes on issues and
comments: each a compare-and-set under the row lock its caller holds, with its own updated_at
rule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from issues.models import Issue, IssueComment
from issues.services.run_engine import (
    SystemComment,
    issue_checkout_for_run,
    issue_execution_lock_end,
    issue_execution_lock_take,
    issue_reopen_for_comment_wake,
    issue_system_comments_create,
)
from paperclip.models import ActivityLog
from tests.factories import make_agent, make_company, make_issue, make_run

pytestmark = pytest.mark.django_db

LONG_AGO = timezone.now() - timedelta(days=3)


def _aged(issue: Issue, **fields) -> Issue:
    """The issue with an old updated_at (and the given fields), as stored."""
    Issue.objects.filter(pk=issue.pk).update(updated_at=LONG_AGO, **fields)
    issue.refresh_from_db()
    return issue


def test_system_comments_are_written_in_one_statement_with_no_author(
    django_assert_num_queries,
):
    company = make_company()
    first, second = _aged(make_issue(company)), _aged(make_issue(company))
    now = timezone.now()

    with django_assert_num_queries(1):
        issue_system_comments_create(
            comments=[
                SystemComment(company_id=company.id, issue_id=first.id, body="blocked: one"),
                SystemComment(company_id=company.id, issue_id=second.id, body="blocked: two"),
            ],
            now=now,
        )

    comments = IssueComment.objects.order_by("body")
    assert [(c.issue_id, c.body) for c in comments] == [
        (first.id, "blocked: one"),
        (second.id, "blocked: two"),
    ]
    assert all(
        c.author_agent_id is None and c.author_user_id is None and c.created_by_run_id is None
        for c in comments
    )
    assert {(c.created_at, c.updated_at) for c in comments} == {(now, now)}
    # The change the comment explains stamps the issue, not the comment.
    first.refresh_from_db()
    assert first.updated_at == LONG_AGO


def test_no_system_comments_writes_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        issue_system_comments_create(comments=[], now=timezone.now())


def _lock_take(issue: Issue, run, **options) -> bool:
    return issue_execution_lock_take(
        issue_id=issue.id,
        company_id=issue.company_id,
        run_id=run.id,
        agent_name_key="worker",
        now=options.pop("now", timezone.now()),
        **options,
    )


def test_lock_take_points_a_free_lock_at_the_run_and_stamps_the_issue():
    agent = make_agent()
    issue = _aged(make_issue(agent.company))
    run = make_run(agent, status="running")
    now = timezone.now()

    assert _lock_take(issue, run, now=now)

    issue.refresh_from_db()
    assert issue.execution_run_id == run.id
    assert (issue.execution_agent_name_key, issue.execution_locked_at) == ("worker", now)
    assert issue.updated_at == now


def test_lock_take_renews_a_lock_the_run_already_holds():
    agent = make_agent()
    run = make_run(agent, status="running")
    issue = _aged(make_issue(agent.company), execution_run=run, execution_locked_at=LONG_AGO)
    now = timezone.now()

    assert _lock_take(issue, run, now=now)

    issue.refresh_from_db()
    assert (issue.execution_run_id, issue.execution_locked_at) == (run.id, now)


def test_lock_held_by_another_active_run_is_not_taken():
    agent = make_agent()
    holder, newcomer = make_run(agent, status="running"), make_run(agent)
    issue = _aged(make_issue(agent.company), execution_run=holder, execution_agent_name_key="x")

    assert not _lock_take(issue, newcomer)

    issue.refresh_from_db()
    assert (issue.execution_run_id, issue.execution_agent_name_key) == (holder.id, "x")
    assert issue.updated_at == LONG_AGO


def test_lock_take_in_another_company_changes_nothing():
    agent = make_agent()
    issue = _aged(make_issue(make_company()))
    run = make_run(agent)

    assert not issue_execution_lock_take(
        issue_id=issue.id,
        company_id=agent.company_id,
        run_id=run.id,
        agent_name_key="worker",
        now=timezone.now(),
    )

    issue.refresh_from_db()
    assert issue.execution_run_id is None


def test_lock_adopted_without_touch_keeps_updated_at():
    agent = make_agent()
    issue = _aged(make_issue(agent.company))
    run = make_run(agent)

    assert _lock_take(issue, run, touch_updated_at=False)

    issue.refresh_from_db()
    assert issue.execution_run_id == run.id
    assert issue.updated_at == LONG_AGO


def _checkout(issue: Issue, agent, run, now=None) -> bool:
    return issue_checkout_for_run(
        issue_id=issue.id,
        company_id=issue.company_id,
        agent_id=agent.id,
        run_id=run.id,
        now=now or timezone.now(),
    )


def test_run_checks_out_its_agents_todo_issue():
    agent = make_agent()
    issue = _aged(make_issue(agent.company, status="todo", assignee_agent_id=agent.id))
    run = make_run(agent, status="running")
    now = timezone.now()

    assert _checkout(issue, agent, run, now)

    issue.refresh_from_db()
    assert (issue.status, issue.checkout_run_id) == ("in_progress", run.id)
    assert issue.started_at == issue.updated_at == now


def test_run_checkout_keeps_the_first_start_time():
    agent = make_agent()
    issue = _aged(
        make_issue(agent.company, status="blocked", assignee_agent_id=agent.id),
        started_at=LONG_AGO,
    )

    assert _checkout(issue, agent, make_run(agent, status="running"))

    issue.refresh_from_db()
    assert (issue.status, issue.started_at) == ("in_progress", LONG_AGO)


def test_run_adopts_a_checkout_held_by_a_finished_run():
    agent = make_agent()
    finished = make_run(agent, status="failed")
    issue = _aged(
        make_issue(agent.company, status="in_progress", assignee_agent_id=agent.id),
        checkout_run=finished,
    )
    run = make_run(agent, status="running")

    assert _checkout(issue, agent, run)

    issue.refresh_from_db()
    assert issue.checkout_run_id == run.id


def test_checkout_held_by_another_active_run_is_not_taken():
    agent = make_agent()
    holder = make_run(agent, status="running")
    issue = _aged(
        make_issue(agent.company, status="in_progress", assignee_agent_id=agent.id),
        checkout_run=holder,
    )

    assert not _checkout(issue, agent, make_run(agent))

    issue.refresh_from_db()
    assert (issue.checkout_run_id, issue.updated_at) == (holder.id, LONG_AGO)


def test_run_does_not_check_out_another_agents_issue():
    agent = make_agent()
    other = make_agent(agent.company)
    issue = _aged(make_issue(agent.company, status="todo", assignee_agent_id=other.id))

    assert not _checkout(issue, agent, make_run(agent, status="running"))

    issue.refresh_from_db()
    assert (issue.status, issue.checkout_run_id) == ("todo", None)


def test_run_does_not_check_out_a_done_issue():
    agent = make_agent()
    issue = _aged(make_issue(agent.company, status="done", assignee_agent_id=agent.id))

    assert not _checkout(issue, agent, make_run(agent, status="running"))

    issue.refresh_from_db()
    assert (issue.status, issue.checkout_run_id) == ("done", None)


def test_lock_end_releases_the_runs_lock_and_keeps_the_checkout():
    agent = make_agent()
    run = make_run(agent, status="succeeded")
    issue = _aged(
        make_issue(agent.company),
        execution_run=run,
        execution_agent_name_key="worker",
        execution_locked_at=LONG_AGO,
        checkout_run=run,
    )
    now = timezone.now()

    assert issue_execution_lock_end(issue_id=issue.id, run_id=run.id, now=now)

    issue.refresh_from_db()
    assert (issue.execution_run_id, issue.execution_agent_name_key) == (None, None)
    assert issue.execution_locked_at is None
    assert (issue.checkout_run_id, issue.updated_at) == (run.id, now)


def test_lock_end_leaves_a_lock_another_run_holds():
    agent = make_agent()
    ended, holder = make_run(agent, status="failed"), make_run(agent, status="running")
    issue = _aged(make_issue(agent.company), execution_run=holder)

    assert not issue_execution_lock_end(issue_id=issue.id, run_id=ended.id, now=timezone.now())

    issue.refresh_from_db()
    assert (issue.execution_run_id, issue.updated_at) == (holder.id, LONG_AGO)


def test_comment_wake_reopens_a_done_issue_with_its_activity():
    agent = make_agent()
    issue = _aged(make_issue(agent.company, status="done"), completed_at=LONG_AGO)
    now = timezone.now()

    assert issue_reopen_for_comment_wake(issue=issue, agent_id=agent.id, now=now)

    assert issue.status == "todo"
    issue.refresh_from_db()
    assert (issue.status, issue.completed_at, issue.updated_at) == ("todo", None, now)
    reopened = ActivityLog.objects.get(action="issue.reopened")
    assert (reopened.entity_id, reopened.agent_id) == (str(issue.id), agent.id)
    assert reopened.details == {"from": "done", "to": "todo", "reason": "deferred_comment_wake"}


def test_comment_wake_leaves_an_open_issue_as_it_is():
    agent = make_agent()
    issue = _aged(make_issue(agent.company, status="in_progress", assignee_agent_id=agent.id))

    assert not issue_reopen_for_comment_wake(issue=issue, agent_id=agent.id, now=timezone.now())

    issue.refresh_from_db()
    assert (issue.status, issue.updated_at) == ("in_progress", LONG_AGO)
    assert not ActivityLog.objects.filter(action="issue.reopened").exists()
