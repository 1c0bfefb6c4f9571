"""Real-process tests for heartbeat.process_control: every assertion reads the process table."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import psutil
import pytest

from heartbeat.process_control import (
    Liveness,
    ProcessIdentity,
    current_boot_id,
    current_host,
    find_marked,
    group_alive,
    identity_of,
    probe,
    terminate_tree,
)
from tests.polling import wait_until
from tests.spawning import SpawnedProcess, spawn

pytestmark = [pytest.mark.process, pytest.mark.timeout(30)]

# Generous: these tests share two cores with other suites, and Python takes a while to start.
WAIT_SECONDS = 15.0

SLEEPER = "import time; time.sleep(300)"

Spawner = Callable[..., SpawnedProcess]


def _is_gone(proc: psutil.Process) -> bool:
    # An orphan that died stays a zombie here (PID 1 does not reap), so zombies count as gone.
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _is_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _read_pid(spawned: SpawnedProcess) -> int:
    line = spawned.stdout.readline()
    assert line, f"child exited early: {spawned.stderr.read().decode()}"
    return int(line)


@pytest.fixture
def marker() -> str:
    return f"test-{uuid.uuid4()}"


@pytest.fixture
def strays() -> Iterator[list[psutil.Process]]:
    """Grandchildren a test saw; SIGKILLed at teardown whatever the test did."""
    procs: list[psutil.Process] = []
    try:
        yield procs
    finally:
        for proc in procs:
            # psutil checks pid and start time before signalling, so a recycled pid is spared.
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


@pytest.fixture
def start(marker: str) -> Iterator[Spawner]:
    """Spawn `python -c code` with the test's marker; children are killed and reaped at teardown."""
    spawned: list[SpawnedProcess] = []

    def _start(code: str, *, stdin_data: bytes | None = None) -> SpawnedProcess:
        child = spawn(
            argv=[sys.executable, "-c", code],
            env=dict(os.environ),
            marker=marker,
            stdin_data=stdin_data,
        )
        spawned.append(child)
        return child

    try:
        yield _start
    finally:
        for child in spawned:
            # Popen ignores kill() once it has reaped the child, so this never hits a recycled pid.
            child.popen.kill()
            child.wait()
            child.stdout.close()
            child.stderr.close()


def test_probe_of_own_live_child_is_alive(start: Spawner) -> None:
    child = start(SLEEPER)

    liveness = probe(child.identity)

    assert liveness is Liveness.ALIVE
    assert liveness.is_alive and not liveness.is_dead
    assert identity_of(child.identity.pid) == child.identity


def test_probe_after_exit_and_reap_is_dead(start: Spawner) -> None:
    child = start("pass")
    assert child.wait(WAIT_SECONDS) == 0
    assert not psutil.pid_exists(child.identity.pid)

    liveness = probe(child.identity)

    assert liveness is Liveness.DEAD
    assert liveness.is_dead and not liveness.is_alive
    assert identity_of(child.identity.pid) is None


def test_exited_unreaped_child_is_zombie_and_dead(start: Spawner) -> None:
    child = start("pass")
    proc = psutil.Process(child.identity.pid)
    wait_until(
        lambda: proc.status() == psutil.STATUS_ZOMBIE,
        timeout=WAIT_SECONDS,
        message="the child is a zombie",
    )

    liveness = probe(child.identity)

    assert liveness is Liveness.ZOMBIE
    assert liveness.is_dead and not liveness.is_alive
    assert identity_of(child.identity.pid) is None


def test_live_pid_with_other_start_time_is_reused_and_never_signalled(
    start: Spawner,
) -> None:
    child = start(SLEEPER)
    assert child.identity.started_at is not None
    recycled = replace(child.identity, started_at=child.identity.started_at - timedelta(hours=1))

    liveness = probe(recycled)
    report = terminate_tree(recycled, grace=0.5)

    assert liveness is Liveness.REUSED and liveness.is_dead
    assert report.terminated == report.killed == report.survivors == ()
    assert not report.group_terminated
    assert _is_running(child.identity.pid)
    assert probe(child.identity) is Liveness.ALIVE


def test_identity_of_other_host_is_not_judged_and_never_signalled(
    start: Spawner, marker: str
) -> None:
    child = start(SLEEPER)
    elsewhere = replace(child.identity, host=f"not-{current_host()}")

    liveness = probe(elsewhere)
    report = terminate_tree(elsewhere, marker=marker, grace=0.5)

    assert liveness is Liveness.OTHER_HOST
    assert not liveness.is_alive and not liveness.is_dead
    assert not report.group_terminated
    assert _is_running(child.identity.pid)


def test_host_name_can_be_overridden_to_simulate_another_host(
    start: Spawner, monkeypatch: pytest.MonkeyPatch
) -> None:
    child = start(SLEEPER)

    monkeypatch.setenv("PAPERCLIP_HOST_NAME", "host-b")

    assert current_host() == "host-b"
    assert probe(child.identity) is Liveness.OTHER_HOST


def test_identity_from_previous_boot_is_rebooted_and_never_signalled(
    start: Spawner, marker: str
) -> None:
    child = start(SLEEPER)
    before_reboot = replace(child.identity, boot_id=f"not-{current_boot_id()}")

    liveness = probe(before_reboot)
    report = terminate_tree(before_reboot, marker=marker, grace=0.5)

    assert liveness is Liveness.REBOOTED and liveness.is_dead
    assert not report.group_terminated
    assert _is_running(child.identity.pid)


def test_find_marked_finds_only_processes_with_that_marker(start: Spawner, marker: str) -> None:
    child = start(SLEEPER)
    # The environment is readable once the child has exec'd; before that it is the parent's.
    wait_until(
        lambda: child.identity.pid in {found.pid for found in find_marked(marker)},
        timeout=WAIT_SECONDS,
        message="the child is found by its marker",
    )

    assert find_marked(f"other-{marker}") == []


def test_terminate_tree_kills_child_and_grandchild_in_group(
    start: Spawner, strays: list[psutil.Process]
) -> None:
    child = start(
        "import subprocess, sys, time\n"
        f"grandchild = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}])\n"
        "print(grandchild.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    grandchild = psutil.Process(_read_pid(child))
    strays.append(grandchild)
    root = psutil.Process(child.identity.pid)
    assert os.getpgid(grandchild.pid) == child.identity.pgid

    report = terminate_tree(child.identity, grace=WAIT_SECONDS)

    assert set(report.terminated) == {root.pid, grandchild.pid}
    assert report.killed == report.survivors == ()
    assert _is_gone(root) and _is_gone(grandchild)
    assert child.identity.pgid is not None and not group_alive(child.identity.pgid)
    assert child.wait(WAIT_SECONDS) == -15


def test_terminate_tree_kills_setsid_escapee_found_by_marker(
    start: Spawner, marker: str, strays: list[psutil.Process]
) -> None:
    # The root starts a grandchild in a new session and exits: neither the group nor the
    # process tree leads to the escapee any more, only the marker in its environment.
    child = start(
        "import subprocess, sys\n"
        f"escapee = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}], start_new_session=True)\n"
        "print(escapee.pid, flush=True)\n"
    )
    escapee = psutil.Process(_read_pid(child))
    strays.append(escapee)
    assert child.wait(WAIT_SECONDS) == 0
    assert os.getpgid(escapee.pid) != child.identity.pgid
    assert escapee.ppid() != child.identity.pid

    report = terminate_tree(child.identity, marker=marker, grace=WAIT_SECONDS)

    assert report.terminated == (escapee.pid,)
    assert report.survivors == ()
    wait_until(lambda: _is_gone(escapee), timeout=WAIT_SECONDS, message="the escapee is gone")


def test_process_ignoring_sigterm_is_killed_after_grace(start: Spawner) -> None:
    child = start(
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    assert child.stdout.readline() == b"ready\n"
    grace = 0.5

    began = time.monotonic()
    report = terminate_tree(child.identity, grace=grace)

    assert time.monotonic() - began >= grace
    assert report.terminated == report.killed == (child.identity.pid,)
    assert report.survivors == ()
    assert report.group_terminated
    returncode = child.wait(WAIT_SECONDS)
    assert returncode == -signal.SIGKILL


def test_group_of_only_zombies_is_not_alive(start: Spawner) -> None:
    child = start("pass")
    pgid = child.identity.pgid
    assert pgid is not None
    leader = psutil.Process(child.identity.pid)
    wait_until(
        lambda: leader.status() == psutil.STATUS_ZOMBIE,
        timeout=WAIT_SECONDS,
        message="the leader is a zombie",
    )

    # The kernel still accepts signals for the zombie-only group: that is why group_alive scans.
    os.killpg(pgid, 0)
    assert not group_alive(pgid)


def test_group_with_a_live_member_is_alive(start: Spawner) -> None:
    child = start(SLEEPER)

    assert child.identity.pgid is not None and group_alive(child.identity.pgid)


def test_identity_rejects_pids_that_mean_a_group_to_kill() -> None:
    with pytest.raises(ValueError):
        ProcessIdentity(pid=0, pgid=None, started_at=None, host="h", boot_id="b")
