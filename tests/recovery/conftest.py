from __future__ import annotations

import pytest

from heartbeat.services import lifecycle


@pytest.fixture(autouse=True)
def dispatched(monkeypatch) -> list[str]:
    """Run ids handed to django-q2, in order, instead of enqueueing them (DB-layer tests)."""
    seen: list[str] = []
    monkeypatch.setattr(lifecycle, "_run_dispatch", seen.append)
    return seen
