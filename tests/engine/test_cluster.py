"""End to end through a real django-q2 cluster (`manage.py qcluster`) and a real run
supervisor (`manage.py supervise_runs`) on the test database: the cluster's workers launch runs,
the supervisor watches and finalizes them. Both are separate process trees (tests/cluster.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from heartbeat.models import HeartbeatRun
from heartbeat.services import wake_agent
from tests.cluster import running_qcluster, running_supervisor
from tests.factories import make_agent

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

WAIT_SECONDS = 90.0


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path) -> Iterator[subprocess.Popen]:
    with running_supervisor(tmp_path), running_qcluster(tmp_path) as proc:
        yield proc


@pytest.mark.timeout(180)
def test_cluster_executes_woken_runs_end_to_end_one_at_a_time_per_agent(cluster):
    agent = make_agent(
        adapter_type="process",
        adapter_config={
            "command": sys.executable,
            "args": ["-c", "import time; time.sleep(0.5); print('done in worker')"],
        },
    )
    # Distinct task keys, so the wakes do not coalesce: two runs behind a cap of one.
    runs = [
        wake_agent(agent_id=agent.id, reason="test", payload={"taskKey": key}).run
        for key in ("a", "b")
    ]

    _wait_for(
        lambda: HeartbeatRun.objects.filter(agent=agent, status="succeeded").count() == 2,
        "both runs succeeded in the cluster",
    )

    first, second = (HeartbeatRun.objects.get(pk=run.pk) for run in runs)
    cluster_pids = {cluster.pid} | {p.pid for p in psutil.Process(cluster.pid).children(True)}
    for run in (first, second):
        launched_by = run.events.get(message="run started").payload["ownerPid"]
        assert launched_by in cluster_pids and launched_by != os.getpid()
        assert run.stdout_excerpt == "done in worker\n"
        assert run.events.filter(message="run succeeded").exists()
    # The agent's cap of one held: the second run was claimed after the first finished.
    # (Claim and finish times, not the OS start time, which is only accurate to a second.)
    ordered = sorted((first, second), key=lambda run: run.started_at)
    assert ordered[1].started_at >= ordered[0].finished_at
    agent.refresh_from_db()
    assert agent.status == "idle"
