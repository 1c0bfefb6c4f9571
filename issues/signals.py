"""Signals the issues app sends; the heartbeat app listens (issues never imports heartbeat)."""

from django.dispatch import Signal

# Sent after commit when an issue's agent assignee should be woken (assigned, checked out for it
# by a person, commented on by someone else). Keyword arguments: issue_id, company_id, agent_id,
# source, reason, payload (with issueId), requested_by_actor_type, requested_by_actor_id.
assignee_wake_requested = Signal()
