"""Who is calling the API: board users (browser session or personal token) and agents (API key or
the run-scoped credential a run's process gets as PAPERCLIP_API_KEY).

Every authenticator leaves an `Actor` in `request.auth`; views and permissions read only that.
paperclip never imports heartbeat, so agent rows are reached through `apps.get_model`.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.db.models import Q
from django.utils import timezone
from rest_framework import authentication, exceptions

from paperclip.credentials import run_credential_parse, secret_hash
from paperclip.models import BoardApiToken

BOARD_TOKEN_PREFIX = "pcbt_"
RUN_ID_HEADER = "HTTP_X_PAPERCLIP_RUN_ID"
# The statuses the reference refuses agent credentials for (section 7, actorMiddleware).
AGENT_STATUSES_WITHOUT_ACCESS = ("terminated", "pending_approval")
ACTIVE_RUN_STATUSES = ("queued", "running")
# last_used_at is informational: writing it on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=5)


@dataclass(frozen=True)
class Actor:
    """The authenticated caller. Board actors carry a Django user; agent actors carry the agent
    row (so `/agents/me` needs no second query) and, when the write is linked to a run, its id."""

    kind: str
    source: str
    user: Any = None
    agent: Any = None
    key_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None

    @property
    def is_board(self) -> bool:
        return self.kind == "board"

    @property
    def is_agent(self) -> bool:
        return self.kind == "agent"

    @property
    def is_instance_admin(self) -> bool:
        return self.is_board and bool(self.user.is_superuser)

    @property
    def agent_id(self) -> uuid.UUID | None:
        return self.agent.id if self.agent is not None else None

    @property
    def company_id(self) -> uuid.UUID | None:
        """The agent's company; None for board actors, who may belong to several."""
        return self.agent.company_id if self.agent is not None else None

    @property
    def actor_type(self) -> str:
        """The activity-log actor type ("user" or "agent")."""
        return "agent" if self.is_agent else "user"

    @property
    def actor_id(self) -> str:
        return str(self.agent.id) if self.is_agent else str(self.user.pk)


class AgentPrincipal:
    """Stands in for `request.user` when an agent calls: authenticated, never staff."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def __str__(self) -> str:
        return f"agent {self.agent.id}"


def _parse_run_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise exceptions.ValidationError(
            {"X-Paperclip-Run-Id": ["Must be a heartbeat run id (a UUID)."]}
        ) from None


def _linked_run_id(request, agent: Any, credential_run_id: uuid.UUID | None) -> uuid.UUID | None:
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
    run_model = apps.get_model("heartbeat", "HeartbeatRun")
    if not run_model.objects.filter(id=run_id, agent_id=agent.id).exists():
        raise exceptions.PermissionDenied("X-Paperclip-Run-Id does not name a run of this agent")
    return run_id


def _agent_actor(request, agent: Any, source: str, key_id=None, run_id=None):
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


def _board_actor(request, user: Any, source: str, key_id: uuid.UUID | None = None):
    if request.META.get(RUN_ID_HEADER):
        raise exceptions.PermissionDenied("Only agents link writes to a run (X-Paperclip-Run-Id)")
    return user, Actor(kind="board", source=source, user=user, key_id=key_id)


class BearerAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <secret>`: a run credential, an agent API key or a board token."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <key>'")
        try:
            secret = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Bearer token is not valid text") from None
        if secret.startswith("pcr_"):
            return self._run_credential(request, secret)
        if secret.startswith(BOARD_TOKEN_PREFIX):
            return self._board_token(request, secret)
        return self._agent_key(request, secret)

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'

    def _run_credential(self, request, secret: str):
        credential = run_credential_parse(secret)
        if credential is None:
            raise exceptions.AuthenticationFailed("Invalid run credential")
        run_model = apps.get_model("heartbeat", "HeartbeatRun")
        run = (
            run_model.objects.select_related("agent")
            .filter(
                id=credential.run_id,
                agent_id=credential.agent_id,
                company_id=credential.company_id,
                status__in=ACTIVE_RUN_STATUSES,
            )
            .only("id", "agent")
            .first()
        )
        if run is None:
            raise exceptions.AuthenticationFailed("Run credential expired: its run is not active")
        return _agent_actor(request, run.agent, "run_credential", run_id=run.id)

    def _agent_key(self, request, secret: str):
        agent = next(iter(_agent_by_key_hash(secret_hash(secret))), None)
        if agent is None:
            raise exceptions.AuthenticationFailed("Invalid API key")
        _touch_last_used(
            apps.get_model("heartbeat", "AgentApiKey"), agent.api_key_id, agent.api_key_last_used
        )
        return _agent_actor(request, agent, "agent_key", key_id=agent.api_key_id)

    def _board_token(self, request, secret: str):
        token = (
            BoardApiToken.objects.select_related("user")
            .filter(token_hash=secret_hash(secret), revoked_at__isnull=True)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
            .first()
        )
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid board token")
        _touch_last_used(BoardApiToken, token.pk, token.last_used_at)
        return _board_actor(request, token.user, "board_token", key_id=token.pk)


def _touch_last_used(model, pk, last_used_at) -> None:
    now = timezone.now()
    if last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION:
        model.objects.filter(pk=pk).update(last_used_at=now)


@functools.cache
def _agent_by_key_sql() -> str:
    agent_table = apps.get_model("heartbeat", "Agent")._meta.db_table
    key_table = apps.get_model("heartbeat", "AgentApiKey")._meta.db_table
    return (
        f"SELECT agent.*, key.id AS api_key_id, key.last_used_at AS api_key_last_used "
        f'FROM "{key_table}" AS key JOIN "{agent_table}" AS agent ON agent.id = key.agent_id '
        f"WHERE key.key_hash = %s AND key.revoked_at IS NULL"
    )


def _agent_by_key_hash(digest: str):
    """The agent holding an unrevoked key with this hash, with the key's id and last use.

    Agent keys authenticate every request of the heartbeat protocol; a fixed SQL string skips
    the ORM's per-request query compilation, which cost more than the query itself.
    """
    return apps.get_model("heartbeat", "Agent").objects.raw(_agent_by_key_sql(), [digest])


class BoardSessionAuthentication(authentication.SessionAuthentication):
    """The board's browser session (the admin login); unsafe methods need the CSRF token."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        return _board_actor(request, result[0], "session")
