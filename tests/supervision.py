"""A real run supervisor driven from the test: the tests' runs execute under real shims, and
the supervisor that watches them runs in the test process, on the test database."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from heartbeat.models import TERMINAL_RUN_STATUSES, HeartbeatRun
from heartbeat.supervisor import Supervisor
from tests.polling import wait_until

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

        def settled() -> bool:
            self.tick()
            ended = HeartbeatRun.objects.filter(id__in=ids, status__in=TERMINAL_RUN_STATUSES)
            busy = ids & (set(self.supervisor.watched) | set(self.supervisor.stopping)) | set(
                self.supervisor.exited
            )
            return ended.count() == len(ids) and not busy

        # No sleep between polls: each tick waits for the supervisor's own events.
        wait_until(
            settled, timeout=seconds, interval=0, message=f"runs {sorted(map(str, ids))} settle"
        )

    def settle_until(
        self, condition: Callable[[], bool], *, message: str, seconds: float = SETTLE_SECONDS
    ) -> None:
        """Tick until condition() holds; `message` says what that means, for the failure."""

        def ticked_until() -> bool:
            if condition():
                return True
            self.tick()
            return False

        wait_until(ticked_until, timeout=seconds, interval=0, message=message)

    def close(self) -> None:
        self.supervisor.close()
