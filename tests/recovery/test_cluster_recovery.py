"""Recovery through a real django-q2 cluster (`manage.py qcluster`) on the test database.

The cluster reaches the test database through PAPERCLIP_DB_NAME. Its workers run the start-up
recovery when they start, so a worker that replaces a killed one reaps at once, and the
schedules it creates drive the periodic sweeps. Runs live under real run shims.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from heartbeat.models import HeartbeatRun
from heartbeat.services import wake_agent
from tests.cluster import product_env, running_qcluster, running_supervisor
from tests.factories import make_agent
from tests.polling import wait_until
from tests.recovery.processes import WAIT_SECONDS, is_gone, is_running

pytestmark = [pytest.mark.process, pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

CLUSTER_WAIT_SECONDS = 150.0
# First attempt: report, then hang; the process-loss retry (its wake reason) succeeds at once.
AGENT_CODE = (
    "import os, sys, time\n"
    "if os.environ.get('PAPERCLIP_WAKE_REASON') == 'process_lost_retry':\n"
    "    print('retry ok', flush=True)\n"
    "    sys.exit(0)\n"
    "time.sleep(300)\n"
)


@pytest.fixture
def dispatched() -> None:
    """Runs really go to django-q2 here (overrides the recording fixture)."""


@pytest.fixture
def supervised_cluster(tmp_path) -> Iterator[subprocess.Popen]:
    with running_supervisor(tmp_path), running_qcluster(tmp_path) as proc:
        yield proc


@pytest.fixture
def agent_pids() -> Iterator[list[int]]:
    """Agent processes a test saw; SIGKILLed at teardown whatever the test did."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


def _running_with_process(run_id) -> HeartbeatRun | None:
    run = HeartbeatRun.objects.get(pk=run_id)
    return run if run.status == "running" and run.process_pid and run.shim_pid else None


def _start_run(agent_pids: list[int]) -> HeartbeatRun:
    agent = make_agent(
        adapter_type="process",
        adapter_config={"command": sys.executable, "args": ["-c", AGENT_CODE]},
    )
    run = wake_agent(agent_id=agent.id, reason="test_recovery").run
    wait_until(
        lambda: _running_with_process(run.id),
        timeout=CLUSTER_WAIT_SECONDS,
        message="the run executes in a worker",
    )
    run.refresh_from_db()
    agent_pids.append(run.process_pid)
    return run


LAUNCH_AND_EXIT = (
    "from heartbeat.services import run_execute; print(run_execute(run_id={!r}).status)"
)


@pytest.mark.timeout(400)
def test_run_nobody_watches_is_detached_then_finalized_from_its_exit_report(tmp_path, agent_pids):
    agent = make_agent(
        adapter_type="process",
        adapter_config={"command": sys.executable, "args": ["-c", AGENT_CODE]},
    )
    run = wake_agent(agent_id=agent.id, reason="test_recovery").run
    # A one-off worker launches the run and is gone at once; no run supervisor runs here.
    launched = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", LAUNCH_AND_EXIT.format(str(run.id))],
        cwd=Path(__file__).resolve().parents[2],
        env=product_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    assert launched.stdout.strip().endswith("running"), launched.stderr
    run.refresh_from_db()
    agent_pids.append(run.process_pid)

    # A cluster starting on the host reaps at once: the shim lives, so the run is detached.
    with running_qcluster(tmp_path):
        wait_until(
            lambda: HeartbeatRun.objects.get(pk=run.id).error_code == "process_detached",
            timeout=CLUSTER_WAIT_SECONDS,
            message="the run is marked detached",
        )
        run.refresh_from_db()
        assert run.status == "running"
        assert "No run supervisor watches this run" in run.error
        assert is_running(run.process_pid) and is_running(run.shim_pid)

        os.kill(run.process_pid, signal.SIGTERM)
        wait_until(
            lambda: is_gone(run.shim_pid),
            timeout=WAIT_SECONDS,
            message="the shim reports and exits",
        )

        # The periodic reap finds the exit report: the run ends as the agent did, not as lost.
        wait_until(
            lambda: HeartbeatRun.objects.get(pk=run.id).status == "failed",
            timeout=CLUSTER_WAIT_SECONDS,
            message="the detached run is finalized",
        )
    run.refresh_from_db()
    assert (run.error_code, run.error) == ("adapter_failed", "Process terminated by SIGTERM")
    assert not HeartbeatRun.objects.filter(retry_of_run_id=run.id).exists()


@pytest.mark.timeout(400)
def test_killed_shim_and_agent_give_a_lost_run_whose_retry_succeeds(supervised_cluster, agent_pids):
    run = _start_run(agent_pids)

    # The run's monitor and its agent both die (an OOM kill, a host-level kill): nobody knows
    # how the agent ended.
    os.kill(run.shim_pid, signal.SIGKILL)
    os.kill(run.process_pid, signal.SIGKILL)

    def retry_succeeded() -> bool:
        retry = HeartbeatRun.objects.filter(retry_of_run_id=run.id).first()
        return retry is not None and retry.status == "succeeded"

    wait_until(
        retry_succeeded, timeout=CLUSTER_WAIT_SECONDS, message="the process-loss retry succeeds"
    )
    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "process_lost")
    assert f"monitor (shim pid {run.shim_pid}) died" in run.error
    retry = HeartbeatRun.objects.get(retry_of_run_id=run.id)
    assert retry.process_loss_retry_count == 1
    assert retry.context_snapshot["retryReason"] == "process_lost"
    assert retry.stdout_excerpt == "retry ok\n"
