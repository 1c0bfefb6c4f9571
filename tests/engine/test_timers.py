"""Timer heartbeats (reference 6): due agents are woken, timer runs never pile up."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from heartbeat.models import Agent, AgentWakeupRequest, HeartbeatRun
from heartbeat.services import tick_timer_heartbeats
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

POLICY = {"heartbeat": {"enabled": True, "intervalSec": 60}}


def _make_due(agent: Agent) -> None:
    Agent.objects.filter(pk=agent.pk).update(
        last_heartbeat_at=timezone.now() - timedelta(seconds=120)
    )


def test_due_agent_is_woken_by_the_timer(dispatched):
    agent = make_agent(runtime_config=POLICY)
    _make_due(agent)
    result = tick_timer_heartbeats()
    assert (result.checked, result.enqueued, result.skipped) == (1, 1, 0)
    run = HeartbeatRun.objects.get(agent=agent)
    assert (run.invocation_source, run.trigger_detail) == ("timer", "system")
    assert run.context_snapshot["source"] == "scheduler"
    wakeup = AgentWakeupRequest.objects.get(agent=agent)
    assert (wakeup.reason, wakeup.requested_by_actor_id) == (
        "heartbeat_timer",
        "heartbeat_scheduler",
    )


def test_agent_not_yet_due_is_only_checked(dispatched):
    agent = make_agent(runtime_config=POLICY)
    Agent.objects.filter(pk=agent.pk).update(last_heartbeat_at=timezone.now())
    assert tick_timer_heartbeats().enqueued == 0
    assert not HeartbeatRun.objects.filter(agent=agent).exists()


def test_disabled_and_paused_agents_are_not_woken(dispatched):
    for agent in (
        make_agent(runtime_config={"heartbeat": {"enabled": False, "intervalSec": 60}}),
        make_agent(runtime_config=POLICY, status="paused"),
        make_agent(runtime_config={"heartbeat": {"enabled": True, "intervalSec": 0}}),
    ):
        _make_due(agent)
    assert tick_timer_heartbeats().checked == 0
    assert not HeartbeatRun.objects.exists()


def test_repeated_ticks_never_pile_up_queued_timer_runs(dispatched):
    agent = make_agent(runtime_config=POLICY)
    _make_due(agent)
    results = [tick_timer_heartbeats() for _ in range(3)]
    assert [r.enqueued for r in results] == [1, 0, 0]
    assert HeartbeatRun.objects.filter(agent=agent, status="queued").count() == 1
    assert AgentWakeupRequest.objects.filter(agent=agent, status="coalesced").count() == 2
