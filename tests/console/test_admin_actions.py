"""Every console action changes what it says it changes, through the same services as the API."""

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from heartbeat.models import AgentWakeupRequest, HeartbeatRun
from issues.models import Issue
from paperclip.models import ActivityLog
from tests.factories import make_issue, make_run

RUNS = reverse("admin:heartbeat_heartbeatrun_changelist")
AGENTS = reverse("admin:heartbeat_agent_changelist")
ISSUES = reverse("admin:issues_issue_changelist")
REAP = reverse("admin:heartbeat_heartbeatrun_reap")


def _act(client, url, action, *objects, follow=True):
    return client.post(
        url,
        {"action": action, "index": 0, "_selected_action": [str(o.pk) for o in objects]},
        follow=follow,
    )


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.mark.django_db
def test_cancel_action_cancels_a_running_run_and_records_who(
    admin_client_, agent_a, instance_admin
):
    run = make_run(agent_a, status="running")
    response = _act(admin_client_, RUNS, "cancel_runs", run)
    run.refresh_from_db()
    assert run.status == HeartbeatRun.Status.CANCELLED
    assert run.error_code == "cancelled"
    assert run.finished_at is not None
    assert any("Cancelled 1 run(s)" in m for m in _messages(response))
    activity = ActivityLog.objects.get(action="heartbeat.cancelled", entity_id=str(run.pk))
    assert activity.actor_type == "user" and activity.actor_id == str(instance_admin.pk)


@pytest.mark.django_db
def test_cancel_action_leaves_finished_runs_alone(admin_client_, agent_a):
    run = make_run(agent_a, status="succeeded")
    response = _act(admin_client_, RUNS, "cancel_runs", run)
    run.refresh_from_db()
    assert run.status == HeartbeatRun.Status.SUCCEEDED
    assert any("already finished" in m for m in _messages(response))


@pytest.mark.django_db
def test_cancel_button_on_the_run_page_returns_to_the_run(admin_client_, agent_a):
    run = make_run(agent_a, status="queued")
    page = reverse("admin:heartbeat_heartbeatrun_change", args=[run.pk])
    assert 'id="pc-cancel-run"' in admin_client_.get(page).content.decode()
    response = admin_client_.post(
        RUNS,
        {
            "action": "cancel_runs",
            "index": 0,
            "_selected_action": str(run.pk),
            "_from_change_page": "1",
        },
    )
    assert response.status_code == 302 and response["Location"] == page
    run.refresh_from_db()
    assert run.status == HeartbeatRun.Status.CANCELLED


@pytest.mark.django_db
def test_board_user_cannot_cancel_another_company_run(board_client, agent_b):
    run = make_run(agent_b, status="running")
    _act(board_client, RUNS, "cancel_runs", run)
    run.refresh_from_db()
    assert run.status == HeartbeatRun.Status.RUNNING


@pytest.mark.django_db
def test_board_user_cancels_own_company_run(board_client, agent_a):
    run = make_run(agent_a, status="running")
    _act(board_client, RUNS, "cancel_runs", run)
    run.refresh_from_db()
    assert run.status == HeartbeatRun.Status.CANCELLED


@pytest.mark.django_db
def test_retry_now_queues_a_new_run_on_the_same_issue(admin_client_, company_a, agent_a):
    issue = make_issue(company_a, status="todo", assignee_agent_id=agent_a.id)
    lost = make_run(
        agent_a,
        status="failed",
        error_code="process_lost",
        context_snapshot={"issueId": str(issue.id), "taskKey": "k1"},
    )
    response = _act(admin_client_, RUNS, "retry_runs_now", lost)
    retry = HeartbeatRun.objects.exclude(pk=lost.pk).get(agent=agent_a)
    assert retry.status == HeartbeatRun.Status.QUEUED
    assert retry.context_snapshot["issueId"] == str(issue.id)
    assert retry.context_snapshot["retryOfRunId"] == str(lost.pk)
    assert retry.context_snapshot["retryReason"] == "manual_retry"
    assert any("queued" in m for m in _messages(response))


@pytest.mark.django_db
def test_retry_now_refuses_a_run_still_running(admin_client_, agent_a):
    run = make_run(agent_a, status="running")
    response = _act(admin_client_, RUNS, "retry_runs_now", run)
    assert HeartbeatRun.objects.filter(agent=agent_a).count() == 1
    assert any("cancel it first" in m for m in _messages(response))


@pytest.mark.django_db
def test_retry_now_refuses_a_run_that_succeeded(admin_client_, agent_a):
    run = make_run(agent_a, status="succeeded")
    response = _act(admin_client_, RUNS, "retry_runs_now", run)
    assert HeartbeatRun.objects.filter(agent=agent_a).count() == 1
    assert any("nothing to retry" in m for m in _messages(response))


@pytest.mark.django_db
def test_retry_now_reports_a_paused_agent(admin_client_, agent_a):
    run = make_run(agent_a, status="failed", error_code="process_lost")
    agent_a.status = "paused"
    agent_a.save()
    response = _act(admin_client_, RUNS, "retry_runs_now", run)
    assert HeartbeatRun.objects.filter(agent=agent_a).count() == 1
    assert any("cannot be woken" in m for m in _messages(response))


@pytest.mark.django_db
def test_wake_action_queues_a_run_for_the_agent(admin_client_, agent_a):
    response = _act(admin_client_, AGENTS, "wake_agents", agent_a)
    wake = AgentWakeupRequest.objects.get(agent=agent_a)
    assert wake.reason == "board_wake"
    assert wake.requested_by_actor_type == "user"
    assert HeartbeatRun.objects.get(agent=agent_a).status == HeartbeatRun.Status.QUEUED
    assert any("woken" in m for m in _messages(response))
    invoked = ActivityLog.objects.get(action="heartbeat.invoked", entity_id=str(agent_a.pk))
    assert invoked.actor_type == "user"


@pytest.mark.django_db
def test_release_action_gives_the_issue_back(admin_client_, company_a, agent_a):
    issue = make_issue(company_a, status="in_progress", assignee_agent_id=agent_a.id)
    run = make_run(agent_a, status="failed", error_code="process_lost")
    Issue.objects.filter(pk=issue.pk).update(checkout_run=run)
    response = _act(admin_client_, ISSUES, "release_issues", issue)
    issue.refresh_from_db()
    assert issue.status == Issue.Status.TODO
    assert issue.assignee_agent_id is None
    assert issue.checkout_run_id is None
    assert any(f"Released 1 issue(s): {issue.identifier}" in m for m in _messages(response))


def _orphan_on_another_host(agent):
    run = make_run(
        agent,
        status="running",
        process_pid=424242,
        process_host="ghost-host",
        owner_host="ghost-host",
        owner_pid=4242,
        lease_expires_at=timezone.now() - timedelta(minutes=10),
    )
    HeartbeatRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    return run


@pytest.mark.django_db
def test_reap_preview_lists_the_orphan_and_changes_nothing(admin_client_, agent_a):
    run = _orphan_on_another_host(agent_a)
    page = admin_client_.get(REAP).content.decode()
    assert reverse("admin:heartbeat_heartbeatrun_change", args=[run.pk]) in page
    assert "fail as process_lost" in page
    run.refresh_from_db()
    assert run.status == HeartbeatRun.Status.RUNNING


@pytest.mark.django_db
def test_reap_now_fails_the_orphan_and_queues_one_retry(admin_client_, agent_a):
    run = _orphan_on_another_host(agent_a)
    response = admin_client_.post(REAP, follow=True)
    run.refresh_from_db()
    assert run.status == HeartbeatRun.Status.FAILED
    assert run.error_code == "process_lost"
    assert HeartbeatRun.objects.filter(retry_of_run=run).count() == 1
    assert any("1 run(s) failed as process_lost" in m for m in _messages(response))


@pytest.mark.django_db
def test_board_user_cannot_start_a_sweep(board_client):
    assert board_client.get(REAP).status_code == 403
    assert board_client.post(REAP).status_code == 403


RECONCILE = reverse("admin:heartbeat_heartbeatrun_reconcile")


def _stranded_issue(company, agent):
    issue = make_issue(company, status="todo", assignee_agent_id=agent.id)
    make_run(
        agent,
        status="failed",
        error_code="process_lost",
        context_snapshot={"issueId": str(issue.id)},
    )
    return issue


@pytest.mark.django_db
def test_reconcile_preview_lists_the_stranded_issue_and_changes_nothing(
    admin_client_, company_a, agent_a
):
    issue = _stranded_issue(company_a, agent_a)
    page = admin_client_.get(RECONCILE).content.decode()
    assert issue.identifier in page
    assert "re-dispatch 1" in page
    assert HeartbeatRun.objects.filter(agent=agent_a).count() == 1


@pytest.mark.django_db
def test_reconcile_now_redispatches_the_stranded_issue(admin_client_, company_a, agent_a):
    issue = _stranded_issue(company_a, agent_a)
    response = admin_client_.post(RECONCILE, follow=True)
    recovery = HeartbeatRun.objects.get(agent=agent_a, status="queued")
    assert recovery.context_snapshot["issueId"] == str(issue.id)
    assert recovery.context_snapshot["retryReason"] == "assignment_recovery"
    assert any("re-dispatch 1" in m for m in _messages(response))


@pytest.mark.django_db
def test_board_user_cannot_start_a_reconcile(board_client):
    assert board_client.post(RECONCILE).status_code == 403


@pytest.mark.django_db
def test_pause_action_pauses_the_agent_and_cancels_its_runs(admin_client_, agent_a):
    run = make_run(agent_a, status="running")
    response = _act(admin_client_, AGENTS, "pause_agents", agent_a)
    agent_a.refresh_from_db()
    run.refresh_from_db()
    assert agent_a.status == "paused"
    assert run.status == HeartbeatRun.Status.CANCELLED
    assert any("cancelled 1 active run(s)" in m for m in _messages(response))
    assert ActivityLog.objects.filter(action="agent.paused", entity_id=str(agent_a.pk)).exists()


@pytest.mark.django_db
def test_resume_action_resumes_a_paused_agent(admin_client_, agent_a):
    agent_a.status = "paused"
    agent_a.save()
    response = _act(admin_client_, AGENTS, "resume_agents", agent_a)
    agent_a.refresh_from_db()
    assert agent_a.status == "idle"
    assert any("Resumed agent" in m for m in _messages(response))


@pytest.mark.django_db
def test_resume_action_reports_an_agent_that_is_not_paused(admin_client_, agent_a):
    response = _act(admin_client_, AGENTS, "resume_agents", agent_a)
    agent_a.refresh_from_db()
    assert agent_a.status == "idle"
    assert any("Cannot resume" in m for m in _messages(response))


@pytest.mark.django_db
def test_board_user_cannot_pause_another_company_agent(board_client, agent_b):
    _act(board_client, AGENTS, "pause_agents", agent_b)
    agent_b.refresh_from_db()
    assert agent_b.status == "idle"
