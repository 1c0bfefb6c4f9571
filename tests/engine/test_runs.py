"""cancel_run, run_retry_now, report_run_activity, get_run (reference 4) and resume_queued_runs."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from heartbeat.models import AgentWakeupRequest, HeartbeatRun
from heartbeat.services import (
    RunNotFound,
    RunNotRetryable,
    cancel_run,
    get_run,
    report_run_activity,
    resume_queued_runs,
    run_retry_now,
    wake_agent,
)
from issues.models import Issue
from paperclip.models import ActivityLog
from tests.factories import make_agent, make_company, make_issue, make_run

pytestmark = pytest.mark.django_db


def test_cancel_of_an_unknown_run_is_not_found():
    with pytest.raises(RunNotFound, match="Heartbeat run not found"):
        cancel_run(uuid.uuid4())


def test_cancel_of_a_finished_run_returns_it_unchanged():
    run = make_run(make_agent(), status="succeeded")
    assert cancel_run(run.id).status == "succeeded"
    assert not run.events.exists()


def test_cancel_of_a_queued_run_releases_its_issue_and_promotes_the_deferred_wake(
    dispatched, telemetry, django_capture_on_commit_callbacks
):
    company = make_company()
    first, second = make_agent(company, name="Ada", role="cto"), make_agent(company, name="Bob")
    issue = make_issue(company)
    queued = wake_agent(agent_id=first.id, payload={"issueId": str(issue.id)}).run
    Issue.objects.filter(pk=issue.pk).update(execution_run=queued)
    deferred = wake_agent(agent_id=second.id, payload={"issueId": str(issue.id)}).wakeup

    with django_capture_on_commit_callbacks(execute=True):
        cancelled = cancel_run(queued.id)

    deferred.refresh_from_db()
    issue.refresh_from_db()
    assert (cancelled.status, cancelled.error_code) == ("cancelled", "cancelled")
    assert AgentWakeupRequest.objects.get(pk=queued.wakeup_request_id).status == "cancelled"
    assert cancelled.events.filter(message="run cancelled", level="warn").exists()
    assert deferred.status == "queued" and issue.execution_run_id == deferred.run_id
    first.refresh_from_db()
    assert first.status == "idle" and first.last_heartbeat_at is not None
    assert telemetry == [
        ("agent.first_heartbeat", {"agent_role": "cto", "agent_id": str(first.id)})
    ]


def test_activity_report_clears_a_detached_warning():
    run = make_run(
        make_agent(),
        status="running",
        error_code="process_detached",
        error="Lost in-memory process handle, but child pid 123 is still alive",
        detached_at=timezone.now(),
    )
    cleared = report_run_activity(run.id)
    assert cleared is not None
    assert (cleared.error, cleared.error_code, cleared.detached_at) == (None, None, None)
    assert cleared.last_activity_at is not None
    assert get_run(run.id).error_code is None
    assert run.events.filter(message__startswith="Detached child process reported").exists()


def test_activity_report_on_a_healthy_run_only_notes_the_activity():
    run = make_run(make_agent(), status="running")
    assert report_run_activity(run.id) is None
    run.refresh_from_db()
    assert run.last_activity_at is not None and not run.events.exists()


def test_get_run_summarises_an_oversized_result():
    run = make_run(
        make_agent(),
        status="succeeded",
        result_json={"summary": "s" * 1000, "stdout": "o" * 100_000, "costUsd": 1.5},
    )
    summary = get_run(run.id).result_json
    assert summary["truncated"] is True
    assert summary["truncationReason"] == "oversized_result_json"
    assert len(summary["summary"]) == 500 and len(summary["stdout"]) == 4096
    assert summary["stdoutTruncated"] is True and summary["costUsd"] == 1.5
    assert get_run(run.id, unsafe_full_result_json=True).result_json["stdout"] == "o" * 100_000
    assert get_run(uuid.uuid4()) is None


def test_resume_dispatches_parked_runs_up_to_each_agents_free_slots(
    dispatched, django_capture_on_commit_callbacks
):
    busy = make_agent()
    make_run(busy, status="running")
    idle = make_agent(runtime_config={"heartbeat": {"maxConcurrentRuns": 2}})
    paused = make_agent(status="paused")
    expired = timezone.now() - timedelta(seconds=1)
    parked = [make_run(idle, lease_expires_at=expired) for _ in range(3)]
    parked += [make_run(busy), make_run(paused)]
    in_flight = make_run(make_agent(), lease_expires_at=timezone.now() + timedelta(minutes=1))
    too_young = make_run(make_agent())
    old = timezone.now() - timedelta(minutes=5)
    for age, run in enumerate([*parked, in_flight]):
        HeartbeatRun.objects.filter(pk=run.pk).update(created_at=old + timedelta(seconds=age))
    dispatched.clear()

    with django_capture_on_commit_callbacks(execute=True):
        result = resume_queued_runs()

    assert result.run_ids == [str(parked[0].id), str(parked[1].id)]
    assert dispatched == result.run_ids
    assert str(in_flight.id) not in dispatched and str(too_young.id) not in dispatched
    # Their dispatch lease is out now: a second sweep right after hands nothing out twice.
    assert resume_queued_runs().dispatched == 0


def test_cancel_asked_for_by_a_person_is_in_the_activity_log():
    run = make_run(make_agent(), status="running")
    cancel_run(run.id, actor_type="user", actor_id="u1", via="admin")
    activity = ActivityLog.objects.get(action="heartbeat.cancelled", run=run)
    assert (activity.actor_type, activity.actor_id) == ("user", "u1")
    assert activity.details == {"previousStatus": "running", "status": "cancelled", "via": "admin"}


def test_cancel_of_a_finished_run_writes_no_cancelled_activity():
    run = make_run(make_agent(), status="failed", error_code="process_lost")
    cancel_run(run.id, actor_type="user", actor_id="u1")
    assert not ActivityLog.objects.filter(action="heartbeat.cancelled").exists()


def test_retry_now_wakes_the_agent_again_on_the_runs_issue(dispatched):
    agent = make_agent()
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    lost = make_run(
        agent,
        status="failed",
        error_code="process_lost",
        context_snapshot={"issueId": str(issue.id), "taskKey": "k1"},
    )
    result = run_retry_now(run_id=lost.id, actor_type="user", actor_id="u1")
    assert result.run.status == "queued" and result.run.pk != lost.pk
    assert result.run.context_snapshot["retryOfRunId"] == str(lost.pk)
    assert result.run.context_snapshot["retryReason"] == "manual_retry"
    assert result.run.context_snapshot["taskKey"] == "k1"
    assert result.wakeup.payload == {"retryOfRunId": str(lost.pk), "issueId": str(issue.id)}
    invoked = ActivityLog.objects.get(action="heartbeat.invoked", run=result.run)
    assert invoked.details["retryOfRunId"] == str(lost.pk)
    assert (invoked.actor_type, invoked.actor_id) == ("user", "u1")


def test_retry_now_refuses_a_run_that_is_still_active():
    run = make_run(make_agent(), status="queued")
    with pytest.raises(RunNotRetryable, match="is still queued: cancel it first to retry"):
        run_retry_now(run_id=run.id, actor_type="user", actor_id="u1")
    assert HeartbeatRun.objects.count() == 1


def test_retry_now_refuses_a_run_that_succeeded():
    run = make_run(make_agent(), status="succeeded")
    with pytest.raises(RunNotRetryable, match="there is nothing to retry"):
        run_retry_now(run_id=run.id, actor_type="user", actor_id="u1")
    assert not ActivityLog.objects.filter(action="heartbeat.invoked").exists()
