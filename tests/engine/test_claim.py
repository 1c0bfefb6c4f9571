"""Claim: compare-and-set under the agent's row lock, so the cap holds across workers."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from heartbeat.models import AgentWakeupRequest, HeartbeatRun
from heartbeat.process_control import current_host
from heartbeat.services import ClaimRefusal, RunOutcome, run_claim, run_finalize, wake_agent
from issues.models import Issue
from tests.factories import make_agent, make_issue, make_run
from tests.polling import wait_until
from tests.threads import race


@pytest.mark.django_db
def test_claim_marks_run_running_with_owner_lease_wake_and_issue_lock(dispatched):
    agent = make_agent(name=" Ada ")
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    woken = wake_agent(
        agent_id=agent.id, reason="issue_assigned", payload={"issueId": str(issue.id)}
    )

    result = run_claim(run_id=woken.run.id)

    run = result.run
    assert result.claimed
    assert run.status == "running" and run.started_at is not None
    assert (run.owner_host, run.owner_pid) == (current_host(), os.getpid())
    assert run.lease_expires_at > run.started_at
    assert AgentWakeupRequest.objects.get(pk=woken.wakeup.pk).status == "claimed"
    issue.refresh_from_db()
    assert issue.execution_run_id == run.id and issue.execution_agent_name_key == "ada"
    # The harness checkout of an issue assigned to the agent (reference 2.4).
    assert (issue.status, issue.checkout_run_id) == ("in_progress", run.id)
    agent.refresh_from_db()
    assert agent.status == "running"


@pytest.mark.django_db
def test_claim_of_a_run_that_is_not_queued_changes_nothing():
    run = make_run(make_agent(), status="succeeded")
    result = run_claim(run_id=run.id)
    assert result.refusal is ClaimRefusal.NOT_QUEUED
    run.refresh_from_db()
    assert run.status == "succeeded"


@pytest.mark.django_db
def test_queued_run_of_a_paused_agent_stays_queued_and_parked():
    run = make_run(make_agent(status="paused"), lease_expires_at=timezone.now())
    assert run_claim(run_id=run.id).refusal is ClaimRefusal.AGENT_NOT_INVOKABLE
    run.refresh_from_db()
    assert (run.status, run.lease_expires_at) == ("queued", None)


@pytest.mark.django_db
def test_run_refused_at_the_cap_is_parked_and_dispatched_when_a_slot_frees(
    dispatched, run_logs, django_capture_on_commit_callbacks
):
    agent = make_agent(adapter_type="process", adapter_config={"command": "true"})
    running = make_run(agent, status="running")
    waiting = make_run(agent, lease_expires_at=timezone.now() + timedelta(minutes=1))

    assert run_claim(run_id=waiting.id).refusal is ClaimRefusal.AT_CAPACITY
    waiting.refresh_from_db()
    assert waiting.lease_expires_at is None
    with django_capture_on_commit_callbacks(execute=True):
        run_finalize(run=running, outcome=RunOutcome(status="succeeded", exit_code=0))
    assert dispatched == [str(waiting.id)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_two_workers_claiming_one_run_give_one_claim():
    run = make_run(make_agent())
    results = race([lambda: run_claim(run_id=run.id), lambda: run_claim(run_id=run.id)])
    assert sorted(r.claimed for r in results) == [False, True]
    assert HeartbeatRun.objects.get(pk=run.pk).event_seq == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("cap", [1, 2])
def test_concurrency_cap_holds_with_two_workers_and_three_queued_runs(cap):
    agent = make_agent(runtime_config={"heartbeat": {"maxConcurrentRuns": cap}})
    runs = [make_run(agent) for _ in range(3)]
    # Two workers, each trying every run: six racing claims in all.
    results = race(
        [
            lambda: [run_claim(run_id=run.id) for run in runs],
            lambda: [run_claim(run_id=run.id) for run in reversed(runs)],
        ]
    )
    claims = [claim for batch in results for claim in batch]
    assert sum(claim.claimed for claim in claims) == cap
    assert HeartbeatRun.objects.filter(agent=agent, status="running").count() == cap
    assert HeartbeatRun.objects.filter(agent=agent, status="queued").count() == 3 - cap


@pytest.mark.django_db
def test_issue_locked_by_another_run_keeps_its_lock(dispatched):
    agent = make_agent()
    issue = make_issue(agent.company)
    other = make_run(agent, status="failed")
    Issue.objects.filter(pk=issue.pk).update(execution_run=other)
    run = make_run(agent, context_snapshot={"issueId": str(issue.id)})
    assert run_claim(run_id=run.id).claimed
    issue.refresh_from_db()
    assert issue.execution_run_id == other.id


def _lock_waiters() -> int:
    """How many backends of this database wait on a row lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_finishing_run_waits_for_a_wake_joining_it_instead_of_deadlocking(dispatched):
    agent = make_agent()
    issue = make_issue(agent.company)
    run = wake_agent(agent_id=agent.id, payload={"issueId": str(issue.id)}).run
    run = run_claim(run_id=run.id).run
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def wake_joining_the_run() -> None:
        # What a wake for the issue does: hold the issue, then write the run it joins.
        try:
            with transaction.atomic():
                Issue.objects.select_for_update().get(pk=issue.pk)
                holding.set()
                release.wait(30)
                HeartbeatRun.objects.filter(pk=run.pk).update(context_snapshot=run.context_snapshot)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def finish() -> None:
        try:
            run_finalize(run=run, outcome=RunOutcome(status="succeeded", exit_code=0))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    waker = threading.Thread(target=wake_joining_the_run)
    waker.start()
    holding.wait(30)
    finisher = threading.Thread(target=finish)
    finisher.start()
    wait_until(_lock_waiters, timeout=30, message="some backend waits on the lock")
    release.set()
    waker.join(30)
    finisher.join(30)

    assert errors == []
    assert HeartbeatRun.objects.get(pk=run.pk).status == "succeeded"
