"""The database itself refuses states the product must never reach."""

import pytest
from django.db import IntegrityError, transaction

from heartbeat.models import HeartbeatRun, HeartbeatRunEvent
from issues.models import Issue
from paperclip.models import Company
from tests.factories import make_agent, make_company, make_issue, make_run, make_wakeup

pytestmark = pytest.mark.django_db


def test_duplicate_issue_identifier_is_refused():
    issue = make_issue()
    with pytest.raises(IntegrityError), transaction.atomic():
        Issue.objects.create(
            company=make_company(), title="copy", issue_number=1, identifier=issue.identifier
        )


def test_duplicate_company_issue_prefix_is_refused():
    make_company(issue_prefix="DUP")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_company(issue_prefix="DUP")


def test_second_retry_of_one_run_is_refused():
    agent = make_agent()
    lost = make_run(agent, status=HeartbeatRun.Status.FAILED, error_code="process_lost")
    make_run(agent, retry_of_run=lost, process_loss_retry_count=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_run(agent, retry_of_run=lost, process_loss_retry_count=1)


def test_duplicate_run_event_seq_is_refused():
    agent = make_agent()
    run = make_run(agent)
    fields = dict(company_id=agent.company_id, run=run, agent=agent, event_type="lifecycle")
    HeartbeatRunEvent.objects.create(seq=1, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        HeartbeatRunEvent.objects.create(seq=1, **fields)


@pytest.mark.parametrize(
    "make_invalid",
    [
        lambda agent: make_run(agent, status="lost"),
        lambda agent: make_wakeup(agent, status="timed_out"),
        lambda agent: make_issue(agent.company, status="open"),
        lambda agent: make_agent(agent.company, status="sleeping"),
        lambda agent: Company.objects.create(name="x", issue_prefix="BAD", status="gone"),
    ],
    ids=["run", "wakeup", "issue", "agent", "company"],
)
def test_invalid_status_is_refused(make_invalid):
    agent = make_agent()
    with pytest.raises(IntegrityError), transaction.atomic():
        make_invalid(agent)


def test_finished_run_without_finished_at_is_refused():
    agent = make_agent()
    with pytest.raises(IntegrityError), transaction.atomic():
        make_run(agent, status=HeartbeatRun.Status.SUCCEEDED, finished_at=None)


def test_second_active_run_for_one_issue_is_refused():
    agent = make_agent()
    issue = make_issue(agent.company)
    make_run(agent, status=HeartbeatRun.Status.RUNNING, context_snapshot={"issueId": str(issue.id)})
    with pytest.raises(IntegrityError), transaction.atomic():
        make_run(agent, context_snapshot={"issueId": str(issue.id)})


def test_finished_runs_of_one_issue_do_not_count_as_active():
    agent = make_agent()
    ctx = {"issueId": "11111111-1111-1111-1111-111111111111"}
    make_run(agent, status=HeartbeatRun.Status.FAILED, context_snapshot=ctx)
    make_run(agent, status=HeartbeatRun.Status.SUCCEEDED, context_snapshot=ctx)
    make_run(agent, context_snapshot=ctx)
    assert HeartbeatRun.objects.filter(context_snapshot__issueId=ctx["issueId"]).count() == 3


def test_issue_with_two_assignees_is_refused():
    agent = make_agent()
    # Written past issue_create, which refuses it first: the table must refuse it too.
    with pytest.raises(IntegrityError), transaction.atomic():
        Issue.objects.create(
            company=agent.company,
            title="t",
            issue_number=1,
            identifier="X-1",
            assignee_agent_id=agent.id,
            assignee_user_id="user-1",
        )


def test_in_progress_issue_without_assignee_is_refused():
    with pytest.raises(IntegrityError), transaction.atomic():
        Issue.objects.create(
            company=make_company(),
            title="t",
            issue_number=1,
            identifier="X-1",
            status=Issue.Status.IN_PROGRESS,
        )


def test_repeated_idempotency_key_for_one_agent_is_refused():
    agent = make_agent()
    make_wakeup(agent, idempotency_key="k-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_wakeup(agent, idempotency_key="k-1")
    assert make_wakeup(make_agent(agent.company), idempotency_key="k-1").pk
