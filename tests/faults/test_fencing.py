"""Fencing across hosts: a host whose lease expired while its run was retried on another host
stops its old agent as soon as its run supervisor is back. Two hosts are simulated on this
machine by PAPERCLIP_HOST_NAME; the supervisor is a real `manage.py supervise_runs`."""

from __future__ import annotations

import time

import psutil
import pytest
from django.utils import timezone

from heartbeat.models import HeartbeatRun
from heartbeat.process_control import MARKER_ENV
from heartbeat.services import reap_orphaned_runs, run_execute, wake_agent
from issues.models import Issue
from tests.cluster import running_supervisor
from tests.factories import make_agent, make_issue
from tests.faults.product import terminate_runs
from tests.polling import wait_until
from tests.recovery.processes import WAIT_SECONDS, is_gone, is_running

pytestmark = [pytest.mark.process, pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

# Short leases so that the test sees one expire.
FAST_LEASES = {"PAPERCLIP_LEASE_EXPIRY_SEC": "3", "PAPERCLIP_LEASE_RENEW_INTERVAL_SEC": "1"}


def _agents_working_on(issue: Issue) -> list[int]:
    """Live agent processes (not their shims) of any run of the issue, from the process table."""
    runs = {str(run_id) for run_id in HeartbeatRun.objects.values_list("id", flat=True)}
    agents = []
    for proc in psutil.process_iter(["environ", "status"]):
        environ = proc.info["environ"] or {}
        if (
            environ.get(MARKER_ENV) in runs
            and environ.get("PAPERCLIP_TASK_ID") == str(issue.id)
            and proc.info["status"] != psutil.STATUS_ZOMBIE
            and proc.name() == "sleep"
        ):
            agents.append(proc.pid)
    return agents


@pytest.mark.timeout(180)
def test_host_back_after_its_run_was_retried_elsewhere_stops_its_old_agent_at_once(
    run_logs, settings, tmp_path, monkeypatch
):
    settings.PAPERCLIP_HEARTBEAT = {**settings.PAPERCLIP_HEARTBEAT, "lease_expiry_sec": 3}
    agent = make_agent(adapter_type="process", adapter_config={"command": "sleep", "args": ["300"]})
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    run = wake_agent(agent_id=agent.id, reason="issue_assigned", payload={"issueId": str(issue.id)})
    run = run.run
    try:
        run_execute(run_id=run.id)
        run.refresh_from_db()
        with running_supervisor(tmp_path, **FAST_LEASES) as host_a:
            wait_until(
                lambda: HeartbeatRun.objects.get(pk=run.id).owner_pid == host_a.pid,
                timeout=WAIT_SECONDS,
                message="host A watches the run",
            )
            # Host A is cut off: its supervisor is gone and its lease runs out.
            host_a.kill()
            host_a.wait()
        wait_until(
            lambda: HeartbeatRun.objects.get(pk=run.id).lease_expires_at < timezone.now(),
            timeout=WAIT_SECONDS,
            message="the lease expires",
        )

        # Host B's reaper fails the run (by lease alone, never signalling A) and retries it.
        monkeypatch.setenv("PAPERCLIP_HOST_NAME", "host-b")
        result = reap_orphaned_runs()
        monkeypatch.delenv("PAPERCLIP_HOST_NAME")

        assert result.run_ids == [run.id]
        retry = HeartbeatRun.objects.get(retry_of_run_id=run.id)
        assert Issue.objects.get(pk=issue.id).execution_run_id == retry.id
        assert is_running(run.process_pid)

        # Host A is back: its supervisor stops the old agent at once.
        with running_supervisor(tmp_path, **FAST_LEASES):
            back = time.monotonic()
            wait_until(
                lambda: is_gone(run.process_pid), timeout=20, message="the old agent is stopped"
            )
            stopped_after = time.monotonic() - back
            # Only now does host B start the retry: one agent on the issue, never two.
            monkeypatch.setenv("PAPERCLIP_HOST_NAME", "host-b")
            assert run_execute(run_id=retry.id).status == "running"
            monkeypatch.delenv("PAPERCLIP_HOST_NAME")
            retry.refresh_from_db()
            assert _agents_working_on(issue) == [retry.process_pid]
            wait_until(
                lambda: HeartbeatRun.objects.get(pk=run.id).events.filter(
                    message__contains="found this run's agent still running"
                ),
                timeout=WAIT_SECONDS,
                message="the fence is recorded",
            )

        # Stopped in the supervisor's first pass (its start-up, Django's included, is most of it).
        assert stopped_after < 10
        assert HeartbeatRun.objects.filter(retry_of_run_id__isnull=False).count() == 1
        assert (retry.process_host, retry.status) == ("host-b", "running")
    finally:
        terminate_runs(
            [str(run_id) for run_id in HeartbeatRun.objects.values_list("id", flat=True)]
        )
