"""Real processes for recovery tests: spawned for a run with its marker, cleaned up after."""

from __future__ import annotations

import contextlib
import sys

import psutil

from heartbeat.models import HeartbeatRun
from tests.spawning import SpawnedProcess, spawn

# Generous: these tests share two cores with other suites, and Python takes a while to start.
WAIT_SECONDS = 20.0
SLEEPER = "import time; time.sleep(300)"


def is_gone(pid: int) -> bool:
    """Gone or a zombie: PID 1 does not reap orphans here, so a dead orphan stays a zombie."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def is_running(pid: int) -> bool:
    return not is_gone(pid)


class RunProcesses:
    """Spawns processes for runs and SIGKILLs whatever is left at teardown."""

    def __init__(self) -> None:
        self.spawned: list[SpawnedProcess] = []
        self.strays: list[int] = []

    def start(
        self, run: HeartbeatRun, code: str = SLEEPER, *, marker: str | None = None
    ) -> SpawnedProcess:
        """Spawn `python -c code` with the run's marker and record its identity on the run."""
        spawned = spawn(
            argv=[sys.executable, "-c", code],
            env={"PATH": "/usr/bin:/bin"},
            marker=marker or str(run.id),
        )
        self.spawned.append(spawned)
        identity = spawned.identity
        HeartbeatRun.objects.filter(pk=run.pk).update(
            process_pid=identity.pid,
            process_group_id=identity.pgid,
            process_started_at=identity.started_at,
            process_host=identity.host,
            process_boot_id=identity.boot_id,
        )
        run.refresh_from_db()
        return spawned

    def read_pid(self, spawned: SpawnedProcess) -> int:
        line = spawned.stdout.readline()
        assert line, f"child exited early: {spawned.stderr.read().decode()}"
        pid = int(line)
        self.strays.append(pid)
        return pid

    def cleanup(self) -> None:
        for pid in self.strays:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        for spawned in self.spawned:
            with contextlib.suppress(ProcessLookupError):
                spawned.popen.kill()
            spawned.wait(5)
