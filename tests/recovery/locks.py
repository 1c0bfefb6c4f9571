"""Hold a sweep's advisory lock from another database session, as a concurrent sweep would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections

from heartbeat.services.sweeps import SweepLock, sweep_single_flight


@contextmanager
def sweep_lock_held_elsewhere(lock: SweepLock, *, scope: int = 0) -> Iterator[None]:
    held, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def hold() -> None:
        try:
            with sweep_single_flight(lock, scope=scope) as acquired:
                assert acquired, "the lock was already held"
                held.set()
                release.wait(60)
        except BaseException as exc:
            failure.append(exc)
            held.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    held.wait(30)
    if failure:
        raise failure[0]
    try:
        yield
    finally:
        release.set()
        thread.join(30)
