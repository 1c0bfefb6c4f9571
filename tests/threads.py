"""Racing database work from several threads at once, each with its own connection."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


def race(targets: list[Callable[[], object]]) -> list[object]:
    """Run each target in its own thread with its own connection, released together; returns
    each target's result, or the exception it raised."""
    barrier = threading.Barrier(len(targets))
    results: list[object] = [None] * len(targets)

    def worker(index: int) -> None:
        try:
            barrier.wait()
            results[index] = targets[index]()
        except BaseException as exc:  # surfaced by the test
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
