"""django-q2 task entry points: thin wrappers that call a service and return its result.

Dispatched by name (`heartbeat.tasks.execute_run`), and run on a schedule
(`heartbeat.tasks.resume_queued_runs`, `heartbeat.tasks.tick_timer_heartbeats`,
`heartbeat.tasks.budget_month_rollover`).
"""

from __future__ import annotations

from dataclasses import asdict

from heartbeat import services
from heartbeat.conf import heartbeat_conf
from heartbeat.schedules import schedule_slot_missed


def execute_run(run_id: str) -> dict:
    """Execute one run; a run that is no longer queued is left alone (redelivery is harmless)."""
    return asdict(services.run_execute(run_id=run_id))


def resume_queued_runs() -> dict:
    return asdict(services.resume_queued_runs())


def tick_timer_heartbeats() -> dict:
    return asdict(services.tick_timer_heartbeats())


def budget_month_rollover() -> dict:
    return asdict(services.budgets_month_rollover())


def reap_orphans_task(
    stale_threshold_sec: float | None = None, scheduled_for: str | None = None
) -> dict:
    """The periodic reap (stale threshold 5 min by default); a long-missed slot does nothing."""
    if schedule_slot_missed(scheduled_for):
        return services.ReapResult(sweep_skipped=True).as_dict()
    if stale_threshold_sec is None:
        stale_threshold_sec = heartbeat_conf().reap_stale_threshold_sec
    return services.reap_orphaned_runs(stale_threshold_sec=stale_threshold_sec).as_dict()


def reconcile_stranded_task(scheduled_for: str | None = None) -> dict:
    """The periodic reconcile; a long-missed slot does nothing."""
    if schedule_slot_missed(scheduled_for):
        return services.ReconcileResult(sweep_skipped=True).as_dict()
    return services.reconcile_stranded_assigned_issues().as_dict()
