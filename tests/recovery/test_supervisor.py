"""The run supervisor against real shims and real agents: taking runs over, adopting them after
a restart, finalizing what ended meanwhile, fencing, cancels from another host, one per host.

Supervisors run either in the test process (tests/supervision.py) or as real
`manage.py supervise_runs` processes on the test database (tests/cluster.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from heartbeat import process_control
from heartbeat.models import Agent, HeartbeatRun
from heartbeat.run_log import run_exit_report_path
from heartbeat.services import reap_orphaned_runs, run_execute, wake_agent
from heartbeat.services.supervision import CANCELLED_AT_STOP
from paperclip.models import ActivityLog
from tests.cluster import product_env, running_supervisor, stop_gracefully
from tests.factories import make_agent
from tests.polling import wait_until
from tests.recovery.builders import DEAD_PID
from tests.recovery.processes import WAIT_SECONDS, is_gone, is_running
from tests.supervision import SupervisorDriver

pytestmark = [
    pytest.mark.process,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.django_db(transaction=True),
]

ROOT = Path(__file__).resolve().parents[2]


def _agent(command: str) -> Agent:
    return make_agent(
        adapter_type="process", adapter_config={"command": "bash", "args": ["-c", command]}
    )


@pytest.fixture
def launch() -> Iterator[Callable[[str], HeartbeatRun]]:
    """Launch a run as a worker does (in this process); whatever it leaves is killed after."""
    launched: list[str] = []

    def _launch(command: str) -> HeartbeatRun:
        run = wake_agent(agent_id=_agent(command).id, reason="test").run
        launched.append(str(run.id))
        assert run_execute(run_id=run.id).status == "running"
        run.refresh_from_db()
        return run

    yield _launch
    for marker in launched:
        process_control.terminate_tree(None, marker=marker, grace=0)


def _owner_pid(run_id) -> int | None:
    return HeartbeatRun.objects.values_list("owner_pid", flat=True).get(pk=run_id)


def _status(run_id) -> str:
    return HeartbeatRun.objects.values_list("status", flat=True).get(pk=run_id)


def test_supervisor_takes_over_launched_runs_silently(launch, run_logs, supervisor):
    run = launch("sleep 30")

    supervisor.tick()

    run.refresh_from_db()
    assert (run.owner_pid, run.status) == (os.getpid(), "running")
    assert run.owner_since is not None
    # Taking a run over from the worker that launched it is routine: no event, no activity.
    assert run.events.count() == 3
    assert run.id in supervisor.supervisor.watched


def test_leases_of_all_watched_runs_are_renewed_in_one_statement(launch, run_logs, supervisor):
    runs = [launch("sleep 30") for _ in range(3)]
    supervisor.tick()
    before = dict(HeartbeatRun.objects.values_list("id", "lease_renewed_at"))
    supervisor.supervisor.next_renewal = 0.0

    with CaptureQueriesContext(connection) as queries:
        supervisor.tick()

    renewals = [q for q in queries if "lease_renewed_at" in q["sql"] and "UPDATE" in q["sql"]]
    assert len(renewals) == 1
    after = dict(HeartbeatRun.objects.values_list("id", "lease_renewed_at"))
    assert all(after[run.id] > before[run.id] for run in runs)


@pytest.mark.cluster
def test_restarted_supervisor_adopts_the_live_run_and_finalizes_it(launch, run_logs, tmp_path):
    # The agent ends only once the second supervisor has adopted it: a fixed sleep let a slow
    # start (a loaded machine) find the run already ended, finalized without adoption.
    release = tmp_path / "release"
    with running_supervisor(tmp_path) as first:
        run = launch(f"while [ ! -e {release} ]; do sleep 0.05; done; echo done")
        wait_until(
            lambda: _owner_pid(run.id) == first.pid,
            timeout=WAIT_SECONDS,
            message="the first supervisor watches it",
        )
        first.kill()
        first.wait()
    assert is_running(run.process_pid)

    with running_supervisor(tmp_path) as second:
        wait_until(
            lambda: _owner_pid(run.id) == second.pid,
            timeout=WAIT_SECONDS,
            message="the second supervisor adopts it",
        )
        release.touch()
        wait_until(lambda: _status(run.id) != "running", timeout=30, message="the run is finalized")

    run.refresh_from_db()
    assert (run.status, run.stdout_excerpt, run.owner_pid) == ("succeeded", "done\n", second.pid)
    adopted = run.events.get(message__startswith="Adopted by the run supervisor")
    assert f"pid {second.pid}" in adopted.message and f"pid {first.pid}" in adopted.message
    assert ActivityLog.objects.filter(action="heartbeat.run_adopted", entity_id=run.id).exists()
    assert not HeartbeatRun.objects.filter(retry_of_run_id=run.id).exists()


def test_run_that_ended_while_no_supervisor_ran_is_finalized_when_one_starts(launch, run_logs):
    run = launch("echo finished while nobody watched")
    wait_until(
        lambda: run_exit_report_path(run.log_ref).exists(),
        timeout=WAIT_SECONDS,
        message="the agent ends",
    )

    driver = SupervisorDriver()
    try:
        driver.settle(run.id)
    finally:
        driver.close()

    run.refresh_from_db()
    assert (run.status, run.exit_code) == ("succeeded", 0)
    assert run.stdout_excerpt == "finished while nobody watched\n"
    assert not HeartbeatRun.objects.filter(retry_of_run_id=run.id).exists()


@pytest.mark.cluster
def test_second_supervisor_on_one_host_is_refused(run_logs, tmp_path):
    with running_supervisor(tmp_path) as first:
        wait_until(
            lambda: "watching host" in (tmp_path / "supervisor.log").read_text(),
            timeout=WAIT_SECONDS,
            message="the first supervisor is up",
        )
        with pytest.raises(CommandError, match="another run supervisor is running on"):
            call_command("supervise_runs")
        assert first.poll() is None


def test_supervisor_start_stops_an_agent_whose_run_already_ended_elsewhere(launch, run_logs):
    run = launch("echo started; sleep 300")
    # Another host's reaper failed and retried the run while this host was away.
    HeartbeatRun.objects.filter(pk=run.id).update(
        status="failed", error_code="process_lost", finished_at=timezone.now()
    )

    started = time.monotonic()
    driver = SupervisorDriver()
    try:
        driver.settle_until(
            lambda: not is_running(run.process_pid), seconds=10, message="the agent is stopped"
        )
        stopped_after = time.monotonic() - started
        driver.settle(run.id)
    finally:
        driver.close()

    assert stopped_after < 2.0
    assert is_gone(run.shim_pid)
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.events.filter(message__contains="found this run's agent still running").exists()
    # Its output is kept on the failed run.
    assert run.stdout_excerpt == "started\n"


@pytest.mark.cluster
def test_cancel_written_on_another_host_stops_the_run_within_two_seconds(
    launch, run_logs, tmp_path
):
    with running_supervisor(tmp_path) as supervisor_proc:
        run = launch("sleep 300")
        wait_until(
            lambda: _owner_pid(run.id) == supervisor_proc.pid,
            timeout=WAIT_SECONDS,
            message="the supervisor watches it",
        )

        # The cancel is issued by a process of another host: it can only write the database.
        other_host = product_env(tmp_path, PAPERCLIP_HOST_NAME="host-b")
        subprocess.run(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                f"from heartbeat.services import cancel_run; cancel_run({str(run.id)!r})",
            ],
            cwd=ROOT,
            env=other_host,
            check=True,
            capture_output=True,
        )
        cancelled = time.monotonic()
        wait_until(lambda: is_gone(run.process_pid), timeout=10, message="the agent is stopped")
        stopped_after = time.monotonic() - cancelled
        wait_until(
            lambda: HeartbeatRun.objects.get(pk=run.id).signal is not None,
            timeout=WAIT_SECONDS,
            message="the shim's report is merged",
        )

    assert stopped_after < 2.0
    run.refresh_from_db()
    assert (run.status, run.signal) == ("cancelled", "SIGTERM")


def test_shim_killed_mid_run_leaves_its_agent_detached_then_lost_when_it_exits(
    launch, run_logs, supervisor
):
    run = launch("sleep 300")
    supervisor.tick()

    os.kill(run.shim_pid, signal.SIGKILL)
    wait_until(lambda: is_gone(run.shim_pid), timeout=WAIT_SECONDS, message="the shim is gone")
    supervisor.settle_until(
        lambda: _error_code(run.id) == "process_detached", message="the run is detached"
    )

    run.refresh_from_db()
    assert run.status == "running" and is_running(run.process_pid)
    assert f"monitor (shim pid {run.shim_pid}) died" in run.error

    os.kill(run.process_pid, signal.SIGKILL)
    wait_until(lambda: is_gone(run.process_pid), timeout=WAIT_SECONDS, message="the agent is gone")
    result = reap_orphaned_runs()

    assert result.run_ids == [run.id]
    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "process_lost")
    assert HeartbeatRun.objects.filter(retry_of_run_id=run.id).count() == 1


def _error_code(run_id) -> str | None:
    return HeartbeatRun.objects.values_list("error_code", flat=True).get(pk=run_id)


def test_reaper_leaves_a_live_shim_to_the_running_supervisor_of_its_host(
    launch, run_logs, supervisor
):
    run = launch("sleep 300")
    # Its owner is gone (a worker that died right after the launch) and so is its lease.
    HeartbeatRun.objects.filter(pk=run.id).update(
        owner_pid=DEAD_PID, lease_expires_at=timezone.now()
    )

    result = reap_orphaned_runs()

    assert (result.reaped, result.detached) == (0, 0)
    assert _error_code(run.id) is None
    supervisor.tick()
    assert _owner_pid(run.id) == os.getpid()


@pytest.mark.cluster
def test_supervisor_stopped_cleanly_leaves_runs_running(launch, run_logs, tmp_path):
    with running_supervisor(tmp_path) as supervisor_proc:
        run = launch("sleep 300")
        wait_until(
            lambda: _owner_pid(run.id) == supervisor_proc.pid,
            timeout=WAIT_SECONDS,
            message="the supervisor watches it",
        )
        stop_gracefully(supervisor_proc)

    assert supervisor_proc.returncode == 0
    assert is_running(run.process_pid) and is_running(run.shim_pid)
    assert _status(run.id) == "running"


@pytest.mark.cluster
def test_supervisor_asked_to_stop_runs_cancels_them_and_exits_once_they_ended(
    launch, run_logs, tmp_path
):
    with running_supervisor(tmp_path) as supervisor_proc:
        runs = [launch("sleep 300"), launch("sleep 300")]
        wait_until(
            lambda: all(_owner_pid(run.id) == supervisor_proc.pid for run in runs),
            timeout=WAIT_SECONDS,
            message="the supervisor watches both",
        )
        supervisor_proc.send_signal(signal.SIGUSR1)
        supervisor_proc.wait(timeout=60)

    assert supervisor_proc.returncode == 0
    for run in runs:
        run.refresh_from_db()
        assert (run.status, run.error, run.signal) == ("cancelled", CANCELLED_AT_STOP, "SIGTERM")
        assert is_gone(run.process_pid) and is_gone(run.shim_pid)


@pytest.mark.cluster
def test_supervisor_tells_its_launcher_it_is_up_and_how_many_runs_are_in_flight(
    launch, run_logs, tmp_path
):
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    heard = b""

    def said(line: str) -> bool:
        nonlocal heard
        with contextlib.suppress(BlockingIOError):
            heard += os.read(read_end, 4096)
        return line in heard.decode().splitlines()

    try:
        with running_supervisor(
            tmp_path, pass_fds=(write_end,), PAPERCLIP_LAUNCHER_FD=str(write_end)
        ) as supervisor_proc:
            os.close(write_end)
            wait_until(
                lambda: said("ready"), timeout=WAIT_SECONDS, message="the supervisor says it is up"
            )
            run = launch("sleep 300")
            wait_until(
                lambda: said("runs 1"),
                timeout=WAIT_SECONDS,
                message="the supervisor counts the run",
            )
            stop_gracefully(supervisor_proc)
        while chunk := os.read(read_end, 4096):
            heard += chunk
    finally:
        os.close(read_end)

    assert heard.decode().splitlines() == ["runs 0", "ready", "runs 1", "runs 1"]
    assert _status(run.id) == "running"
