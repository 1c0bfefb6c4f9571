"""What heartbeat does when other apps report events (they never import heartbeat)."""

from __future__ import annotations

import logging

from django.dispatch import receiver

from heartbeat.services import (
    AgentNotFound,
    AgentNotInvokable,
    company_start_parked_runs,
    report_run_activity,
    wake_agent,
)
from issues.signals import issue_wake_requested
from paperclip.signals import agent_run_write, company_resumed

logger = logging.getLogger(__name__)


@receiver(issue_wake_requested, dispatch_uid="heartbeat.wake_for_issue")
def wake_for_issue(
    sender,
    *,
    agent_id,
    source,
    reason,
    payload,
    context,
    requested_by_actor_type,
    requested_by_actor_id,
    **kwargs,
):
    """An issue change asks for an agent (docs/wake-rules.md): wake it (reference 2.2)."""
    try:
        wake_agent(
            agent_id=agent_id,
            source=source,
            trigger_detail="system",
            reason=reason,
            payload=payload,
            context=context,
            requested_by_actor_type=requested_by_actor_type,
            requested_by_actor_id=requested_by_actor_id,
        )
    except (AgentNotFound, AgentNotInvokable) as exc:
        # A paused or removed agent is not an error of the issue change; the reconciler picks
        # an assigned issue up if its agent becomes invokable again.
        logger.info("issue %s: agent %s not woken: %s", payload.get("issueId"), agent_id, exc)


@receiver(agent_run_write, dispatch_uid="heartbeat.run_write_is_activity")
def run_write_is_activity(sender, *, run_id, **kwargs):
    """An agent wrote through the API on behalf of its run: the run is alive (reference 4.1)."""
    report_run_activity(run_id)


@receiver(company_resumed, dispatch_uid="heartbeat.company_resumed_starts_queued_runs")
def company_resumed_starts_queued_runs(sender, *, company_id, **kwargs):
    """A paused company is active again: the runs queued for its agents may start now."""
    company_start_parked_runs(company_id=company_id)
