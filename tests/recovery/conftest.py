from __future__ import annotations

from collections.abc import Iterator

import pytest

from heartbeat.services import lifecycle
from tests.recovery.processes import RunProcesses


@pytest.fixture(autouse=True)
def dispatched(monkeypatch) -> list[str]:
    """Run ids handed to django-q2, in order, instead of enqueueing them (DB-layer tests)."""
    seen: list[str] = []
    monkeypatch.setattr(lifecycle, "_run_dispatch", seen.append)
    return seen


@pytest.fixture
def processes() -> Iterator[RunProcesses]:
    """Real processes for runs, SIGKILLed at teardown."""
    procs = RunProcesses()
    yield procs
    procs.cleanup()
