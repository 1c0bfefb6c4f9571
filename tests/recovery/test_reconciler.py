"""The reconciler on the database: reference table 5.3 and the improvements of issue 4."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from heartbeat.models import Agent, AgentWakeupRequest, HeartbeatRun, SweepRecord
from heartbeat.services import reconcile_stranded_assigned_issues
from issues.models import Issue, IssueComment
from paperclip.models import ActivityLog
from tests.factories import make_agent, make_issue, make_run

pytestmark = pytest.mark.django_db

FAILURE = "run failed before issue advanced"


@pytest.fixture
def agent() -> Agent:
    return make_agent(status=Agent.Status.IDLE)


def stranded(
    agent: Agent, status: str = "todo", retry_reason: str | None = None, **run_fields
) -> tuple[Issue, HeartbeatRun]:
    """An issue assigned to the agent whose latest run failed and left nothing behind."""
    issue = make_issue(agent.company, status=status, assignee_agent_id=agent.id)
    context = {"issueId": str(issue.id)}
    if retry_reason:
        context["retryReason"] = retry_reason
    run_fields["status"] = run_fields.pop("run_status", HeartbeatRun.Status.FAILED)
    run_fields.setdefault("error_code", "process_lost")
    run_fields.setdefault("error", FAILURE)
    run = make_run(agent, context_snapshot=context, **run_fields)
    return issue, run


def runs_of(issue: Issue):
    return HeartbeatRun.objects.filter(context_snapshot__issueId=str(issue.id)).order_by(
        "created_at"
    )


def test_todo_issue_whose_last_run_failed_is_redispatched_once(agent):
    issue, failed = stranded(agent)

    result = reconcile_stranded_assigned_issues()

    assert (result.dispatch_requeued, result.continuation_requeued, result.escalated) == (1, 0, 0)
    assert (result.skipped, result.issue_ids) == (0, [issue.id])
    runs = list(runs_of(issue))
    assert len(runs) == 2
    recovery = runs[-1]
    assert recovery.status == "queued"
    assert recovery.context_snapshot["retryReason"] == "assignment_recovery"
    assert recovery.context_snapshot["wakeReason"] == "issue_assignment_recovery"
    assert recovery.retry_of_run_id == failed.id
    wakeup = recovery.wakeup_request
    assert (wakeup.status, wakeup.reason, wakeup.run_id) == (
        "queued",
        "issue_assignment_recovery",
        recovery.id,
    )


def test_todo_issue_whose_redispatch_failed_is_escalated_with_one_comment(agent):
    issue, _ = stranded(agent, retry_reason="assignment_recovery")

    result = reconcile_stranded_assigned_issues()

    assert (result.dispatch_requeued, result.escalated, result.issue_ids) == (0, 1, [issue.id])
    issue.refresh_from_db()
    assert issue.status == "blocked"
    assert issue.assignee_agent_id == agent.id
    comment = IssueComment.objects.get(issue=issue)
    assert "retried dispatch" in comment.body
    assert f"Latest retry failure: `process_lost` - {FAILURE}." in comment.body
    assert (comment.author_agent_id, comment.author_user_id, comment.created_by_run_id) == (
        None,
        None,
        None,
    )
    assert runs_of(issue).count() == 1


def test_in_progress_issue_whose_last_run_failed_is_continued_once(agent):
    issue, _ = stranded(agent, status="in_progress")

    result = reconcile_stranded_assigned_issues()

    assert (result.continuation_requeued, result.issue_ids) == (1, [issue.id])
    runs = list(runs_of(issue))
    assert len(runs) == 2
    assert runs[-1].context_snapshot["retryReason"] == "issue_continuation_needed"


def test_in_progress_issue_whose_continuation_failed_is_escalated(agent):
    issue, _ = stranded(agent, status="in_progress", retry_reason="issue_continuation_needed")

    result = reconcile_stranded_assigned_issues()

    assert (result.continuation_requeued, result.escalated) == (0, 1)
    issue.refresh_from_db()
    assert issue.status == "blocked"
    comment = IssueComment.objects.get(issue=issue)
    assert "retried continuation" in comment.body
    assert f"Latest retry failure: `process_lost` - {FAILURE}." in comment.body


def test_user_assigned_issue_is_never_a_candidate(agent):
    issue = make_issue(agent.company, status="todo", assignee_user_id="user-1")
    make_run(agent, status="failed", context_snapshot={"issueId": str(issue.id)})

    result = reconcile_stranded_assigned_issues()

    assert (
        result.dispatch_requeued,
        result.continuation_requeued,
        result.escalated,
        result.skipped,
        result.issue_ids,
    ) == (0, 0, 0, 0, [])
    issue.refresh_from_db()
    assert issue.status == "todo"
    assert runs_of(issue).count() == 1


def test_escalation_records_an_activity_row(agent):
    issue, failed = stranded(agent, retry_reason="assignment_recovery")

    reconcile_stranded_assigned_issues()

    activity = ActivityLog.objects.get(
        entity_type="issue", entity_id=str(issue.id), action="issue.updated"
    )
    assert activity.details == {
        "identifier": issue.identifier,
        "status": "blocked",
        "previousStatus": "todo",
        "source": "heartbeat.reconcile_stranded_assigned_issue",
        "latestRunId": str(failed.id),
        "latestRunStatus": "failed",
        "latestRunErrorCode": "process_lost",
    }


def test_second_sweep_writes_no_second_comment(agent):
    issue, _ = stranded(agent, retry_reason="assignment_recovery")
    reconcile_stranded_assigned_issues()

    result = reconcile_stranded_assigned_issues()

    assert result.escalated == 0
    assert IssueComment.objects.filter(issue=issue).count() == 1


def test_second_sweep_does_not_requeue_again_while_the_recovery_is_queued(agent):
    issue, _ = stranded(agent)
    reconcile_stranded_assigned_issues()

    result = reconcile_stranded_assigned_issues()

    assert result.dispatch_requeued == 0
    assert runs_of(issue).count() == 2


def test_failed_recovery_escalates_on_the_next_sweep(agent):
    issue, _ = stranded(agent)
    reconcile_stranded_assigned_issues()
    runs_of(issue).filter(status="queued").update(
        status="failed", started_at=issue.created_at, finished_at=issue.created_at
    )
    AgentWakeupRequest.objects.filter(status="queued").update(status="failed")

    result = reconcile_stranded_assigned_issues()

    assert result.escalated == 1


def test_process_loss_retry_of_a_recovery_does_not_restart_the_count(agent):
    # The reaper's retry overwrote retryReason but kept the recovery in retryReasons.
    issue, _ = stranded(agent, status="in_progress")
    HeartbeatRun.objects.filter(context_snapshot__issueId=str(issue.id)).update(
        context_snapshot={
            "issueId": str(issue.id),
            "retryReason": "process_lost",
            "retryReasons": ["issue_continuation_needed", "process_lost"],
        }
    )

    result = reconcile_stranded_assigned_issues()

    assert result.escalated == 1


@pytest.mark.parametrize("wake_status", ["deferred_issue_execution", "queued"])
def test_issue_with_a_waiting_wake_is_not_stranded(agent, wake_status):
    issue, _ = stranded(agent)
    AgentWakeupRequest.objects.create(
        company_id=agent.company_id,
        agent=agent,
        source="assignment",
        status=wake_status,
        payload={"issueId": str(issue.id)},
    )

    result = reconcile_stranded_assigned_issues()

    assert (result.dispatch_requeued, result.skipped) == (0, 0)


def test_issue_with_an_active_run_is_not_stranded(agent):
    issue, _ = stranded(agent)
    make_run(agent, status="running", context_snapshot={"issueId": str(issue.id)})

    assert reconcile_stranded_assigned_issues().dispatch_requeued == 0


def test_paused_agent_issue_is_skipped():
    agent = make_agent(status=Agent.Status.PAUSED)
    stranded(agent)

    result = reconcile_stranded_assigned_issues()

    assert (result.dispatch_requeued, result.skipped) == (0, 1)


def test_todo_issue_whose_last_run_succeeded_is_skipped(agent):
    stranded(agent, run_status="succeeded", error_code=None, error=None)

    result = reconcile_stranded_assigned_issues()

    assert (result.dispatch_requeued, result.skipped) == (0, 1)


def test_in_progress_issue_without_any_run_is_skipped(agent):
    make_issue(agent.company, status="in_progress", assignee_agent_id=agent.id)

    result = reconcile_stranded_assigned_issues()

    assert (result.continuation_requeued, result.skipped) == (0, 1)


def test_recovery_of_an_invokable_agent_is_dispatched_after_commit(
    agent, dispatched, django_capture_on_commit_callbacks
):
    issue, _ = stranded(agent)

    with django_capture_on_commit_callbacks(execute=True):
        reconcile_stranded_assigned_issues()

    assert dispatched == [str(runs_of(issue).last().id)]


def test_dry_run_changes_nothing(agent):
    issue, _ = stranded(agent, retry_reason="assignment_recovery")
    other, _ = stranded(agent)

    result = reconcile_stranded_assigned_issues(dry_run=True)

    assert (result.escalated, result.dispatch_requeued, result.dry_run) == (1, 1, True)
    assert result.issue_ids == [issue.id, other.id]
    issue.refresh_from_db()
    assert issue.status == "todo"
    assert not IssueComment.objects.exists()
    assert HeartbeatRun.objects.count() == 2
    assert not SweepRecord.objects.exists()


def test_issue_ids_come_in_creation_order(agent):
    issues = [stranded(agent)[0] for _ in range(5)]

    result = reconcile_stranded_assigned_issues(batch_size=2)

    assert result.issue_ids == [issue.id for issue in issues]


def test_sweep_is_recorded_for_the_dashboard(agent):
    issue, _ = stranded(agent)

    reconcile_stranded_assigned_issues()

    record = SweepRecord.objects.get(kind="reconcile")
    assert record.result["issue_ids"] == [str(issue.id)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(90)
def test_racing_reconcilers_requeue_once_and_comment_once(agent):
    requeue = [stranded(agent)[0] for _ in range(10)]
    escalate = [stranded(agent, retry_reason="assignment_recovery")[0] for _ in range(10)]
    start = threading.Barrier(6)
    results, failures = [], []

    def reconciler() -> None:
        try:
            start.wait(30)
            results.append(reconcile_stranded_assigned_issues(single_flight=False, batch_size=3))
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=reconciler) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert failures == []
    assert sum(r.dispatch_requeued for r in results) == 10
    assert sum(r.escalated for r in results) == 10
    for issue in requeue:
        assert runs_of(issue).count() == 2
    for issue in escalate:
        assert IssueComment.objects.filter(issue=issue).count() == 1


def test_stale_execution_lock_is_cleared_for_the_recovery_run(agent):
    issue, failed = stranded(agent)
    Issue.objects.filter(pk=issue.pk).update(execution_run=failed, execution_agent_name_key="x")

    result = reconcile_stranded_assigned_issues()

    assert result.dispatch_requeued == 1
    issue.refresh_from_db()
    assert (issue.execution_run_id, issue.execution_agent_name_key) == (None, None)
