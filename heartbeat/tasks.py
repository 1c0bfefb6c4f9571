"""django-q2 task entry points: thin wrappers that call a service and return its result.

Dispatched by name (`heartbeat.tasks.execute_run`), and run on a schedule
(`heartbeat.tasks.resume_queued_runs`, `heartbeat.tasks.tick_timer_heartbeats`).
"""

from __future__ import annotations

from dataclasses import asdict

from heartbeat import services


def execute_run(run_id: str) -> dict:
    """Execute one run; a run that is no longer queued is left alone (redelivery is harmless)."""
    return asdict(services.run_execute(run_id=run_id))


def resume_queued_runs() -> dict:
    return asdict(services.resume_queued_runs())


def tick_timer_heartbeats() -> dict:
    return asdict(services.tick_timer_heartbeats())
