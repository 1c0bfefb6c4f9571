"""wake_agent (reference 2.2): queue, coalesce, defer, skip, idempotency, domain errors."""

from __future__ import annotations

import uuid

import pytest

from heartbeat.models import AgentWakeupRequest, HeartbeatRun
from heartbeat.services import (
    AgentNotFound,
    AgentNotInvokable,
    WakeOutcome,
    agent_invoke,
    heartbeat_policy,
    wake_agent,
    wake_context_enrich,
)
from heartbeat.services import wakeups as wakeups_module
from issues.models import Issue
from paperclip.models import ActivityLog
from tests.factories import make_agent, make_company, make_issue, make_run


def test_context_is_enriched_only_where_empty():
    ctx = wake_context_enrich(
        context={"wakeReason": "kept"},
        payload={"issueId": "i-1", "commentId": "c-1"},
        source="on_demand",
        trigger_detail="manual",
        reason="ignored",
    )
    assert ctx == {
        "wakeReason": "kept",
        "issueId": "i-1",
        "taskId": "i-1",
        "taskKey": "i-1",
        "commentId": "c-1",
        "wakeCommentId": "c-1",
        "wakeCommentIds": ["c-1"],
        "wakeSource": "on_demand",
        "wakeTriggerDetail": "manual",
    }


@pytest.mark.parametrize(
    ("config", "enabled", "interval", "on_demand"),
    [
        ({}, False, 0, True),
        ({"heartbeat": {"enabled": True, "intervalSec": 60}}, True, 60, True),
        ({"heartbeat": {"wakeOnAssignment": False}}, False, 0, False),
        ({"heartbeat": {"wakeOnDemand": True, "wakeOnAssignment": False}}, False, 0, True),
    ],
)
def test_heartbeat_policy_reads_reference_keys(config, enabled, interval, on_demand):
    policy = heartbeat_policy(config)
    assert (policy.enabled, policy.interval_sec, policy.wake_on_demand) == (
        enabled,
        interval,
        on_demand,
    )


@pytest.mark.django_db
def test_missing_agent_is_a_not_found_error():
    with pytest.raises(AgentNotFound, match="Agent not found"):
        wake_agent(agent_id=uuid.uuid4())
    with pytest.raises(AgentNotFound):
        wake_agent(agent_id="not-a-uuid")


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["paused", "terminated", "pending_approval"])
def test_agent_that_is_not_invokable_is_refused_without_a_row(status):
    agent = make_agent(status=status)
    with pytest.raises(AgentNotInvokable) as refused:
        wake_agent(agent_id=agent.id)
    assert refused.value.status == status
    assert not AgentWakeupRequest.objects.filter(agent=agent).exists()


@pytest.mark.django_db
def test_timer_wake_with_policy_disabled_is_recorded_as_skipped(dispatched):
    agent = make_agent()
    result = wake_agent(agent_id=agent.id, source="timer", reason="heartbeat_timer")
    assert result.outcome == WakeOutcome.SKIPPED and result.run is None
    assert (result.wakeup.status, result.wakeup.reason) == ("skipped", "heartbeat.disabled")


@pytest.mark.django_db
def test_on_demand_wake_with_wake_on_demand_off_is_recorded_as_skipped(dispatched):
    agent = make_agent(runtime_config={"heartbeat": {"wakeOnDemand": False}})
    result = wake_agent(agent_id=agent.id, reason="ping")
    assert (result.outcome, result.wakeup.reason) == (
        WakeOutcome.SKIPPED,
        "heartbeat.wakeOnDemand.disabled",
    )


@pytest.mark.django_db
def test_issue_wake_queues_a_run_with_enriched_context(
    dispatched, django_capture_on_commit_callbacks
):
    agent = make_agent()
    issue = make_issue(agent.company)
    with django_capture_on_commit_callbacks(execute=True):
        result = wake_agent(
            agent_id=agent.id,
            source="assignment",
            trigger_detail="system",
            reason="issue_assigned",
            payload={"issueId": str(issue.id)},
        )
    run = result.run
    assert result.outcome == WakeOutcome.QUEUED
    assert run.status == "queued" and run.invocation_source == "assignment"
    assert run.context_snapshot["issueId"] == str(issue.id)
    assert run.context_snapshot["wakeReason"] == "issue_assigned"
    assert result.wakeup.run_id == run.id and result.wakeup.status == "queued"
    assert dispatched == [str(run.id)]
    # The execution lock is stamped at claim, not at queue time (reference 2.2 step 7a).
    issue.refresh_from_db()
    assert issue.execution_run_id is None


@pytest.mark.django_db
def test_wake_for_a_missing_issue_is_skipped(dispatched):
    agent = make_agent()
    result = wake_agent(agent_id=agent.id, payload={"issueId": str(uuid.uuid4())})
    assert (result.outcome, result.wakeup.reason) == (
        WakeOutcome.SKIPPED,
        "issue_execution_issue_not_found",
    )


@pytest.mark.django_db
def test_second_wake_of_same_agent_for_active_issue_coalesces_into_its_run(dispatched):
    agent = make_agent()
    issue = make_issue(agent.company)
    first = wake_agent(
        agent_id=agent.id, reason="issue_assigned", payload={"issueId": str(issue.id)}
    )
    second = wake_agent(agent_id=agent.id, reason="ping", payload={"issueId": str(issue.id)})

    assert second.outcome == WakeOutcome.COALESCED
    assert second.run.id == first.run.id
    assert (second.wakeup.status, second.wakeup.reason, second.wakeup.coalesced_count) == (
        "coalesced",
        "issue_execution_same_name",
        1,
    )
    assert HeartbeatRun.objects.filter(agent=agent).count() == 1


@pytest.mark.django_db
def test_wake_from_another_agent_is_deferred_and_merges_with_its_earlier_deferral(dispatched):
    company = make_company()
    holder, other = make_agent(company, name="Ada"), make_agent(company, name="Bob")
    issue = make_issue(company)
    wake_agent(agent_id=holder.id, reason="issue_assigned", payload={"issueId": str(issue.id)})

    first = wake_agent(agent_id=other.id, reason="mention", payload={"issueId": str(issue.id)})
    second = wake_agent(
        agent_id=other.id, reason="mention", payload={"issueId": str(issue.id), "commentId": "c2"}
    )

    assert first.outcome == second.outcome == WakeOutcome.DEFERRED
    assert first.run is None
    deferred = AgentWakeupRequest.objects.get(agent=other, status="deferred_issue_execution")
    assert deferred.reason == "issue_execution_deferred"
    assert deferred.coalesced_count == 1
    assert deferred.payload["_paperclipWakeContext"]["wakeCommentIds"] == ["c2"]
    assert not HeartbeatRun.objects.filter(agent=other).exists()


@pytest.mark.django_db
def test_comment_wake_while_own_run_is_running_is_deferred_for_a_follow_up(dispatched):
    agent = make_agent()
    issue = make_issue(agent.company)
    make_run(agent, status="running", context_snapshot={"issueId": str(issue.id)})
    result = wake_agent(
        agent_id=agent.id,
        reason="issue_commented",
        payload={"issueId": str(issue.id), "commentId": "c1"},
    )
    assert result.outcome == WakeOutcome.DEFERRED


@pytest.mark.django_db
def test_lock_on_a_finished_run_is_cleared_and_a_new_run_queued(dispatched):
    agent = make_agent()
    issue = make_issue(agent.company)
    old = make_run(agent, status="failed", context_snapshot={"issueId": str(issue.id)})
    Issue.objects.filter(pk=issue.pk).update(execution_run=old, execution_agent_name_key="x")
    result = wake_agent(agent_id=make_agent(agent.company).id, payload={"issueId": str(issue.id)})
    issue.refresh_from_db()
    assert result.outcome == WakeOutcome.QUEUED
    assert issue.execution_run_id is None


@pytest.mark.django_db
def test_run_inserted_by_a_racing_host_turns_the_wake_into_coalescing(dispatched, monkeypatch):
    agent = make_agent()
    issue = make_issue(agent.company)
    racer = make_run(agent, context_snapshot={"issueId": str(issue.id)})
    real = wakeups_module._issue_active_run
    calls = []

    def blind_first_look(issue, *, now):
        # The first look misses the racer, as if it committed just after the look.
        calls.append(1)
        return None if len(calls) == 1 else real(issue, now=now)

    monkeypatch.setattr(wakeups_module, "_issue_active_run", blind_first_look)
    result = wake_agent(agent_id=agent.id, payload={"issueId": str(issue.id)})

    assert result.outcome == WakeOutcome.COALESCED
    assert result.run.id == racer.id
    assert HeartbeatRun.objects.filter(agent=agent).count() == 1
    assert not AgentWakeupRequest.objects.filter(status="queued").exists()


@pytest.mark.django_db
def test_repeated_idempotency_key_returns_the_first_wake(dispatched):
    agent = make_agent()
    first = wake_agent(agent_id=agent.id, reason="ping", idempotency_key="k-1")
    again = wake_agent(agent_id=agent.id, reason="ping", idempotency_key="k-1")
    assert again.replayed and not first.replayed
    assert again.wakeup.id == first.wakeup.id and again.run.id == first.run.id
    assert AgentWakeupRequest.objects.filter(agent=agent).count() == 1


@pytest.mark.django_db
def test_wakes_without_issue_coalesce_by_task_key(dispatched):
    agent = make_agent()
    plain = wake_agent(agent_id=agent.id, reason="ping")
    same_scope = wake_agent(agent_id=agent.id, reason="ping again")
    other_scope = wake_agent(agent_id=agent.id, payload={"taskKey": "report"})

    assert same_scope.outcome == WakeOutcome.COALESCED and same_scope.run.id == plain.run.id
    assert same_scope.wakeup.reason == "ping again"
    assert other_scope.outcome == WakeOutcome.QUEUED and other_scope.run.id != plain.run.id


@pytest.mark.django_db
def test_wake_without_issue_joins_a_running_run_but_a_comment_gets_a_follow_up(dispatched):
    agent = make_agent()
    running = make_run(agent, status="running", context_snapshot={})
    joined = wake_agent(agent_id=agent.id, reason="ping")
    follow_up = wake_agent(agent_id=agent.id, payload={"commentId": "c1"})
    assert joined.run.id == running.id
    assert follow_up.outcome == WakeOutcome.QUEUED and follow_up.run.id != running.id


@pytest.mark.django_db
def test_ids_in_the_payload_are_stored_as_strings(dispatched):
    agent = make_agent()
    issue = make_issue(agent.company)
    comment_id = uuid.uuid4()
    result = wake_agent(agent_id=agent.id, payload={"issueId": issue.id, "commentId": comment_id})
    result.run.refresh_from_db()
    assert result.run.context_snapshot["issueId"] == str(issue.id)
    assert result.run.context_snapshot["wakeCommentIds"] == [str(comment_id)]
    assert result.wakeup.payload["commentId"] == str(comment_id)


@pytest.mark.django_db
def test_invoke_records_who_asked_in_the_run_and_the_activity_log(dispatched):
    agent = make_agent()
    result = agent_invoke(
        agent_id=agent.id, actor_type="user", actor_id="u1", reason="look", via="admin"
    )
    assert result.run.context_snapshot["triggeredBy"] == "user"
    assert result.run.context_snapshot["actorId"] == "u1"
    assert result.wakeup.requested_by_actor_id == "u1"
    invoked = ActivityLog.objects.get(action="heartbeat.invoked", entity_id=str(agent.id))
    assert invoked.run_id == result.run.id and invoked.actor_id == "u1"
    assert invoked.details == {"source": "on_demand", "outcome": "queued", "via": "admin"}


@pytest.mark.django_db
def test_refused_invoke_writes_no_activity():
    agent = make_agent(status="paused")
    with pytest.raises(AgentNotInvokable):
        agent_invoke(agent_id=agent.id, actor_type="user", actor_id="u1")
    assert not ActivityLog.objects.filter(action="heartbeat.invoked").exists()
