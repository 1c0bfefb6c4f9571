"""The reaper against real processes: every assertion about a process reads the process table."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from heartbeat import process_control
from heartbeat.models import Agent, AgentWakeupRequest, HeartbeatRun, HeartbeatRunEvent
from heartbeat.services import reap_orphaned_runs
from tests.factories import make_agent, make_issue
from tests.polling import wait_until
from tests.recovery.builders import DEAD_PID, make_running_run
from tests.recovery.processes import WAIT_SECONDS, is_gone, is_running

pytestmark = [
    pytest.mark.process,
    pytest.mark.slow,
    pytest.mark.timeout(90),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def agent() -> Agent:
    return make_agent(status=Agent.Status.PAUSED, role=Agent.Role.ENGINEER)


def test_live_process_is_detached_not_reaped_and_not_killed(agent, processes):
    run = make_running_run(agent, pid=None)
    spawned = processes.start(run)

    result = reap_orphaned_runs()

    assert (result.reaped, result.run_ids, result.detached_run_ids) == (0, [], [run.id])
    run.refresh_from_db()
    assert (run.status, run.error_code) == ("running", "process_detached")
    assert str(spawned.identity.pid) in run.error
    assert run.detached_at is not None
    assert AgentWakeupRequest.objects.get(pk=run.wakeup_request_id).status == "claimed"
    assert is_running(spawned.identity.pid)


def test_second_sweep_over_a_detached_run_adds_no_event(agent, processes):
    run = make_running_run(agent, pid=None)
    processes.start(run)
    reap_orphaned_runs()
    events = HeartbeatRunEvent.objects.filter(run=run).count()

    result = reap_orphaned_runs()

    assert (result.reaped, result.detached) == (0, 0)
    assert HeartbeatRunEvent.objects.filter(run=run).count() == events == 1


def test_detached_run_is_finalized_as_lost_when_its_process_exits(agent, processes):
    run = make_running_run(agent, pid=None)
    spawned = processes.start(run)
    reap_orphaned_runs()
    spawned.popen.kill()
    spawned.wait(10)

    result = reap_orphaned_runs()

    assert result.run_ids == [run.id]
    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "process_lost")
    assert "exit status cannot be known" in run.error


def test_detached_run_silent_past_its_grace_is_terminated_and_lost(agent, processes):
    run = make_running_run(agent, pid=None)
    spawned = processes.start(run)
    reap_orphaned_runs()
    HeartbeatRun.objects.filter(pk=run.pk).update(
        detached_at=timezone.now() - timedelta(minutes=31)
    )

    result = reap_orphaned_runs()

    assert result.run_ids == [run.id]
    wait_until(
        lambda: is_gone(spawned.identity.pid),
        timeout=WAIT_SECONDS,
        message="the silent process is terminated",
    )
    run.refresh_from_db()
    assert "reported no activity for 30 minutes and was terminated" in run.error


def test_descendant_left_in_the_group_is_terminated_and_run_retried(agent, processes):
    issue = make_issue(agent.company)
    run = make_running_run(agent, pid=None, issue=issue)
    leader = processes.start(
        run,
        "import subprocess, sys; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        "print(child.pid, flush=True)",
    )
    descendant = processes.read_pid(leader)
    leader.wait(10)

    result = reap_orphaned_runs()

    assert result.run_ids == [run.id]
    wait_until(lambda: is_gone(descendant), timeout=5, message="the descendant exits")
    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "process_lost")
    assert "descendant process group" in run.error
    retry = HeartbeatRun.objects.get(retry_of_run=run)
    assert retry.status == "queued"
    issue.refresh_from_db()
    assert issue.execution_run_id == retry.id


def test_setsid_escapee_of_a_lost_run_is_terminated(agent, processes):
    run = make_running_run(agent, pid=None)
    leader = processes.start(
        run,
        "import subprocess, sys; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], "
        "start_new_session=True); print(child.pid, flush=True)",
    )
    escapee = processes.read_pid(leader)
    leader.wait(10)
    assert os.getpgid(escapee) != leader.identity.pgid

    result = reap_orphaned_runs()

    assert result.run_ids == [run.id]
    wait_until(lambda: is_gone(escapee), timeout=5, message="the setsid escapee exits")


def test_live_process_with_another_start_time_is_lost_and_never_signalled(agent, processes):
    run = make_running_run(agent, pid=None)
    # A recycled pid: some other process (without this run's marker) now holds it.
    spawned = processes.start(run, marker="someone-else")
    HeartbeatRun.objects.filter(pk=run.pk).update(
        process_started_at=spawned.identity.started_at - timedelta(hours=1)
    )

    result = reap_orphaned_runs()

    assert result.run_ids == [run.id]
    run.refresh_from_db()
    assert "the pid now belongs to another process" in run.error
    # wait(3) gives a wrong kill time to land before asserting it never did.
    assert spawned.wait(3) is None
    assert is_running(spawned.identity.pid)


def test_zombie_counts_as_dead(agent, processes):
    run = make_running_run(agent, pid=None)
    spawned = processes.start(run, "pass")
    wait_until(
        lambda: process_control.probe(spawned.identity).value == "zombie",
        timeout=WAIT_SECONDS,
        message="the child is a zombie",
    )

    result = reap_orphaned_runs()

    assert result.run_ids == [run.id]
    run.refresh_from_db()
    assert "it exited and was left a zombie" in run.error


def test_other_host_run_with_expired_lease_is_lost_and_nothing_is_signalled(agent, processes):
    run = make_running_run(
        agent,
        pid=None,
        owner="self",
        owner_host="elsewhere",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    spawned = processes.start(run)
    # The same pid on another host is another process: nothing here may be signalled.
    HeartbeatRun.objects.filter(pk=run.pk).update(process_host="elsewhere")

    result = reap_orphaned_runs()

    assert result.run_ids == [run.id]
    assert spawned.wait(3) is None
    assert is_running(spawned.identity.pid)


def test_other_host_run_with_fresh_lease_is_untouched(agent, processes):
    run = make_running_run(agent, pid=None, owner="self", owner_host="elsewhere")
    spawned = processes.start(run)
    HeartbeatRun.objects.filter(pk=run.pk).update(process_host="elsewhere")

    assert reap_orphaned_runs().reaped == 0
    run.refresh_from_db()
    assert (run.status, run.error_code) == ("running", None)
    assert is_running(spawned.identity.pid)


@pytest.mark.parametrize("single_flight", [True, False], ids=["locked", "unlocked"])
def test_six_racing_reapers_queue_exactly_one_retry_per_lost_run(agent, single_flight):
    issues = [make_issue(agent.company) for _ in range(20)]
    runs = [make_running_run(agent, pid=DEAD_PID, issue=issue) for issue in issues]
    start = threading.Barrier(6)
    results, failures = [], []

    def reaper() -> None:
        try:
            start.wait(30)
            results.append(reap_orphaned_runs(single_flight=single_flight, batch_size=3))
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=reaper) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert failures == []
    assert sum(result.reaped for result in results) == 20
    assert sorted(run_id for r in results for run_id in r.run_ids) == sorted(r.id for r in runs)
    lost_ids = [run.id for run in runs]
    assert HeartbeatRun.objects.filter(retry_of_run__in=lost_ids).count() == 20
    assert HeartbeatRun.objects.filter(id__in=lost_ids, status="failed").count() == 20
    assert HeartbeatRunEvent.objects.filter(run__in=lost_ids).count() == 20
