"""Lifecycle primitives shared with recovery: events, queueing, release/promote, agent status."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from heartbeat.models import (
    Agent,
    AgentRuntimeState,
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
)
from heartbeat.services import (
    agent_finalize_status,
    agent_start_next_queued,
    heartbeat_policy_max_concurrent_runs,
    issue_release_and_promote,
    run_create_queued,
    run_event_append,
    runtime_state_record,
)
from issues.models import Issue
from tests.factories import make_agent, make_company, make_issue, make_run, make_wakeup


def _append(run: HeartbeatRun, message: str) -> HeartbeatRunEvent:
    return run_event_append(
        run_id=run.id,
        company_id=run.company_id,
        agent_id=run.agent_id,
        event_type="lifecycle",
        message=message,
    )


def _queue(agent: Agent, **context) -> HeartbeatRun:
    wakeup = make_wakeup(agent, reason="test")
    return run_create_queued(
        agent=agent,
        wakeup=wakeup,
        context=context,
        invocation_source="on_demand",
        trigger_detail="manual",
    )


def _defer(agent: Agent, issue: Issue, **payload) -> AgentWakeupRequest:
    context = {"issueId": str(issue.id), "wakeReason": "issue_commented", **payload}
    return make_wakeup(
        agent,
        status="deferred_issue_execution",
        reason="issue_execution_deferred",
        payload={"issueId": str(issue.id), **payload, "_paperclipWakeContext": context},
    )


@pytest.mark.parametrize(
    ("raw", "cap"),
    [(None, 1), (0, 1), (3, 3), (3.9, 3), (50, 10), ("x", 1), (float("inf"), 1), (-2, 1)],
)
def test_max_concurrent_runs_is_floored_and_clamped(raw, cap):
    config = {} if raw is None else {"heartbeat": {"maxConcurrentRuns": raw}}
    assert heartbeat_policy_max_concurrent_runs(config) == cap


@pytest.mark.django_db
def test_event_seq_counts_from_one_without_gaps_after_a_rollback():
    run = make_run(make_agent())
    _append(run, "one")
    with pytest.raises(RuntimeError), transaction.atomic():
        _append(run, "rolled back")
        raise RuntimeError("abort")
    _append(run, "two")
    assert list(run.events.values_list("seq", "message")) == [(1, "one"), (2, "two")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_event_seq_is_unique_under_concurrent_writers():
    run = make_run(make_agent())
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                with transaction.atomic():
                    _append(run, f"w{n}-{i}")
        except BaseException as exc:  # reported below: a thread cannot fail the test itself
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(run.events.values_list("seq", flat=True)) == list(range(1, 41))
    run.refresh_from_db()
    assert run.event_seq == 40


@pytest.mark.django_db
def test_queued_run_links_its_wake_and_is_dispatched_only_after_commit(
    dispatched, django_capture_on_commit_callbacks
):
    agent = make_agent()
    with django_capture_on_commit_callbacks(execute=True):
        run = _queue(agent, wakeReason="test")
        assert dispatched == []
    assert dispatched == [str(run.id)]
    assert run.status == "queued"
    assert AgentWakeupRequest.objects.get(pk=run.wakeup_request_id).run_id == run.id
    assert list(run.events.values_list("message", flat=True)) == ["run queued"]


@pytest.mark.django_db
def test_database_refuses_a_second_active_run_for_one_issue(dispatched):
    agent = make_agent()
    issue = make_issue(agent.company)
    _queue(agent, issueId=str(issue.id))
    with transaction.atomic():
        with pytest.raises(IntegrityError):
            _queue(make_agent(agent.company), issueId=str(issue.id))
        # The savepoint kept the outer transaction usable.
        assert HeartbeatRun.objects.filter(agent__company=agent.company).count() == 1


@pytest.mark.django_db
def test_release_clears_execution_lock_keeps_checkout_and_promotes_oldest_deferred_wake(
    dispatched, django_capture_on_commit_callbacks
):
    company = make_company()
    first, second, third = (make_agent(company, name=n) for n in ("Ada", "Bob", "Cy"))
    issue = make_issue(company, status="in_progress", assignee_agent_id=first.id)
    finished = make_run(first, status="succeeded", context_snapshot={"issueId": str(issue.id)})
    Issue.objects.filter(pk=issue.pk).update(
        execution_run=finished, checkout_run=finished, execution_agent_name_key="ada"
    )
    older = _defer(second, issue)
    _defer(third, issue)

    with django_capture_on_commit_callbacks(execute=True):
        promoted = issue_release_and_promote(run=finished, now=timezone.now())

    issue.refresh_from_db()
    older.refresh_from_db()
    assert promoted is not None and promoted.agent_id == second.id
    assert promoted.status == "queued"
    assert promoted.context_snapshot["issueId"] == str(issue.id)
    assert issue.execution_run_id == promoted.id
    assert issue.execution_agent_name_key == "bob"
    assert issue.checkout_run_id == finished.id
    assert (older.status, older.reason, older.run_id) == (
        "queued",
        "issue_execution_promoted",
        promoted.id,
    )
    assert AgentWakeupRequest.objects.filter(status="deferred_issue_execution").count() == 1
    assert dispatched == [str(promoted.id)]


@pytest.mark.django_db
def test_release_leaves_an_issue_locked_by_another_run_alone(dispatched):
    agent = make_agent()
    issue = make_issue(agent.company)
    finished = make_run(agent, status="failed", context_snapshot={"issueId": str(issue.id)})
    holder = make_run(agent, status="running", context_snapshot={"issueId": str(issue.id)})
    Issue.objects.filter(pk=issue.pk).update(execution_run=holder)
    deferred = _defer(make_agent(agent.company), issue)

    assert issue_release_and_promote(run=finished, now=timezone.now()) is None

    issue.refresh_from_db()
    deferred.refresh_from_db()
    assert issue.execution_run_id == holder.id
    assert deferred.status == "deferred_issue_execution"


@pytest.mark.django_db
def test_deferred_wake_of_a_paused_agent_fails_and_the_next_one_is_promoted(dispatched):
    company = make_company()
    paused = make_agent(company, status="paused")
    ready = make_agent(company)
    issue = make_issue(company)
    finished = make_run(ready, status="succeeded", context_snapshot={"issueId": str(issue.id)})
    skipped = _defer(paused, issue)
    _defer(ready, issue)

    promoted = issue_release_and_promote(run=finished, now=timezone.now())

    skipped.refresh_from_db()
    assert promoted is not None and promoted.agent_id == ready.id
    assert skipped.status == "failed"
    assert "not invokable" in skipped.error


@pytest.mark.django_db
def test_promoting_a_comment_wake_reopens_a_done_issue(dispatched):
    agent = make_agent()
    issue = make_issue(agent.company, status="done")
    finished = make_run(agent, status="succeeded", context_snapshot={"issueId": str(issue.id)})
    _defer(agent, issue, commentId="c1")

    promoted = issue_release_and_promote(run=finished, now=timezone.now())

    issue.refresh_from_db()
    assert promoted is not None
    assert issue.status == "todo"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("outcome", "status"),
    [("succeeded", "idle"), ("cancelled", "idle"), ("failed", "error"), ("timed_out", "error")],
)
def test_finalize_sets_agent_status_from_outcome(outcome, status, telemetry):
    agent = make_agent(status="running")
    now = timezone.now()
    agent_finalize_status(agent_id=agent.id, outcome=outcome, now=now)
    agent.refresh_from_db()
    assert (agent.status, agent.last_heartbeat_at) == (status, now)


@pytest.mark.django_db
def test_finalize_keeps_agent_running_while_another_run_runs(telemetry):
    agent = make_agent(status="running")
    make_run(agent, status="running")
    agent_finalize_status(agent_id=agent.id, outcome="failed", now=timezone.now())
    agent.refresh_from_db()
    assert agent.status == "running"


@pytest.mark.django_db
def test_finalize_leaves_a_paused_agent_untouched(telemetry, django_capture_on_commit_callbacks):
    agent = make_agent(status="paused")
    with django_capture_on_commit_callbacks(execute=True):
        agent_finalize_status(agent_id=agent.id, outcome="succeeded", now=timezone.now())
    agent.refresh_from_db()
    assert (agent.status, agent.last_heartbeat_at) == ("paused", None)
    assert telemetry == []


@pytest.mark.django_db
def test_first_heartbeat_telemetry_is_sent_once_with_the_role(
    telemetry, django_capture_on_commit_callbacks
):
    agent = make_agent(role="engineer", status="running")
    with django_capture_on_commit_callbacks(execute=True):
        agent_finalize_status(agent_id=agent.id, outcome="succeeded", now=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        agent_finalize_status(
            agent_id=agent.id, outcome="failed", now=timezone.now() + timedelta(seconds=1)
        )
    assert telemetry == [
        ("agent.first_heartbeat", {"agent_role": "engineer", "agent_id": str(agent.id)})
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_first_heartbeat_telemetry_is_sent_once_when_finalizers_race(telemetry):
    agent = make_agent(role="qa", status="running")
    barrier = threading.Barrier(4)

    def finalize() -> None:
        try:
            barrier.wait()
            agent_finalize_status(agent_id=agent.id, outcome="succeeded", now=timezone.now())
        finally:
            connection.close()

    threads = [threading.Thread(target=finalize) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [event for event, _ in telemetry] == ["agent.first_heartbeat"]


@pytest.mark.django_db
def test_runtime_state_is_created_then_updated_with_last_run_and_usage():
    agent = make_agent(adapter_type="process")
    failed = make_run(agent, status="failed", usage_json={"inputTokens": 5, "outputTokens": 2})
    runtime_state_record(run=failed, error="boom")
    ok = make_run(agent, status="succeeded", usage_json={"inputTokens": 1})
    runtime_state_record(run=ok)

    state = AgentRuntimeState.objects.get(pk=agent.pk)
    assert (state.last_run_id, state.last_run_status, state.last_error) == (
        ok.id,
        "succeeded",
        None,
    )
    assert (state.total_input_tokens, state.total_output_tokens) == (6, 2)


@pytest.mark.django_db
def test_queued_run_holds_a_dispatch_lease_from_creation(dispatched):
    run = _queue(make_agent())
    assert run.lease_expires_at > timezone.now() + timedelta(seconds=60)


@pytest.mark.django_db
def test_start_next_queued_dispatches_parked_runs_up_to_free_slots(
    dispatched, django_capture_on_commit_callbacks
):
    agent = make_agent(runtime_config={"heartbeat": {"maxConcurrentRuns": 3}})
    make_run(agent, status="running")
    waiting = make_run(agent, lease_expires_at=timezone.now() + timedelta(minutes=1))
    oldest, _newer = make_run(agent), make_run(agent)
    with django_capture_on_commit_callbacks(execute=True):
        started = agent_start_next_queued(agent_id=agent.id)
    # One slot runs, one is held by the run whose dispatch is still out: one slot is free.
    assert started == [oldest.id]
    assert dispatched == [str(oldest.id)]
    oldest.refresh_from_db()
    assert oldest.lease_expires_at > timezone.now()
    assert str(waiting.id) not in dispatched


@pytest.mark.django_db
def test_start_next_queued_keeps_runs_of_a_paused_agent_queued(dispatched):
    agent = make_agent(status="paused")
    make_run(agent)
    assert agent_start_next_queued(agent_id=agent.id) == []
