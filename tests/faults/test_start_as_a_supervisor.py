"""`python3 -m paperclip start` as a supervisor: one instance per PAPERCLIP_HOME, children
restarted after kill -9, nothing of the product left after the launcher's own kill -9, an
ordered stop. Real launcher, real children, real agents; assertions on the process table and
the database (through `manage.py shell` when the product runs its own embedded PostgreSQL).
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from heartbeat.models import HeartbeatRun
from heartbeat.services import wake_agent
from heartbeat.services.supervision import CANCELLED_AT_STOP
from tests.factories import make_agent
from tests.faults.product import ROOT, Product, terminate_runs
from tests.polling import wait_until
from tests.recovery.processes import is_running

pytestmark = [pytest.mark.process, pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

# Long enough to be in flight through a kill and a restart, short enough to end in the test.
WORK_THEN_DONE = "sleep 20; echo done"


@pytest.fixture
def product(tmp_path, settings) -> Iterator[Product]:
    """On the test database: the test reads the product's state through the ORM."""
    settings.PAPERCLIP_HEARTBEAT = {"run_log_dir": str(tmp_path / "run-logs")}
    installation = Product(tmp_path)
    yield installation
    installation.close()
    terminate_runs([str(run_id) for run_id in HeartbeatRun.objects.values_list("id", flat=True)])


@pytest.fixture
def embedded_product(tmp_path) -> Iterator[Product]:
    """With its own embedded PostgreSQL, as `start` runs by default."""
    installation = Product(tmp_path, embedded=True)
    yield installation
    run_ids = [run["id"] for run in installation.runs()] if installation.starts else []
    installation.close()
    terminate_runs(run_ids)


def _start_again(product: Product) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "paperclip", "start", "--port", str(product.port)],
        cwd=ROOT,
        env=product.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _in_flight(product: Product, run_ids: list[str]) -> list[dict] | None:
    runs = [run for run in product.runs() if run["id"] in run_ids]
    return runs if all(run["status"] == "running" and run["pid"] for run in runs) else None


def _ended(product: Product, run_ids: list[str]) -> list[dict] | None:
    runs = [run for run in product.runs() if run["id"] in run_ids]
    return runs if all(run["status"] != "running" for run in runs) else None


def _no_work_lost(runs: list[dict]) -> bool:
    return all(
        (run["status"], run["exit"], run["stdout"], run["retries"]) == ("succeeded", 0, "done\n", 0)
        for run in runs
    )


def _product_processes_of(home: str) -> list[psutil.Process]:
    """Every live process started with this PAPERCLIP_HOME (the launcher's environment, which
    its children inherit; agents and run shims never get it)."""
    found = []
    for proc in psutil.process_iter(["environ", "status"]):
        environ = proc.info["environ"] or {}
        if environ.get("PAPERCLIP_HOME") == home and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def _wake(count: int, command: str) -> list[HeartbeatRun]:
    agents = [
        make_agent(adapter_type="process", adapter_config={"command": "bash", "args": ["-c", c]})
        for c in [command] * count
    ]
    return [wake_agent(agent_id=agent.id, reason="fault_test").run for agent in agents]


def _watched_by(supervisor_pid: int, runs: list[HeartbeatRun]) -> list[HeartbeatRun] | None:
    """The runs once they execute and the supervisor watches them (it has counted them)."""
    ids = [run.id for run in runs]
    found = list(
        HeartbeatRun.objects.filter(id__in=ids, status="running", owner_pid=supervisor_pid)
    )
    return found if len(found) == len(runs) else None


# One instance per PAPERCLIP_HOME


@pytest.mark.timeout(300)
def test_second_start_exits_1_naming_the_first_which_stays_healthy(product):
    product.start()
    children = {proc.pid for proc in product.processes()}

    second = _start_again(product)

    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"paperclip: already running for {product.env['PAPERCLIP_HOME']} "
        f"(pid {product.launcher.pid}, {product.origin}/); stop that one first "
        "(Ctrl-C in its terminal)"
    ]
    for _ in range(20):
        assert product.health() == 200
        time.sleep(1)
    assert {proc.pid for proc in product.processes()} == children


@pytest.mark.timeout(120)
def test_start_on_a_busy_port_says_which_port_and_starts_nothing(tmp_path):
    product = Product(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", product.port))
        busy.listen()

        refused = _start_again(product)

    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"paperclip: port {product.port} is in use by another program; stop it, or start on "
        f"another port: python3 -m paperclip start --port {product.port + 1}"
    ]
    assert not _product_processes_of(product.env["PAPERCLIP_HOME"])


# Children restarted


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "name", ["web server", "django-q2 cluster", "run supervisor", "embedded PostgreSQL"]
)
def test_kill_9_of_a_child_is_undone_within_10s_and_runs_in_flight_are_unharmed(
    embedded_product, name
):
    product = embedded_product
    product.start()
    run_ids = product.wake([WORK_THEN_DONE] * 2)
    wait_until(
        lambda: _in_flight(product, run_ids), timeout=90, interval=0.2, message="both runs execute"
    )
    victim = product.child(name)
    # Its workers (gunicorn, django-q2) or backends (PostgreSQL), which must not outlive it.
    descendants = victim.children(recursive=True)

    victim.kill()
    wait_until(
        lambda: f"{name} is back" in product.said() and product.health() == 200,
        timeout=10,
        interval=0.2,
        message=f"the {name} is back and the API healthy",
    )

    assert product.child(name).pid != victim.pid
    assert not any(is_running(proc.pid) for proc in [victim, *descendants])
    ended = wait_until(
        lambda: _ended(product, run_ids), timeout=120, interval=0.2, message="both runs end"
    )
    assert _no_work_lost(ended), ended


@pytest.mark.timeout(400)
def test_cluster_stuck_after_its_idle_workers_were_killed_is_restarted_and_launches_again(
    tmp_path,
):
    # Short waits, so that the stuck cluster is found and its lost launch handed out again soon.
    product = Product(
        tmp_path,
        embedded=True,
        PAPERCLIP_CLUSTER_STUCK_AFTER_SEC="15",
        PAPERCLIP_DISPATCH_LEASE_SEC="10",
        PAPERCLIP_RESUME_QUEUED_AFTER_SEC="5",
    )
    run_ids: list[str] = []
    try:
        product.start()
        cluster = product.child("django-q2 cluster")
        sentinel = cluster.children()[0]
        # Idle, one of the workers waits for a task holding the task queue's read lock: killed
        # with it, the lock stays taken, and the workers django-q2 starts instead wait forever.
        for proc in sentinel.children():
            proc.kill()
        run_ids = product.wake(["echo done"])

        wait_until(
            lambda: (
                "django-q2 cluster stuck" in product.said()
                and "django-q2 cluster is back" in product.said()
            ),
            timeout=180,
            interval=0.2,
            message="the stuck cluster is killed and started again",
        )
        ended = wait_until(
            lambda: _ended(product, run_ids),
            timeout=120,
            interval=0.2,
            message="the run is launched and ends",
        )
        said = product.said()
    finally:
        product.close()
        terminate_runs(run_ids)

    assert [(run["status"], run["stdout"]) for run in ended] == [("succeeded", "done\n")]
    assert f"django-q2 cluster (pid {cluster.pid}) exited with status 1" in said


@pytest.mark.timeout(600)
def test_kill_9_of_the_launcher_leaves_only_runs_and_the_next_start_adopts_them(
    embedded_product,
):
    product = embedded_product
    product.start()
    run_ids = product.wake([WORK_THEN_DONE] * 2)
    running = wait_until(
        lambda: _in_flight(product, run_ids), timeout=90, interval=0.2, message="both runs execute"
    )
    home = product.env["PAPERCLIP_HOME"]
    assert len(_product_processes_of(home)) > 8

    product.kill_launcher()

    wait_until(
        lambda: not _product_processes_of(home),
        timeout=30,
        interval=0.2,
        message="no product process is left",
    )
    assert all(is_running(run["pid"]) and is_running(run["shim"]) for run in running)
    product.start()
    ended = wait_until(
        lambda: _ended(product, run_ids), timeout=120, interval=0.2, message="both runs end"
    )
    assert _no_work_lost(ended), ended
    assert {run["owner"] for run in ended} == {product.child("run supervisor").pid}


@pytest.mark.timeout(300)
def test_a_child_that_keeps_failing_stops_the_product_saying_why(product, tmp_path):
    product.start()
    # A second installation on the same database and host: its run supervisor is refused.
    second = Product(tmp_path / "second")
    (tmp_path / "second").mkdir()

    refused = _start_again(second)

    assert refused.returncode == 1
    said = refused.stdout + refused.stderr
    assert said.count("another run supervisor is running on") == 6
    assert "paperclip: run supervisor keeps failing (5 restarts in a row); stopping" in said
    assert "paperclip: ready" not in said
    assert not _product_processes_of(second.env["PAPERCLIP_HOME"])
    assert product.health() == 200


# Ordered stop


@pytest.mark.timeout(300)
def test_ctrl_c_stops_web_cluster_supervisor_then_the_database_and_leaves_runs_running(
    embedded_product,
):
    product = embedded_product
    product.start()
    run_ids = product.wake(["sleep 120"] * 2)
    running = wait_until(
        lambda: _in_flight(product, run_ids), timeout=90, interval=0.2, message="both runs execute"
    )

    said = product.ctrl_c()

    assert product.launcher.returncode == 0
    stopped = re.findall(r"^paperclip: (.+) stopped \(pid", said, re.MULTILINE)
    assert stopped == ["web server", "django-q2 cluster", "run supervisor", "embedded PostgreSQL"]
    assert "paperclip: stopped; 2 agent run(s) keep running" in said
    assert "Traceback" not in said
    assert not _product_processes_of(product.env["PAPERCLIP_HOME"])
    assert all(is_running(run["pid"]) and is_running(run["shim"]) for run in running)


@pytest.mark.timeout(300)
def test_second_ctrl_c_cancels_the_runs_in_flight_before_the_product_stops(product):
    product.start()
    woken = _wake(2, "sleep 300")
    supervisor = product.child("run supervisor").pid
    runs = wait_until(
        lambda: _watched_by(supervisor, woken),
        timeout=60,
        interval=0.2,
        message="both runs execute",
    )

    product.launcher.send_signal(signal.SIGINT)
    wait_until(
        lambda: "Ctrl-C again within 5 s" in product.said(),
        timeout=30,
        interval=0.2,
        message="the launcher offers it",
    )
    product.launcher.send_signal(signal.SIGINT)
    product.launcher.wait(timeout=120)

    assert product.launcher.returncode == 0
    assert "paperclip: stopped; cancelled 2 agent run(s)" in product.said()
    for run in runs:
        run.refresh_from_db()
        assert (run.status, run.error) == ("cancelled", CANCELLED_AT_STOP)
        assert not is_running(run.process_pid) and not is_running(run.shim_pid)


@pytest.mark.timeout(300)
def test_start_with_stop_runs_cancels_them_at_the_first_ctrl_c(product):
    product.start("--stop-runs")
    woken = _wake(2, "sleep 300")
    supervisor = product.child("run supervisor").pid
    runs = wait_until(
        lambda: _watched_by(supervisor, woken),
        timeout=60,
        interval=0.2,
        message="both runs execute",
    )

    product.ctrl_c()

    assert product.launcher.returncode == 0
    assert "paperclip: stopped; cancelled 2 agent run(s)" in product.said()
    for run in runs:
        run.refresh_from_db()
        assert run.status == "cancelled"
        assert not is_running(run.process_pid)
