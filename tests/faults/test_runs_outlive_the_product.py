"""Runs outlive the control plane: the whole product stopped, killed, or without its database
mid-run costs no agent work. Real product (`python3 -m paperclip start`), real agents, real
PostgreSQL; every assertion reads the database and the process table."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import pairwise

import pytest
from django.utils import timezone

from heartbeat.models import HeartbeatRun, SweepRecord
from heartbeat.run_log import run_log_path
from heartbeat.services import cancel_run, wake_agent
from tests.factories import make_agent
from tests.faults.product import PrivatePostgres, Product, terminate_runs
from tests.polling import wait_until
from tests.recovery.processes import is_running

pytestmark = [pytest.mark.process, pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

SLEEP_THEN_DONE = "sleep 25; echo done"


@pytest.fixture
def product(tmp_path, settings) -> Iterator[Product]:
    # The product writes run logs where this process reads them.
    settings.PAPERCLIP_HEARTBEAT = {"run_log_dir": str(tmp_path / "run-logs")}
    installation = Product(tmp_path, PAPERCLIP_HOST_MAX_CONCURRENT_RUNS="8")
    yield installation
    installation.close()
    terminate_runs([str(run_id) for run_id in HeartbeatRun.objects.values_list("id", flat=True)])


def _wake(count: int, command: str) -> list[HeartbeatRun]:
    runs = []
    for n in range(count):
        agent = make_agent(
            name=f"Agent {n}",
            adapter_type="process",
            adapter_config={"command": "bash", "args": ["-c", command]},
        )
        runs.append(wake_agent(agent_id=agent.id, reason="fault_test").run)
    return runs


def _all_running(runs: list[HeartbeatRun]) -> list[HeartbeatRun] | None:
    running = list(
        HeartbeatRun.objects.filter(
            id__in=[run.id for run in runs], status="running", process_pid__isnull=False
        )
    )
    return running if len(running) == len(runs) else None


def _all_ended(runs: list[HeartbeatRun]) -> bool:
    ids = [run.id for run in runs]
    return not HeartbeatRun.objects.filter(id__in=ids, status__in=("queued", "running")).exists()


def _assert_no_work_lost(runs: list[HeartbeatRun]) -> None:
    for run in runs:
        run.refresh_from_db()
        assert (run.status, run.exit_code, run.stdout_excerpt) == ("succeeded", 0, "done\n"), (
            run.error
        )
        assert "done" in run_log_path(run.log_ref).read_text()
    assert not HeartbeatRun.objects.filter(retry_of_run__isnull=False).exists()
    assert not HeartbeatRun.objects.filter(error_code="process_lost").exists()


@pytest.mark.timeout(600)
def test_ctrl_c_and_start_again_costs_no_agent_work(product):
    product.start()
    runs = _wake(6, SLEEP_THEN_DONE)
    running = wait_until(
        lambda: _all_running(runs), timeout=60, interval=0.2, message="all six runs execute"
    )
    agents = [run.process_pid for run in running]

    product.ctrl_c()

    assert product.launcher.returncode == 0
    # Nothing of the product is left, and every agent still works.
    assert all(is_running(pid) for pid in agents)
    product.start()
    wait_until(
        lambda: _all_ended(runs), timeout=180, interval=0.2, message="all six runs are finalized"
    )
    _assert_no_work_lost(runs)


@pytest.mark.timeout(600)
def test_kill_9_of_every_product_process_and_start_again_costs_no_agent_work(product):
    product.start()
    runs = _wake(6, SLEEP_THEN_DONE)
    running = wait_until(
        lambda: _all_running(runs), timeout=60, interval=0.2, message="all six runs execute"
    )
    agents = [run.process_pid for run in running]
    product_pids = {proc.pid for proc in product.processes()}
    shims = {run.shim_pid for run in running}

    product.kill_all()

    # Launcher, web server, cluster and supervisor are gone; no agent or shim was among them.
    assert not any(is_running(pid) for pid in product_pids)
    assert not (shims | set(agents)) & product_pids
    assert all(is_running(pid) for pid in agents)
    product.start()
    wait_until(
        lambda: _all_ended(runs), timeout=180, interval=0.2, message="all six runs are finalized"
    )
    _assert_no_work_lost(runs)


@pytest.mark.timeout(600)
def test_database_killed_and_restarted_30s_later_kills_no_agent(tmp_path):
    database = PrivatePostgres()
    database.start()
    product = Product(tmp_path, database_url=database.url)
    run_ids: list[str] = []
    try:
        product.start()
        run_ids = product.wake(["sleep 12; echo done"] + ["sleep 50; echo done"] * 2)

        def when_all(predicate: Callable[[dict], bool]) -> Callable[[], list[dict] | None]:
            def check() -> list[dict] | None:
                seen = product.runs()
                return seen if seen and all(predicate(run) for run in seen) else None

            return check

        started = wait_until(
            when_all(lambda run: run["pid"]),
            timeout=90,
            interval=0.2,
            message="the three runs execute",
        )
        agents = [run["pid"] for run in started]

        database.kill()
        time.sleep(30)
        # The first agent ended during the outage; the others still work.
        assert all(is_running(pid) for pid in agents[1:])
        database.start()

        ended = wait_until(
            when_all(lambda run: run["status"] != "running"),
            timeout=120,
            interval=0.2,
            message="every run is finalized once the database is back",
        )
        assert [(run["status"], run["exit"], run["stdout"]) for run in ended] == [
            ("succeeded", 0, "done\n")
        ] * 3
        assert sum(run["retries"] for run in ended) == 0
        said = product.log.read_text()
        assert said.count("database unreachable") == 1
        assert "database reachable again after" in said
    finally:
        product.close()
        terminate_runs(run_ids)
        database.stop()


@pytest.mark.timeout(900)
def test_eight_long_runs_run_at_once_and_sweeps_never_wait_behind_them(product):
    product.start()
    woken = time.monotonic()
    runs = _wake(8, "sleep 420")
    wait_until(
        lambda: _all_running(runs), timeout=10, interval=0.2, message="all eight runs execute"
    )
    started_within = time.monotonic() - woken
    # Every run slot of the host is busy: a ninth run waits for one.
    ninth = _wake(1, "echo ninth")[0]
    window_start = timezone.now()

    time.sleep(300)

    window_end = timezone.now()
    assert started_within <= 10
    assert _all_running(runs)
    ninth.refresh_from_db()
    assert ninth.status == "queued"
    for kind in ("reap", "reconcile"):
        times = sorted(
            SweepRecord.objects.filter(
                kind=kind,
                started_at__gte=window_start - timedelta(seconds=45),
                started_at__lte=window_end,
            ).values_list("started_at", flat=True)
        )
        assert times, f"no {kind} sweep at all"
        gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(times)]
        gaps += [
            (times[0] - window_start).total_seconds(),
            (window_end - times[-1]).total_seconds(),
        ]
        assert max(gaps) <= 45, f"{kind}: {len(times)} sweeps, largest gap {max(gaps):.1f}s"
    for run in runs:
        cancel_run(run.id)
