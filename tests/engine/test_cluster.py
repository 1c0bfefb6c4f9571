"""End to end through a real django-q2 cluster (`manage.py qcluster`) and a real run
supervisor (`manage.py supervise_runs`) on the test database: the cluster's workers launch runs,
the supervisor watches and finalizes them. Both are separate process trees (tests/cluster.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from django.utils import timezone

from heartbeat.models import Agent, AgentWakeupRequest, CostEvent, HeartbeatRun
from heartbeat.services import BudgetBlocked, agent_update, budgets_month_rollover, wake_agent
from paperclip.models import ActivityLog, spend_month_of
from tests.cluster import product_env, running_command, running_qcluster, running_supervisor
from tests.factories import make_agent
from tests.polling import wait_until

pytestmark = [pytest.mark.process, pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

WAIT_SECONDS = 90.0


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

    wait_until(
        lambda: HeartbeatRun.objects.filter(agent=agent, status="succeeded").count() == 2,
        timeout=WAIT_SECONDS,
        interval=0.1,
        message="both runs succeeded in the cluster",
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


FAKE_CLAUDE = Path(__file__).resolve().parent.parent / "fake_cli" / "claude"


def _run_status(run_id) -> str:
    return HeartbeatRun.objects.values_list("status", flat=True).get(pk=run_id)


def _board_sets_budget(agent: Agent, cents: int) -> None:
    agent_update(
        agent_id=agent.id,
        changes={"budget_monthly_cents": cents},
        actor_type="user",
        actor_id="board",
    )


@pytest.mark.timeout(300)
def test_budget_stops_and_resumes_a_claude_agent_through_the_cluster(cluster, tmp_path):
    state = tmp_path / "cli-state"
    state.mkdir()
    agent = make_agent(
        role="engineer",
        adapter_type="claude_local",
        adapter_config={
            "command": str(FAKE_CLAUDE),
            # Each run costs 60 cents and takes a few seconds: two overlap.
            "env": {
                "FAKE_CLI_STATE": str(state),
                "FAKE_CLI_COST_USD": "0.6",
                "FAKE_CLI_SLEEP": "3",
            },
        },
        runtime_config={"heartbeat": {"maxConcurrentRuns": 2}},
        budget_monthly_cents=50,
    )

    # Two runs in flight: the first to finish spends the budget and pauses the agent; the
    # other finishes all the same, and its cost counts.
    first, second = (
        wake_agent(agent_id=agent.id, reason="test", payload={"taskKey": key}).run
        for key in ("a", "b")
    )
    wait_until(
        lambda: {_run_status(first.id), _run_status(second.id)} == {"succeeded"},
        timeout=WAIT_SECONDS,
        interval=0.1,
        message="both runs in flight finished",
    )
    first, second = (HeartbeatRun.objects.get(pk=run.pk) for run in (first, second))
    assert max(first.started_at, second.started_at) < min(first.finished_at, second.finished_at)
    agent.refresh_from_db()
    assert (agent.status, agent.pause_reason, agent.spent_monthly_cents) == (
        "paused",
        "budget",
        120,
    )
    assert ActivityLog.objects.filter(action="budget.exceeded", agent=agent).count() == 1

    with pytest.raises(BudgetBlocked):
        wake_agent(agent_id=agent.id, reason="test", payload={"taskKey": "c"})
    assert AgentWakeupRequest.objects.get(agent=agent, status="skipped").reason == "budget.blocked"

    # The board raises the budget: the agent runs again, on task a in a's session.
    _board_sets_budget(agent, 500)
    agent.refresh_from_db()
    assert agent.status == "idle"
    again = wake_agent(agent_id=agent.id, reason="test", payload={"taskKey": "a"}).run
    wait_until(
        lambda: _run_status(again.id) == "succeeded",
        timeout=WAIT_SECONDS,
        interval=0.1,
        message="the run after the raise finished",
    )
    again.refresh_from_db()
    assert again.session_id_before == first.session_id_after
    assert again.session_id_after == first.session_id_after
    agent.refresh_from_db()
    assert agent.spent_monthly_cents == 180

    # A lower budget pauses it again; the next month starts its spend over and resumes it.
    _board_sets_budget(agent, 150)
    last_month = (spend_month_of(timezone.now()) - timedelta(days=1)).replace(day=1)
    Agent.objects.filter(pk=agent.pk).update(spend_month=last_month)
    assert budgets_month_rollover().agents_resumed == [agent.id]
    agent.refresh_from_db()
    assert (agent.status, agent.spent_monthly_cents) == ("idle", 0)
    fresh_month = wake_agent(agent_id=agent.id, reason="test", payload={"taskKey": "d"}).run
    wait_until(
        lambda: _run_status(fresh_month.id) == "succeeded",
        timeout=WAIT_SECONDS,
        interval=0.1,
        message="the new month's run finished",
    )
    agent.refresh_from_db()
    assert agent.spent_monthly_cents == 60
    assert CostEvent.objects.filter(agent=agent).count() == 4
    calls = [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]
    assert [call["resume"] for call in calls].count(first.session_id_after) == 1


@pytest.mark.timeout(120)
def test_run_cluster_tells_its_launcher_once_the_workers_are_up(tmp_path):
    read_end, write_end = os.pipe()
    env = product_env(tmp_path, PAPERCLIP_Q_WORKERS="2", PAPERCLIP_LAUNCHER_FD=str(write_end))
    try:
        with running_command(
            tmp_path, "run_cluster", log_name="cluster.log", env=env, pass_fds=(write_end,)
        ) as proc:
            os.close(write_end)
            heard = os.read(read_end, 100)
            # The sentinel, its monitor and pusher, and the two workers.
            assert len(psutil.Process(proc.pid).children(recursive=True)) == 5
    finally:
        os.close(read_end)

    assert heard == b"ready\n"
