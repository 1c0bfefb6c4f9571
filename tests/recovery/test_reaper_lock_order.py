"""The reaper never waits for an issue another transaction holds, and frees the agent's slot."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connections, transaction

from heartbeat.models import Agent, HeartbeatRun, SweepKind, SweepRecord
from heartbeat.services import reap_orphaned_runs
from issues.models import Issue
from tests.factories import make_agent, make_issue, make_run
from tests.recovery.builders import DEAD_PID, make_running_run


def hold_issue_row(issue_id, held: threading.Event, release: threading.Event) -> None:
    """A wake joining the issue's run holds the issue row like this (engine lock order)."""
    try:
        with transaction.atomic():
            Issue.objects.select_for_update().get(pk=issue_id)
            held.set()
            release.wait(30)
    finally:
        connections.close_all()


@contextmanager
def issue_held_elsewhere(issue_id) -> Iterator[None]:
    """Another connection holds the issue's row for the duration of the block."""
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_issue_row, args=(issue_id, held, release))
    holder.start()
    try:
        assert held.wait(30)
        yield
    finally:
        release.set()
        holder.join(30)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_run_whose_issue_is_held_elsewhere_waits_for_the_next_sweep():
    agent = make_agent(status=Agent.Status.PAUSED)
    issue = make_issue(agent.company)
    run = make_running_run(agent, pid=DEAD_PID, issue=issue)
    with issue_held_elsewhere(issue.id):
        first = reap_orphaned_runs()
        run.refresh_from_db()
        assert (first.reaped, run.status) == (0, HeartbeatRun.Status.RUNNING)

    second = reap_orphaned_runs()

    run.refresh_from_db()
    assert (second.reaped, second.run_ids) == (1, [run.id])
    assert (run.status, run.error_code) == ("failed", "process_lost")


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_run_deferred_for_a_busy_issue_is_counted_in_the_result_and_sweep_record():
    agent = make_agent(status=Agent.Status.PAUSED)
    issue = make_issue(agent.company)
    run = make_running_run(agent, pid=DEAD_PID, issue=issue)

    with issue_held_elsewhere(issue.id):
        result = reap_orphaned_runs()

    assert (result.reaped, result.deferred, result.deferred_run_ids) == (0, 1, [run.id])
    record = SweepRecord.objects.get(kind=SweepKind.REAP)
    assert (record.result["deferred"], record.result["deferred_run_ids"]) == (1, [str(run.id)])


@pytest.mark.django_db
def test_lost_run_frees_its_agent_slot_for_a_parked_queued_run(
    dispatched, django_capture_on_commit_callbacks
):
    agent = make_agent(runtime_config={"heartbeat": {"maxConcurrentRuns": 1}})
    lost = make_running_run(agent, pid=DEAD_PID, pgid=None, process_loss_retry_count=1)
    parked = make_run(agent, context_snapshot={"taskKey": "other"})

    with django_capture_on_commit_callbacks(execute=True):
        result = reap_orphaned_runs()

    assert result.run_ids == [lost.id]
    assert str(parked.id) in dispatched
