"""Agent state changes made by the board: create, edit, API keys, pause, resume, terminate."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from heartbeat.models import Agent, AgentApiKey, AgentStatus
from paperclip.credentials import secret_generate
from paperclip.services import activity_log_record

AGENT_KEY_PREFIX = "pcak_"
AGENT_EDITABLE_FIELDS = frozenset(
    {
        "name",
        "role",
        "title",
        "icon",
        "capabilities",
        "reports_to_id",
        "adapter_type",
        "adapter_config",
        "runtime_config",
        "budget_monthly_cents",
        "metadata",
    }
)


class AgentError(Exception):
    def __init__(self, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.details = details


class AgentInvalidInput(AgentError):
    """An argument names something that does not exist in the agent's company."""


class AgentStateConflict(AgentError):
    """The agent's status does not allow the change (e.g. resuming a terminated agent)."""


@dataclass(frozen=True)
class AgentKeyCreated:
    key: AgentApiKey
    secret: str


def _check_reports_to(*, company_id, reports_to_id, agent_id=None) -> None:
    if reports_to_id is None:
        return
    if agent_id is not None and str(reports_to_id) == str(agent_id):
        raise AgentInvalidInput(
            "reportsTo: an agent cannot report to itself", {"reportsTo": ["Cannot be itself."]}
        )
    if not Agent.objects.filter(pk=reports_to_id, company_id=company_id).exists():
        raise AgentInvalidInput(
            "reportsTo: no such agent in this company",
            {"reportsTo": ["No such agent in this company."]},
        )


def agent_create(
    *,
    company_id: uuid.UUID | str,
    name: str,
    fields: dict[str, Any] | None = None,
    actor_type: str = "system",
    actor_id: str = "system",
) -> Agent:
    """A new agent, idle and ready to be woken (a board member creating it is the approval)."""
    fields = dict(fields or {})
    unknown = set(fields) - AGENT_EDITABLE_FIELDS
    if unknown:
        raise AgentInvalidInput(f"Unknown agent fields: {sorted(unknown)}")
    _check_reports_to(company_id=company_id, reports_to_id=fields.get("reports_to_id"))
    with transaction.atomic():
        agent = Agent.objects.create(company_id=company_id, name=name, **fields)
        activity_log_record(
            company_id=company_id,
            action="agent.created",
            entity_type="agent",
            entity_id=agent.id,
            actor_type=actor_type,
            actor_id=actor_id,
            agent_id=agent.id,
            details={"name": name, "adapterType": agent.adapter_type},
        )
    return agent


def agent_update(
    *, agent_id: uuid.UUID | str, changes: dict[str, Any], actor_type: str, actor_id: str
) -> Agent:
    unknown = set(changes) - AGENT_EDITABLE_FIELDS
    if unknown:
        raise AgentInvalidInput(f"Unknown agent fields: {sorted(unknown)}")
    with transaction.atomic():
        agent = Agent.objects.select_for_update(no_key=True).get(pk=agent_id)
        if "reports_to_id" in changes:
            _check_reports_to(
                company_id=agent.company_id,
                reports_to_id=changes["reports_to_id"],
                agent_id=agent.id,
            )
        for field, value in changes.items():
            setattr(agent, field, value)
        agent.save()
        activity_log_record(
            company_id=agent.company_id,
            action="agent.updated",
            entity_type="agent",
            entity_id=agent.id,
            actor_type=actor_type,
            actor_id=actor_id,
            agent_id=agent.id,
            details={"changes": sorted(changes)},
        )
    return agent


def agent_key_create(
    *, agent_id: uuid.UUID | str, name: str, actor_type: str, actor_id: str
) -> AgentKeyCreated:
    """A new API key for the agent; the secret is returned once and only its hash is kept."""
    agent = Agent.objects.get(pk=agent_id)
    if agent.status == AgentStatus.TERMINATED:
        raise AgentStateConflict("A terminated agent gets no new keys", {"status": agent.status})
    secret, prefix, digest = secret_generate(AGENT_KEY_PREFIX)
    with transaction.atomic():
        key = AgentApiKey.objects.create(
            company_id=agent.company_id, agent=agent, name=name, key_prefix=prefix, key_hash=digest
        )
        activity_log_record(
            company_id=agent.company_id,
            action="agent.key_created",
            entity_type="agent",
            entity_id=agent.id,
            actor_type=actor_type,
            actor_id=actor_id,
            agent_id=agent.id,
            details={"keyId": str(key.id), "name": name},
        )
    return AgentKeyCreated(key=key, secret=secret)


def agent_key_revoke(
    *, agent_id: uuid.UUID | str, key_id: uuid.UUID | str, actor_type: str, actor_id: str
) -> AgentApiKey:
    """Revoke a key (idempotent: revoking twice keeps the first revocation time)."""
    with transaction.atomic():
        key = AgentApiKey.objects.select_for_update().get(pk=key_id, agent_id=agent_id)
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            activity_log_record(
                company_id=key.company_id,
                action="agent.key_revoked",
                entity_type="agent",
                entity_id=agent_id,
                actor_type=actor_type,
                actor_id=actor_id,
                agent_id=agent_id,
                details={"keyId": str(key.id)},
            )
    return key
