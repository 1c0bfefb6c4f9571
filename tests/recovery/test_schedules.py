"""Schedules of the sweeps and the start-up recovery of a cluster."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule
from django_q.signals import post_spawn

from heartbeat.models import Agent, HeartbeatRun, SweepRecord
from heartbeat.schedules import (
    BUDGET_TASK,
    REAP_TASK,
    RECONCILE_TASK,
    RESUME_TASK,
    TIMER_TASK,
    ensure_schedules,
    schedule_slot_missed,
)
from heartbeat.services import sweeps_latest
from heartbeat.tasks import reap_orphans_task, reconcile_stranded_task
from tests.factories import make_agent
from tests.recovery.builders import DEAD_PID, make_running_run


@pytest.mark.django_db
def test_ensure_schedules_creates_two_staggered_slots_per_sweep_and_one_budget_rollover():
    now = timezone.now()

    created = ensure_schedules(now=now)

    assert len(created) == 9
    schedules = {s.name: s for s in Schedule.objects.all()}
    assert {s.func for s in schedules.values()} == {
        REAP_TASK,
        RECONCILE_TASK,
        RESUME_TASK,
        TIMER_TASK,
        BUDGET_TASK,
    }
    assert schedules["heartbeat.budget_month_rollover"].minutes == 1
    reap, reap_later = (
        schedules["heartbeat.reap_orphans"],
        schedules["heartbeat.reap_orphans (+30s)"],
    )
    assert (reap.schedule_type, reap.minutes, reap.repeats) == (Schedule.MINUTES, 1, -1)
    assert reap_later.next_run - reap.next_run == timedelta(seconds=30)
    assert reap.intended_date_kwarg == "scheduled_for"
    assert schedules["heartbeat.resume_queued_runs"].intended_date_kwarg is None


@pytest.mark.django_db
def test_ensure_schedules_is_idempotent_and_keeps_next_runs():
    ensure_schedules()
    next_runs = dict(Schedule.objects.values_list("name", "next_run"))

    assert ensure_schedules(now=timezone.now() + timedelta(hours=1)) == []
    assert dict(Schedule.objects.values_list("name", "next_run")) == next_runs


def test_long_missed_slot_is_skipped_and_a_recent_one_runs():
    now = timezone.now()
    assert schedule_slot_missed((now - timedelta(minutes=5)).isoformat(), now=now)
    assert not schedule_slot_missed((now - timedelta(seconds=20)).isoformat(), now=now)
    assert not schedule_slot_missed(None, now=now)


@pytest.mark.django_db
def test_reap_task_uses_the_periodic_stale_threshold():
    agent = make_agent(status=Agent.Status.PAUSED)
    fresh = make_running_run(agent, pid=DEAD_PID)
    stale = make_running_run(agent, pid=DEAD_PID, updated_ago=timedelta(minutes=6))

    result = reap_orphans_task(scheduled_for=timezone.now().isoformat())

    assert result["run_ids"] == [str(stale.id)]
    assert HeartbeatRun.objects.get(pk=fresh.pk).status == "running"


@pytest.mark.django_db
def test_backlogged_sweep_tasks_do_nothing():
    agent = make_agent(status=Agent.Status.PAUSED)
    run = make_running_run(agent, pid=DEAD_PID, updated_ago=timedelta(minutes=6))
    long_ago = (timezone.now() - timedelta(minutes=10)).isoformat()

    assert reap_orphans_task(scheduled_for=long_ago)["sweep_skipped"] is True
    assert reconcile_stranded_task(scheduled_for=long_ago)["sweep_skipped"] is True
    assert HeartbeatRun.objects.get(pk=run.pk).status == "running"
    assert not SweepRecord.objects.exists()


@pytest.mark.django_db
def test_worker_start_runs_the_start_up_recovery():
    agent = make_agent(status=Agent.Status.PAUSED)
    # Updated just now: only the start-up reap (no stale threshold) takes it.
    run = make_running_run(agent, pid=DEAD_PID, owner="dead")

    post_spawn.send(sender="django_q", proc_name="Process-test")

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "process_lost")
    assert Schedule.objects.filter(name__startswith="heartbeat.").count() == 9
    latest = sweeps_latest()
    assert latest["reap"].record.result["run_ids"] == [str(run.id)]
    assert latest["reconcile"].record is not None


@pytest.mark.django_db
def test_sweeps_latest_flags_missing_and_old_sweeps_overdue():
    now = timezone.now()
    SweepRecord.objects.create(
        kind="reap",
        host="h",
        started_at=now - timedelta(minutes=10),
        finished_at=now - timedelta(minutes=10),
        duration_ms=3.0,
        result={"reaped": 0},
    )
    SweepRecord.objects.create(
        kind="reap", host="h", started_at=now, finished_at=now, duration_ms=2.0, result={}
    )

    latest = sweeps_latest(now=now)

    assert latest["reap"].overdue is False
    assert latest["reap"].record.duration_ms == 2.0
    assert (latest["reconcile"].record, latest["reconcile"].overdue) == (None, True)
    assert sweeps_latest(now=now + timedelta(minutes=5))["reap"].overdue is True
