"""The heartbeat's django-q2 schedules, and the recovery that runs when a cluster starts.

django-q2's scheduler wakes about every 30 s and its finest schedule type is one minute, so a
30 s sweep is two one-minute schedules half a minute apart. Catch-up is off in the settings
(no replay of missed slots after downtime), and a sweep task whose slot is long past returns
at once: while every worker is busy with long agent runs, slots queue up behind them, and
running each of them later would only delay the runs that waited too.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from heartbeat import process_control
from heartbeat.conf import HeartbeatConf, heartbeat_conf
from heartbeat.services import (
    reap_orphaned_runs,
    reconcile_stranded_assigned_issues,
    resume_queued_runs,
)
from heartbeat.services.sweeps import SweepLock, sweep_lock_scope, sweep_single_flight

logger = logging.getLogger(__name__)

REAP_TASK = "heartbeat.tasks.reap_orphans_task"
RECONCILE_TASK = "heartbeat.tasks.reconcile_stranded_task"
RESUME_TASK = "heartbeat.tasks.resume_queued_runs"
TIMER_TASK = "heartbeat.tasks.tick_timer_heartbeats"
BUDGET_TASK = "heartbeat.tasks.budget_month_rollover"
# Passed by django-q2 to the sweep tasks: the slot a task was created for.
SCHEDULED_FOR_KWARG = "scheduled_for"
# A sweep task older than this many intervals is a backlog leftover; the next slot does it.
_MISSED_AFTER_INTERVALS = 2


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    func: str
    minutes: int
    offset_sec: int
    # Only our own sweep tasks accept the slot kwarg; the engine's tasks take no arguments.
    passes_slot: bool


def schedule_specs(conf: HeartbeatConf) -> list[ScheduleSpec]:
    """The schedules for the configured sweep interval (30 s by default)."""
    interval = conf.sweep_interval_sec
    if interval < 60:
        minutes, offsets = 1, (0, 30)
    else:
        minutes, offsets = max(1, math.ceil(interval / 60)), (0,)
    specs = []
    for func, passes_slot in (
        (REAP_TASK, True),
        (RESUME_TASK, False),
        (RECONCILE_TASK, True),
        (TIMER_TASK, False),
    ):
        base = "heartbeat." + func.rsplit(".", 1)[1].removesuffix("_task")
        for offset in offsets:
            name = base if offset == 0 else f"{base} (+{offset}s)"
            specs.append(ScheduleSpec(name, func, minutes, offset, passes_slot))
    # A new month resumes agents and companies paused for their budget: once a minute is soon
    # enough, whatever the sweep interval.
    specs.append(ScheduleSpec("heartbeat.budget_month_rollover", BUDGET_TASK, 1, 0, False))
    return specs


def ensure_schedules(*, now: datetime | None = None) -> list[str]:
    """Create or update the heartbeat's schedules (unique names); returns the names created.

    Safe to call from every worker of every cluster at once: a schedule that exists keeps its
    next run, so a restart neither fires every sweep at once nor delays them.
    """
    from django_q.models import Schedule

    now = now or timezone.now()
    created = []
    for spec in schedule_specs(heartbeat_conf()):
        _schedule, was_created = Schedule.objects.update_or_create(
            name=spec.name,
            defaults={
                "func": spec.func,
                "schedule_type": Schedule.MINUTES,
                "minutes": spec.minutes,
                "repeats": -1,
                "cluster": None,
                "intended_date_kwarg": SCHEDULED_FOR_KWARG if spec.passes_slot else None,
            },
            create_defaults={
                "func": spec.func,
                "schedule_type": Schedule.MINUTES,
                "minutes": spec.minutes,
                "repeats": -1,
                "intended_date_kwarg": SCHEDULED_FOR_KWARG if spec.passes_slot else None,
                "next_run": now + timedelta(seconds=spec.offset_sec),
            },
        )
        if was_created:
            created.append(spec.name)
    return created


def schedule_slot_missed(scheduled_for: str | None, *, now: datetime | None = None) -> bool:
    """True when a scheduled sweep task runs so late that a later slot supersedes it."""
    if not scheduled_for:
        return False
    slot = parse_datetime(scheduled_for)
    if slot is None:
        return False
    late = (now or timezone.now()) - slot
    return late > timedelta(seconds=heartbeat_conf().sweep_interval_sec * _MISSED_AFTER_INTERVALS)


def cluster_startup() -> None:
    """Start-up recovery of a cluster: schedules, reap with no stale threshold, resume, reconcile.

    Runs when a worker starts (a new cluster, or a worker replacing one that died, whose runs
    are then orphaned): single flight per host, and every step isolated from the others.
    """
    with sweep_single_flight(
        SweepLock.STARTUP, scope=sweep_lock_scope(process_control.current_host())
    ) as acquired:
        if not acquired:
            return
        for step in (
            ensure_schedules,
            lambda: reap_orphaned_runs(stale_threshold_sec=0),
            resume_queued_runs,
            reconcile_stranded_assigned_issues,
        ):
            try:
                step()
            except Exception:
                logger.exception("start-up heartbeat recovery step failed")


def on_worker_spawn(sender, **kwargs) -> None:
    """django-q2 post_spawn receiver: a worker must start even if recovery fails."""
    try:
        cluster_startup()
    except Exception:
        logger.exception("start-up heartbeat recovery failed")
