from __future__ import annotations

import pytest

from heartbeat.services import lifecycle
from tests.engine.telemetry import RecordingTelemetryClient


@pytest.fixture
def dispatched(monkeypatch) -> list[str]:
    """Run ids handed to django-q2, in order, instead of enqueueing them."""
    seen: list[str] = []
    monkeypatch.setattr(lifecycle, "_run_dispatch", seen.append)
    return seen


@pytest.fixture
def telemetry(settings) -> list[tuple[str, dict]]:
    settings.PAPERCLIP_TELEMETRY_CLIENT = "tests.engine.telemetry.RecordingTelemetryClient"
    RecordingTelemetryClient.events.clear()
    return RecordingTelemetryClient.events
