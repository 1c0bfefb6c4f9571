"""The reaper on the database: reference table 3.2 and the improvements of issue 4."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from heartbeat import process_control
from heartbeat.models import (
    Agent,
    AgentRuntimeState,
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunSupervisor,
    SweepRecord,
)
from heartbeat.services import reap_orphaned_runs
from issues.models import Issue
from paperclip.models import ActivityLog
from tests.engine.telemetry import RecordingTelemetryClient
from tests.factories import make_agent, make_issue, make_run
from tests.recovery.builders import DEAD_PID, make_running_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent() -> Agent:
    # Paused, as in the reference's fixture: the retry must stay queued, not start.
    return make_agent(status=Agent.Status.PAUSED, role=Agent.Role.ENGINEER)


def test_dead_pid_fails_run_and_queues_one_retry_holding_the_issue(agent):
    issue = make_issue(agent.company)
    run = make_running_run(agent, pid=DEAD_PID, issue=issue)

    result = reap_orphaned_runs()

    assert (result.reaped, result.run_ids) == (1, [run.id])
    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "process_lost")
    assert run.finished_at is not None
    retry = HeartbeatRun.objects.get(agent=agent, retry_of_run=run)
    assert HeartbeatRun.objects.filter(agent=agent).count() == 2
    assert retry.status == "queued"
    assert retry.process_loss_retry_count == 1
    assert retry.context_snapshot["retryOfRunId"] == str(run.id)
    assert retry.context_snapshot["retryReason"] == "process_lost"
    assert retry.context_snapshot["wakeReason"] == "process_lost_retry"
    assert retry.context_snapshot["issueId"] == str(issue.id)
    issue.refresh_from_db()
    assert issue.execution_run_id == retry.id
    assert issue.checkout_run_id == run.id


def test_original_wakeup_fails_with_the_run_error(agent):
    run = make_running_run(agent, pid=DEAD_PID)

    reap_orphaned_runs()

    run.refresh_from_db()
    wakeup = AgentWakeupRequest.objects.get(pk=run.wakeup_request_id)
    assert wakeup.status == "failed"
    assert wakeup.error == run.error
    assert run.error == f"Process lost -- child pid {DEAD_PID} is no longer running; retrying once"


def test_retry_gets_its_own_queued_wakeup(agent):
    run = make_running_run(agent, pid=DEAD_PID)

    reap_orphaned_runs()

    retry = HeartbeatRun.objects.get(retry_of_run=run)
    wakeup = retry.wakeup_request
    assert (wakeup.status, wakeup.reason, wakeup.source) == (
        "queued",
        "process_lost_retry",
        "automation",
    )
    assert wakeup.run_id == retry.id
    assert wakeup.payload == {"retryOfRunId": str(run.id)}


def test_retry_wake_names_the_issue_as_the_lost_runs_context_does(agent):
    # The reconciler's recovery runs and the session retry queue the same way (one function):
    # the wake's issueId is the context's value as is, not its text.
    run = make_running_run(agent, pid=DEAD_PID, context_snapshot={"issueId": 42})

    reap_orphaned_runs()

    wakeup = HeartbeatRun.objects.get(retry_of_run=run).wakeup_request
    assert wakeup.payload == {"issueId": 42, "retryOfRunId": str(run.id)}


def test_used_retry_budget_fails_without_retry_and_releases_the_issue(agent):
    issue = make_issue(agent.company)
    run = make_running_run(agent, pid=DEAD_PID, issue=issue, process_loss_retry_count=1)

    result = reap_orphaned_runs()

    assert result.reaped == 1
    assert HeartbeatRun.objects.filter(agent=agent).count() == 1
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error == f"Process lost -- child pid {DEAD_PID} is no longer running"
    issue.refresh_from_db()
    assert issue.execution_run_id is None
    assert issue.checkout_run_id == run.id


def test_run_without_recorded_process_is_lost_without_retry(agent):
    run = make_running_run(agent, pid=None)

    result = reap_orphaned_runs()

    assert result.run_ids == [run.id]
    run.refresh_from_db()
    assert run.error == "Process lost -- server may have restarted"
    assert not HeartbeatRun.objects.filter(retry_of_run=run).exists()


def test_queued_runs_are_never_candidates(agent):
    run = make_run(agent, status=HeartbeatRun.Status.QUEUED)

    assert reap_orphaned_runs().reaped == 0
    run.refresh_from_db()
    assert run.status == "queued"


def test_run_with_live_owner_and_fresh_lease_is_untouched(agent):
    run = make_running_run(agent, pid=DEAD_PID, owner="self")

    assert reap_orphaned_runs().reaped == 0
    run.refresh_from_db()
    assert run.status == "running"


def test_run_whose_local_owner_died_is_orphaned_despite_a_fresh_lease(agent):
    run = make_running_run(agent, pid=DEAD_PID, owner="dead")

    assert reap_orphaned_runs().run_ids == [run.id]


def test_expired_lease_orphans_a_run_even_with_its_owner_alive(agent):
    run = make_running_run(
        agent, pid=DEAD_PID, owner="self", lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert reap_orphaned_runs().run_ids == [run.id]


def test_periodic_sweep_skips_recently_updated_runs(agent):
    fresh = make_running_run(agent, pid=DEAD_PID)
    stale = make_running_run(agent, pid=DEAD_PID, updated_ago=timedelta(minutes=6))

    result = reap_orphaned_runs(stale_threshold_sec=300)

    assert result.run_ids == [stale.id]
    fresh.refresh_from_db()
    assert fresh.status == "running"


def test_run_that_finished_meanwhile_is_left_alone(agent):
    # A finished run is no longer a candidate: the failing write is a compare-and-set from
    # running, so the engine's own finish always wins over a late reaper.
    run = make_running_run(agent, pid=DEAD_PID)
    HeartbeatRun.objects.filter(pk=run.pk).update(status="succeeded", finished_at=timezone.now())

    assert reap_orphaned_runs().reaped == 0
    run.refresh_from_db()
    assert run.status == "succeeded"


def test_results_come_in_creation_order(agent):
    runs = [make_running_run(agent, pid=DEAD_PID) for _ in range(5)]

    result = reap_orphaned_runs(batch_size=2)

    assert result.run_ids == [run.id for run in runs]


def test_retry_is_not_queued_for_a_cancelled_issue(agent):
    issue = make_issue(agent.company)
    run = make_running_run(agent, pid=DEAD_PID, issue=issue)
    Issue.objects.filter(pk=issue.pk).update(status=Issue.Status.CANCELLED)

    reap_orphaned_runs()

    assert not HeartbeatRun.objects.filter(retry_of_run=run).exists()
    issue.refresh_from_db()
    assert issue.execution_run_id is None


def test_agent_status_and_runtime_state_record_the_loss():
    agent = make_agent(status=Agent.Status.RUNNING)
    run = make_running_run(agent, pid=DEAD_PID, process_loss_retry_count=1)

    reap_orphaned_runs()

    agent.refresh_from_db()
    assert agent.status == "error"
    assert agent.last_heartbeat_at is not None
    state = AgentRuntimeState.objects.get(agent=agent)
    assert (state.last_run_id, state.last_run_status) == (run.id, "failed")
    assert "Process lost" in state.last_error


def test_agent_with_earlier_heartbeats_is_settled_in_bulk():
    agent = make_agent(status=Agent.Status.RUNNING, last_heartbeat_at=timezone.now())
    run = make_running_run(agent, pid=DEAD_PID)

    reap_orphaned_runs()

    agent.refresh_from_db()
    assert agent.status == "error"
    assert AgentRuntimeState.objects.get(agent=agent).last_run_id == run.id


def test_agent_with_another_running_run_stays_running():
    agent = make_agent(status=Agent.Status.RUNNING, last_heartbeat_at=timezone.now())
    make_running_run(agent, pid=DEAD_PID)
    make_running_run(agent, pid=DEAD_PID, owner="self")

    assert reap_orphaned_runs().reaped == 1

    agent.refresh_from_db()
    assert agent.status == "running"


def test_paused_agent_stays_paused(agent):
    make_running_run(agent, pid=DEAD_PID)

    reap_orphaned_runs()

    agent.refresh_from_db()
    assert agent.status == "paused"


def test_first_heartbeat_of_an_agent_is_reported(settings, django_capture_on_commit_callbacks):
    settings.PAPERCLIP_TELEMETRY_CLIENT = "tests.engine.telemetry.RecordingTelemetryClient"
    RecordingTelemetryClient.events.clear()
    agent = make_agent(status=Agent.Status.RUNNING, role=Agent.Role.ENGINEER)
    make_running_run(agent, pid=DEAD_PID)

    with django_capture_on_commit_callbacks(execute=True):
        reap_orphaned_runs()

    assert RecordingTelemetryClient.events == [
        ("agent.first_heartbeat", {"agent_role": "engineer", "agent_id": str(agent.id)})
    ]


def test_retry_of_an_invokable_agent_is_dispatched_after_commit(
    dispatched, django_capture_on_commit_callbacks
):
    agent = make_agent(status=Agent.Status.RUNNING)
    run = make_running_run(agent, pid=DEAD_PID)

    with django_capture_on_commit_callbacks(execute=True):
        reap_orphaned_runs()

    retry = HeartbeatRun.objects.get(retry_of_run=run)
    assert dispatched == [str(retry.id)]


def test_retry_of_a_paused_agent_stays_queued_undispatched(
    agent, dispatched, django_capture_on_commit_callbacks
):
    make_running_run(agent, pid=DEAD_PID)

    with django_capture_on_commit_callbacks(execute=True):
        reap_orphaned_runs()

    assert dispatched == []


def test_each_decision_writes_a_run_event_and_an_activity_row(agent):
    run = make_running_run(agent, pid=DEAD_PID)

    reap_orphaned_runs()

    retry = HeartbeatRun.objects.get(retry_of_run=run)
    event = HeartbeatRunEvent.objects.get(run=run)
    assert (event.seq, event.level) == (1, "error")
    assert event.message.endswith(f"; queued retry {retry.id}")
    assert event.payload == {"processPid": DEAD_PID, "retryRunId": str(retry.id)}
    assert HeartbeatRunEvent.objects.get(run=retry).message.startswith("Queued automatic retry")
    activity = ActivityLog.objects.get(run=run)
    assert activity.action == "heartbeat.run_process_lost"
    assert activity.details["retryRunId"] == str(retry.id)
    assert activity.details["cause"] == "process_dead"


def test_deferred_wake_is_promoted_when_no_retry_is_queued():
    agent = make_agent(status=Agent.Status.PAUSED)
    waiter = make_agent(agent.company, status=Agent.Status.IDLE)
    issue = make_issue(agent.company)
    run = make_running_run(agent, pid=DEAD_PID, issue=issue, process_loss_retry_count=1)
    deferred = AgentWakeupRequest.objects.create(
        company_id=agent.company_id,
        agent=waiter,
        source="on_demand",
        status=AgentWakeupRequest.Status.DEFERRED_ISSUE_EXECUTION,
        payload={"issueId": str(issue.id), "_paperclipWakeContext": {"issueId": str(issue.id)}},
    )

    reap_orphaned_runs()

    deferred.refresh_from_db()
    assert deferred.status == "queued"
    issue.refresh_from_db()
    assert issue.execution_run_id == deferred.run_id
    assert issue.checkout_run_id == run.id


def test_refused_retry_fails_the_run_without_one_and_the_batch_goes_on(agent):
    blocked = make_running_run(agent, pid=DEAD_PID)
    # A retry of this run already exists, so the database refuses a second one.
    make_run(agent, status="failed", retry_of_run=blocked, process_loss_retry_count=1)
    other = make_running_run(agent, pid=DEAD_PID)

    result = reap_orphaned_runs()

    assert result.run_ids == [blocked.id, other.id]
    blocked.refresh_from_db()
    assert (blocked.status, blocked.error_code) == ("failed", "process_lost")
    assert HeartbeatRun.objects.filter(retry_of_run=other, status="queued").exists()


def test_failure_on_one_run_is_logged_on_it_and_the_sweep_goes_on(agent, monkeypatch):
    broken = make_running_run(agent, pid=424_242)
    healthy = make_running_run(agent, pid=DEAD_PID)
    probe_all = process_control.probe_all

    def failing_probe_all(identities):
        identities = list(identities)
        if any(identity.pid == 424_242 for identity in identities):
            raise OSError("probe failed")
        return probe_all(identities)

    monkeypatch.setattr(process_control, "probe_all", failing_probe_all)

    result = reap_orphaned_runs()

    assert (result.run_ids, result.errors) == ([healthy.id], 1)
    broken.refresh_from_db()
    assert broken.status == "running"
    event = HeartbeatRunEvent.objects.get(run=broken)
    assert "probe failed" in event.message


def test_dry_run_changes_nothing(agent):
    issue = make_issue(agent.company)
    run = make_running_run(agent, pid=DEAD_PID, issue=issue)
    counts = (HeartbeatRun.objects.count(), AgentWakeupRequest.objects.count())

    result = reap_orphaned_runs(dry_run=True)

    assert (result.reaped, result.run_ids, result.dry_run) == (1, [run.id], True)
    run.refresh_from_db()
    assert run.status == "running"
    assert (HeartbeatRun.objects.count(), AgentWakeupRequest.objects.count()) == counts
    assert not HeartbeatRunEvent.objects.exists()
    assert not SweepRecord.objects.exists()


def test_sweep_is_recorded_for_the_dashboard(agent):
    run = make_running_run(agent, pid=DEAD_PID)

    reap_orphaned_runs()

    record = SweepRecord.objects.get()
    assert record.kind == "reap"
    assert record.result["run_ids"] == [str(run.id)]
    assert record.duration_ms >= 0


def test_other_host_run_with_fresh_lease_is_untouched(agent):
    run = make_running_run(agent, pid=DEAD_PID, owner="self", owner_host="elsewhere")
    HeartbeatRun.objects.filter(pk=run.pk).update(process_host="elsewhere")

    assert reap_orphaned_runs().reaped == 0


def test_other_host_run_with_expired_lease_is_lost(agent):
    run = make_running_run(
        agent,
        pid=DEAD_PID,
        owner="self",
        owner_host="elsewhere",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    HeartbeatRun.objects.filter(pk=run.pk).update(process_host="elsewhere")

    result = reap_orphaned_runs()

    assert result.run_ids == [run.id]
    run.refresh_from_db()
    assert "run supervisor on host elsewhere stopped renewing the run's lease" in run.error


def test_sweep_record_lists_at_most_a_hundred_ids_but_counts_all(agent):
    for _ in range(101):
        make_running_run(agent, pid=DEAD_PID)

    result = reap_orphaned_runs()

    record = SweepRecord.objects.get()
    assert (result.reaped, len(result.run_ids)) == (101, 101)
    assert (record.result["reaped"], len(record.result["run_ids"])) == (101, 100)
    assert record.result["run_ids_truncated"] is True


def test_other_hosts_expired_leases_wait_while_this_hosts_renewals_just_resumed(agent):
    now = timezone.now()
    # This host's supervisor renews again after a database outage: every lease looks expired.
    RunSupervisor.objects.create(
        host=process_control.current_host(),
        boot_id=process_control.current_boot_id(),
        pid=DEAD_PID,
        started_at=now - timedelta(hours=1),
        renewed_at=now,
        renewing_since=now - timedelta(seconds=10),
    )
    run = make_running_run(
        agent,
        pid=DEAD_PID,
        owner="self",
        owner_host="elsewhere",
        lease_expires_at=now - timedelta(seconds=1),
    )
    HeartbeatRun.objects.filter(pk=run.pk).update(process_host="elsewhere")

    assert reap_orphaned_runs().reaped == 0
    RunSupervisor.objects.update(renewing_since=now - timedelta(seconds=120))
    assert reap_orphaned_runs().run_ids == [run.id]
