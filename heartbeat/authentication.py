"""Agents' credentials for the API: an agent API key, or the run credential a run's process gets
as PAPERCLIP_API_KEY.

paperclip's bearer authentication hands every secret that is not a board token to
`agent_credential_authenticate` (installed in HeartbeatConfig.ready): the agent, key and run
tables are this app's, and paperclip imports no app above it. Both credentials authenticate
every request of the heartbeat protocol, so each is one fixed statement through a plain cursor
(compiling ORM queries and building the agent from its row cost more than the query itself) and
the agent comes from a cache keyed by its row version (paperclip.authentication.RowCache).
"""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework import exceptions

from heartbeat.models import ACTIVE_RUN_STATUSES, Agent, AgentApiKey, AgentStatus, HeartbeatRun
from heartbeat.services.agents import agent_key_touch
from paperclip.authentication import (
    RUN_ID_HEADER,
    Actor,
    AgentPrincipal,
    RowCache,
    credential_row,
    refuse_guess,
    refuse_if_locked,
    refuse_known,
)
from paperclip.credentials import (
    RUN_CREDENTIAL_PREFIX,
    RunCredential,
    run_credential_parse,
    secret_hash,
)
from paperclip.throttle import LOCKED_FOR_SQL, locked_for_params

# The statuses the reference refuses agent credentials for (section 7, actorMiddleware).
AGENT_STATUSES_WITHOUT_ACCESS = (AgentStatus.TERMINATED.value, AgentStatus.PENDING_APPROVAL.value)
_ACTIVE_RUN_STATUS_VALUES = [status.value for status in ACTIVE_RUN_STATUSES]

_agent_rows = RowCache(Agent)

_AGENT_BY_KEY_SQL = (
    f"SELECT key.id, key.last_used_at, agent.id, agent.xmin::text, {LOCKED_FOR_SQL} "
    f'FROM "{AgentApiKey._meta.db_table}" AS key '
    f'JOIN "{Agent._meta.db_table}" AS agent ON agent.id = key.agent_id '
    f"WHERE key.key_hash = %s AND key.revoked_at IS NULL"
)
_AGENT_BY_ACTIVE_RUN_SQL = (
    f"SELECT agent.id, agent.xmin::text, run.id, {LOCKED_FOR_SQL} "
    f'FROM "{HeartbeatRun._meta.db_table}" AS run '
    f'JOIN "{Agent._meta.db_table}" AS agent ON agent.id = run.agent_id '
    f"WHERE run.id = %s AND run.agent_id = %s AND run.company_id = %s "
    f"AND run.status IN ({', '.join(['%s'] * len(ACTIVE_RUN_STATUSES))})"
)


def agent_credential_authenticate(request, subject: str, secret: str) -> tuple[Any, Actor]:
    """(AgentPrincipal, Actor) for a run credential or an agent API key; refuses (401, or 429
    for a locked client `subject`) anything else."""
    if secret.startswith(RUN_CREDENTIAL_PREFIX):
        return _run_credential(request, subject, secret)
    return _agent_key(request, subject, secret)


def _run_credential(request, subject: str, secret: str) -> tuple[Any, Actor]:
    credential = run_credential_parse(secret)
    if credential is None:
        refuse_guess(subject, "Invalid run credential")
    found = _agent_by_active_run(credential, subject)
    if found is None:
        refuse_known(subject, "Run credential expired: its run is not active")
    agent_id, agent_version, run_id, locked_for = found
    refuse_if_locked(locked_for)
    agent = _agent_rows.get(agent_id, agent_version)
    if agent is None:
        refuse_known(subject, "Run credential expired: its agent is gone")
    return _agent_actor(request, agent, "run_credential", run_id=run_id)


def _agent_key(request, subject: str, secret: str) -> tuple[Any, Actor]:
    digest = secret_hash(secret)
    found = credential_row(_AGENT_BY_KEY_SQL, [*locked_for_params(subject), digest])
    if found is None:
        if AgentApiKey.objects.filter(key_hash=digest).exists():
            refuse_known(subject, "API key revoked")
        refuse_guess(subject, "Invalid API key")
    key_id, key_last_used_at, agent_id, agent_version, locked_for = found
    refuse_if_locked(locked_for)
    agent = _agent_rows.get(agent_id, agent_version)
    if agent is None:
        refuse_known(subject, "API key revoked: its agent is gone")
    agent_key_touch(key_id=key_id, last_used_at=key_last_used_at)
    return _agent_actor(request, agent, "agent_key", key_id=key_id)


def _agent_actor(request, agent: Agent, source: str, key_id=None, run_id=None):
    if agent.status in AGENT_STATUSES_WITHOUT_ACCESS:
        raise exceptions.AuthenticationFailed(f"Agent is {agent.status}; its credentials are void")
    actor = Actor(
        kind="agent",
        source=source,
        agent=agent,
        key_id=key_id,
        run_id=_linked_run_id(request, agent, run_id),
    )
    return AgentPrincipal(agent), actor


def _linked_run_id(request, agent: Agent, credential_run_id: uuid.UUID | None) -> uuid.UUID | None:
    """The run a request is linked to: X-Paperclip-Run-Id, else the credential's run.

    The reference trusts any run id in the header (its weakness 9.15), so a write could count as
    activity of another agent's run; here the run must belong to the calling agent.
    """
    raw = request.META.get(RUN_ID_HEADER)
    if not raw:
        return credential_run_id
    run_id = _parse_run_id(raw)
    if run_id == credential_run_id:
        return run_id
    if not HeartbeatRun.objects.filter(id=run_id, agent_id=agent.id).exists():
        raise exceptions.PermissionDenied("X-Paperclip-Run-Id does not name a run of this agent")
    return run_id


def _parse_run_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise exceptions.ValidationError(
            {"X-Paperclip-Run-Id": ["Must be a heartbeat run id (a UUID)."]}
        ) from None


def _agent_by_active_run(credential: RunCredential, subject: str) -> tuple | None:
    """(agent id, agent's row version, run id, seconds the client stays locked) while the
    credential's run is active, or None."""
    ids = [uuid.UUID(credential.run_id), uuid.UUID(credential.agent_id)]
    params = [*locked_for_params(subject), *ids, uuid.UUID(credential.company_id)]
    return credential_row(_AGENT_BY_ACTIVE_RUN_SQL, [*params, *_ACTIVE_RUN_STATUS_VALUES])
