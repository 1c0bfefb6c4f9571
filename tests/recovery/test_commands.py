"""reap_orphans and reconcile_stranded: thin commands over the services."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from heartbeat import process_control
from heartbeat.models import Agent, HeartbeatRun, SweepRecord
from heartbeat.services.sweeps import SweepLock, sweep_lock_scope
from tests.factories import make_agent, make_issue, make_run
from tests.recovery.builders import DEAD_PID, make_running_run
from tests.recovery.locks import sweep_lock_held_elsewhere


def run_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_reap_json_prints_exactly_one_object():
    agent = make_agent(status=Agent.Status.PAUSED)
    run = make_running_run(agent, pid=DEAD_PID)

    out, _ = run_command("reap_orphans", "--json", "--stale-threshold", "0")

    assert json.loads(out) == {
        "reaped": 1,
        "run_ids": [str(run.id)],
        "detached": 0,
        "detached_run_ids": [],
        "finalized": 0,
        "finalized_run_ids": [],
        "deferred": 0,
        "deferred_run_ids": [],
        "errors": 0,
        "sweep_skipped": False,
        "dry_run": False,
    }


@pytest.mark.django_db
def test_reap_dry_run_reports_and_changes_nothing():
    agent = make_agent(status=Agent.Status.PAUSED)
    run = make_running_run(agent, pid=DEAD_PID)

    out, _ = run_command("reap_orphans", "--dry-run", "--json", "--stale-threshold", "0")

    assert json.loads(out)["run_ids"] == [str(run.id)]
    run.refresh_from_db()
    assert run.status == "running"
    assert HeartbeatRun.objects.count() == 1


@pytest.mark.django_db
def test_reap_by_default_uses_the_periodic_stale_threshold():
    agent = make_agent(status=Agent.Status.PAUSED)
    make_running_run(agent, pid=DEAD_PID)

    out, _ = run_command("reap_orphans")

    assert out.startswith("Reaped 0 orphaned run(s)")


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_reap_skips_and_exits_zero_while_another_sweep_holds_the_lock():
    agent = make_agent(status=Agent.Status.PAUSED)
    run = make_running_run(agent, pid=DEAD_PID)
    scope = sweep_lock_scope(process_control.current_host())

    with sweep_lock_held_elsewhere(SweepLock.REAP, scope=scope):
        out, _ = run_command("reap_orphans", "--json", "--stale-threshold", "0")

    assert json.loads(out)["sweep_skipped"] is True
    run.refresh_from_db()
    assert run.status == "running"


@pytest.mark.django_db
def test_reconcile_json_prints_exactly_one_object():
    agent = make_agent(status=Agent.Status.IDLE)
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    make_run(agent, status="failed", context_snapshot={"issueId": str(issue.id)})

    out, _ = run_command("reconcile_stranded", "--json")

    assert json.loads(out) == {
        "dispatch_requeued": 1,
        "continuation_requeued": 0,
        "escalated": 0,
        "skipped": 0,
        "issue_ids": [str(issue.id)],
        "errors": 0,
        "sweep_skipped": False,
        "dry_run": False,
    }


@pytest.mark.django_db
def test_reconcile_dry_run_changes_nothing():
    agent = make_agent(status=Agent.Status.IDLE)
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    make_run(agent, status="failed", context_snapshot={"issueId": str(issue.id)})

    out, _ = run_command("reconcile_stranded", "--dry-run")

    assert out.startswith("Would have: re-dispatched 1")
    assert HeartbeatRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_reconcile_skips_and_exits_zero_while_another_sweep_holds_the_lock():
    agent = make_agent(status=Agent.Status.IDLE)
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    make_run(agent, status="failed", context_snapshot={"issueId": str(issue.id)})

    with sweep_lock_held_elsewhere(SweepLock.RECONCILE):
        out, _ = run_command("reconcile_stranded", "--json")

    assert json.loads(out)["sweep_skipped"] is True
    assert HeartbeatRun.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("threshold", ["inf", "1e308", "nan", "-1", "31536001"])
def test_reap_refuses_a_stale_threshold_that_is_not_a_finite_number_in_range(threshold):
    with pytest.raises(CommandError, match="--stale-threshold must be a number of seconds"):
        run_command("reap_orphans", "--stale-threshold", threshold)
    assert not SweepRecord.objects.exists()


@pytest.mark.django_db
def test_reap_refuses_a_stale_threshold_that_is_not_a_number():
    with pytest.raises(CommandError, match="stale-threshold"):
        run_command("reap_orphans", "--stale-threshold", "soon")
