"""A telemetry client for tests: remembers what was tracked (the setting names this class)."""

from __future__ import annotations

import threading


class RecordingTelemetryClient:
    events: list[tuple[str, dict]] = []
    _lock = threading.Lock()

    def track(self, event: str, properties: dict) -> None:
        with self._lock:
            RecordingTelemetryClient.events.append((event, dict(properties)))
