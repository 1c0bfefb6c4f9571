"""Timer heartbeats (reference 6): agents whose policy is enabled are woken every intervalSec."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from heartbeat.models import Agent, AgentStatus, WakeSource
from heartbeat.services.policy import heartbeat_policy
from heartbeat.services.wakeups import AgentNotFound, AgentNotInvokable, WakeOutcome, wake_agent
from paperclip.models import Company

logger = logging.getLogger(__name__)

TIMER_REASON = "heartbeat_timer"
TIMER_ACTOR_ID = "heartbeat_scheduler"


@dataclass(frozen=True)
class TimerTickResult:
    checked: int
    enqueued: int
    skipped: int


def tick_timer_heartbeats(*, now: datetime | None = None) -> TimerTickResult:
    """Wake every due agent once. A due agent whose timer run is still queued (or running)
    coalesces into it, so timer runs never pile up behind a busy agent."""
    now = now or timezone.now()
    checked = enqueued = skipped = 0
    agents = (
        Agent.objects.exclude(
            status__in=(AgentStatus.PAUSED, AgentStatus.TERMINATED, AgentStatus.PENDING_APPROVAL)
        )
        # A paused company's agents would only add a refused wake per interval.
        .exclude(company__status=Company.Status.PAUSED)
        .filter(runtime_config__heartbeat__enabled=True)
        .only("id", "runtime_config", "last_heartbeat_at", "created_at")
        .order_by("id")
    )
    for agent in agents.iterator(chunk_size=500):
        policy = heartbeat_policy(agent.runtime_config)
        if not policy.enabled or policy.interval_sec <= 0:
            continue
        checked += 1
        since = agent.last_heartbeat_at or agent.created_at
        if (now - since).total_seconds() < policy.interval_sec:
            continue
        try:
            result = wake_agent(
                agent_id=agent.id,
                source=WakeSource.TIMER,
                trigger_detail="system",
                reason=TIMER_REASON,
                requested_by_actor_type="system",
                requested_by_actor_id=TIMER_ACTOR_ID,
                context={
                    "source": "scheduler",
                    "reason": "interval_elapsed",
                    "now": now.isoformat(),
                },
            )
        except (AgentNotFound, AgentNotInvokable):
            # Paused (or its company paused) or deleted between the listing and the wake.
            skipped += 1
            continue
        if result.outcome == WakeOutcome.QUEUED:
            enqueued += 1
        else:
            skipped += 1
    return TimerTickResult(checked=checked, enqueued=enqueued, skipped=skipped)
