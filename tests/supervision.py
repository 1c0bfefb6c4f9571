"""A real run supervisor driven from the test: the tests' runs execute under real shims, and
the supervisor that watches them runs in the test process, on the test database."""

from __future__ import annotations

import time
import uuid

import pytest

from heartbeat.models import TERMINAL_RUN_STATUSES, HeartbeatRun
from heartbeat.supervisor import Supervisor

# Generous: the suite shares two cores with other suites, and Python takes a while to start.
SETTLE_SECONDS = 30.0


class SupervisorDriver:
    """Ticks a Supervisor until the runs a test cares about are settled."""

    def __init__(self) -> None:
        self.supervisor = Supervisor()
        self.supervisor.start()

    def tick(self, wait: float = 0.05) -> None:
        self.supervisor.wait(wait)
        self.supervisor.tick()

    def settle(self, *run_ids: uuid.UUID | str, seconds: float = SETTLE_SECONDS) -> None:
        """Tick until every run is terminal and its shim is done (output recorded)."""
        ids = {uuid.UUID(str(run_id)) for run_id in run_ids}
        deadline = time.monotonic() + seconds
        while True:
            self.tick()
            ended = HeartbeatRun.objects.filter(id__in=ids, status__in=TERMINAL_RUN_STATUSES)
            busy = ids & (set(self.supervisor.watched) | set(self.supervisor.stopping)) | set(
                self.supervisor.exited
            )
            if ended.count() == len(ids) and not busy:
                return
            if time.monotonic() >= deadline:
                pytest.fail(f"runs {sorted(map(str, ids))} did not settle in {seconds:g}s")

    def settle_until(self, condition, *, seconds: float = SETTLE_SECONDS) -> None:
        """Tick until condition() holds."""
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() >= deadline:
                pytest.fail(f"condition not reached in {seconds:g}s")
            self.tick()

    def close(self) -> None:
        self.supervisor.close()
