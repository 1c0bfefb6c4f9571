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
from typing import Any, NoReturn

from django.apps import apps
from django.db.models.expressions import RawSQL
from django.utils import timezone
from rest_framework import authentication, exceptions

from paperclip.credentials import (
    RUN_CREDENTIAL_PREFIX,
    RunCredential,
    run_credential_parse,
    secret_hash,
)
from paperclip.models import BoardApiToken
from paperclip.services import auth_failure_record
from paperclip.throttle import (
    LOCKED_FOR_SQL,
    api_client_subject,
    auth_locked_for,
    locked_for_params,
    too_many_failures,
)

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
    """`Authorization: Bearer <secret>`: a run credential, an agent API key or a board token.

    Failed attempts are throttled per client address (paperclip.throttle): a secret that matches
    nothing counts as a guess; a known credential that no longer works (an ended run, a revoked
    key, an expired or revoked token) is answered 401 without counting, so a stale agent process
    cannot lock out the other agents of its host.
    """

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
        subject = api_client_subject(request)
        if secret.startswith(RUN_CREDENTIAL_PREFIX):
            return self._run_credential(request, subject, secret)
        if secret.startswith(BOARD_TOKEN_PREFIX):
            return self._board_token(request, subject, secret)
        return self._agent_key(request, subject, secret)

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'

    def _run_credential(self, request, subject: str, secret: str):
        credential = run_credential_parse(secret)
        if credential is None:
            _refuse_guess(subject, "Invalid run credential")
        agent = next(iter(_agent_by_active_run(credential, subject)), None)
        if agent is None:
            _refuse_known(subject, "Run credential expired: its run is not active")
        _refuse_if_locked(agent.locked_for)
        return _agent_actor(request, agent, "run_credential", run_id=agent.active_run_id)

    def _agent_key(self, request, subject: str, secret: str):
        digest = secret_hash(secret)
        agent = next(iter(_agent_by_key_hash(digest, subject)), None)
        if agent is None:
            if apps.get_model("heartbeat", "AgentApiKey").objects.filter(key_hash=digest).exists():
                _refuse_known(subject, "API key revoked")
            _refuse_guess(subject, "Invalid API key")
        _refuse_if_locked(agent.locked_for)
        _touch_last_used(
            apps.get_model("heartbeat", "AgentApiKey"), agent.api_key_id, agent.api_key_last_used
        )
        return _agent_actor(request, agent, "agent_key", key_id=agent.api_key_id)

    def _board_token(self, request, subject: str, secret: str):
        token = (
            BoardApiToken.objects.select_related("user")
            .filter(token_hash=secret_hash(secret))
            .annotate(locked_for=RawSQL(LOCKED_FOR_SQL, locked_for_params(subject)))
            .first()
        )
        if token is None:
            _refuse_guess(subject, "Invalid board token")
        expired = token.expires_at is not None and token.expires_at <= timezone.now()
        if token.revoked_at is not None or expired or not token.user.is_active:
            _refuse_known(subject, "Invalid board token")
        _refuse_if_locked(token.locked_for)
        _touch_last_used(BoardApiToken, token.pk, token.last_used_at)
        return _board_actor(request, token.user, "board_token", key_id=token.pk)


def _refuse_if_locked(locked_for_sec: int | None) -> None:
    if locked_for_sec is not None:
        raise too_many_failures(locked_for_sec)


def _refuse_guess(subject: str, message: str) -> NoReturn:
    """401 for a secret that matches nothing, counted toward the client's lockout (429 once
    the client is locked)."""
    _refuse_if_locked(auth_failure_record(subject=subject).locked_for_sec)
    raise exceptions.AuthenticationFailed(message)


def _refuse_known(subject: str, message: str) -> NoReturn:
    """401 for a credential that exists but no longer works: not a guess, not counted."""
    _refuse_if_locked(auth_locked_for(subject=subject))
    raise exceptions.AuthenticationFailed(message)


def _touch_last_used(model, pk, last_used_at) -> None:
    now = timezone.now()
    if last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION:
        model.objects.filter(pk=pk).update(last_used_at=now)


@functools.cache
def _agent_by_key_sql() -> str:
    agent_table = apps.get_model("heartbeat", "Agent")._meta.db_table
    key_table = apps.get_model("heartbeat", "AgentApiKey")._meta.db_table
    return (
        f"SELECT agent.*, key.id AS api_key_id, key.last_used_at AS api_key_last_used, "
        f"{LOCKED_FOR_SQL} AS locked_for "
        f'FROM "{key_table}" AS key JOIN "{agent_table}" AS agent ON agent.id = key.agent_id '
        f"WHERE key.key_hash = %s AND key.revoked_at IS NULL"
    )


def _agent_by_key_hash(digest: str, subject: str):
    """The agent holding an unrevoked key with this hash, with the key's id and last use, and
    how long the client stays locked.

    Agent keys authenticate every request of the heartbeat protocol; a fixed SQL string skips
    the ORM's per-request query compilation, which cost more than the query itself.
    """
    params = [*locked_for_params(subject), digest]
    return apps.get_model("heartbeat", "Agent").objects.raw(_agent_by_key_sql(), params)


@functools.cache
def _agent_by_active_run_sql() -> str:
    agent_table = apps.get_model("heartbeat", "Agent")._meta.db_table
    run_table = apps.get_model("heartbeat", "HeartbeatRun")._meta.db_table
    return (
        f"SELECT agent.*, run.id AS active_run_id, {LOCKED_FOR_SQL} AS locked_for "
        f'FROM "{run_table}" AS run JOIN "{agent_table}" AS agent ON agent.id = run.agent_id '
        f"WHERE run.id = %s AND run.agent_id = %s AND run.company_id = %s "
        f"AND run.status IN ({', '.join(['%s'] * len(ACTIVE_RUN_STATUSES))})"
    )


def _agent_by_active_run(credential: RunCredential, subject: str):
    """The agent of the credential's run while that run is active (the run credential is the
    agents' everyday key: fixed SQL, as for agent keys)."""
    ids = [uuid.UUID(credential.run_id), uuid.UUID(credential.agent_id)]
    params = [*locked_for_params(subject), *ids, uuid.UUID(credential.company_id)]
    return apps.get_model("heartbeat", "Agent").objects.raw(
        _agent_by_active_run_sql(), [*params, *ACTIVE_RUN_STATUSES]
    )


class BoardSessionAuthentication(authentication.SessionAuthentication):
    """The board's browser session (the admin login); unsafe methods need the CSRF token."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        return _board_actor(request, result[0], "session")
