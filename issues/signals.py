"""Signals the issues app sends; the heartbeat app listens (issues never imports heartbeat)."""

from django.dispatch import Signal

# Sent after commit when an agent should be woken about an issue (see issues/wake_rules.py and
# docs/wake-rules.md). Keyword arguments: issue_id, company_id, agent_id, source, reason,
# payload (with issueId), context (the seed of the run's context snapshot),
# requested_by_actor_type, requested_by_actor_id.
issue_wake_requested = Signal()
