"""Who is calling the API: board users (browser session or personal token) and agents (API key or
the run-scoped credential a run's process gets as PAPERCLIP_API_KEY).

Every authenticator leaves an `Actor` in `request.auth`; views and permissions read only that.
paperclip never imports heartbeat, so agent rows are reached through `apps.get_model`.
"""

from __future__ import annotations

import copy
import functools
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
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
        found = _agent_by_active_run(credential, subject)
        if found is None:
            _refuse_known(subject, "Run credential expired: its run is not active")
        agent_id, agent_version, run_id, locked_for = found
        _refuse_if_locked(locked_for)
        agent = _agent_rows.get(agent_id, agent_version)
        if agent is None:
            _refuse_known(subject, "Run credential expired: its agent is gone")
        return _agent_actor(request, agent, "run_credential", run_id=run_id)

    def _agent_key(self, request, subject: str, secret: str):
        digest = secret_hash(secret)
        found = _agent_by_key_hash(digest, subject)
        if found is None:
            if apps.get_model("heartbeat", "AgentApiKey").objects.filter(key_hash=digest).exists():
                _refuse_known(subject, "API key revoked")
            _refuse_guess(subject, "Invalid API key")
        key_id, key_last_used_at, agent_id, agent_version, locked_for = found
        _refuse_if_locked(locked_for)
        agent = _agent_rows.get(agent_id, agent_version)
        if agent is None:
            _refuse_known(subject, "API key revoked: its agent is gone")
        _touch_last_used(apps.get_model("heartbeat", "AgentApiKey"), key_id, key_last_used_at)
        return _agent_actor(request, agent, "agent_key", key_id=key_id)

    def _board_token(self, request, subject: str, secret: str):
        found = _board_token_by_hash(secret_hash(secret), subject)
        if found is None:
            _refuse_guess(subject, "Invalid board token")
        token_id, revoked_at, expires_at, last_used_at, user_id, user_version, locked_for = found
        expired = expires_at is not None and expires_at <= timezone.now()
        user = _user_rows.get(user_id, user_version) if revoked_at is None and not expired else None
        if user is None or not user.is_active:
            _refuse_known(subject, "Invalid board token")
        _refuse_if_locked(locked_for)
        _touch_last_used(BoardApiToken, token_id, last_used_at)
        return _board_actor(request, user, "board_token", key_id=token_id)


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


class RowCache:
    """Model rows by primary key and row version, so that a credential's lookup, one fixed
    statement per request, can return the version of its agent (or user) instead of the row.

    The version is PostgreSQL's `xmin`: every committed change of a row writes a new row
    version with the id of the transaction that wrote it (row locks do not), so a cached
    instance is used only while it is the row as the database holds it now, whatever process
    or host changed it. The credential's own validity (a revoked key, an ended run, a revoked
    or expired token) is in that statement and never cached; the agent's status and the user's
    are read from the row at the version the statement saw, or a newer one. Each request gets a
    shallow copy, so that what it caches on its instance (a related row) stays its own.
    """

    def __init__(self, model_label: str, max_rows: int = 4096) -> None:
        self._model_label = model_label
        self._max_rows = max_rows
        self._rows: dict[Any, tuple[str, Any]] = {}

    def get(self, pk: Any, version: str) -> Any:
        cached = self._rows.get(pk)
        if cached is not None and cached[0] == version:
            return copy.copy(cached[1])
        rows = (
            apps.get_model(self._model_label)
            .objects.annotate(row_version=RawSQL("xmin::text", ()))
            .filter(pk=pk)
            .order_by()
        )
        row = next(iter(rows[:1]), None)
        if row is None:
            # Deleted since the credential's statement: the caller refuses it.
            return None
        if len(self._rows) >= self._max_rows:
            self._rows.clear()
        self._rows[pk] = (row.row_version, row)
        return copy.copy(row)


_agent_rows = RowCache("heartbeat.Agent")
_user_rows = RowCache(settings.AUTH_USER_MODEL)


def _fetch_one(sql: str, params: list) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


@functools.cache
def _agent_by_key_sql() -> str:
    agent_table = apps.get_model("heartbeat", "Agent")._meta.db_table
    key_table = apps.get_model("heartbeat", "AgentApiKey")._meta.db_table
    return (
        f"SELECT key.id, key.last_used_at, agent.id, agent.xmin::text, {LOCKED_FOR_SQL} "
        f'FROM "{key_table}" AS key JOIN "{agent_table}" AS agent ON agent.id = key.agent_id '
        f"WHERE key.key_hash = %s AND key.revoked_at IS NULL"
    )


def _agent_by_key_hash(digest: str, subject: str) -> tuple | None:
    """(key id, key's last use, agent id, agent's row version, seconds the client stays
    locked) of the unrevoked key with this hash, or None.

    Agent keys authenticate every request of the heartbeat protocol: fixed SQL through a plain
    cursor, since compiling ORM queries and building the agent from its row cost more than the
    query itself.
    """
    return _fetch_one(_agent_by_key_sql(), [*locked_for_params(subject), digest])


@functools.cache
def _agent_by_active_run_sql() -> str:
    agent_table = apps.get_model("heartbeat", "Agent")._meta.db_table
    run_table = apps.get_model("heartbeat", "HeartbeatRun")._meta.db_table
    return (
        f"SELECT agent.id, agent.xmin::text, run.id, {LOCKED_FOR_SQL} "
        f'FROM "{run_table}" AS run JOIN "{agent_table}" AS agent ON agent.id = run.agent_id '
        f"WHERE run.id = %s AND run.agent_id = %s AND run.company_id = %s "
        f"AND run.status IN ({', '.join(['%s'] * len(ACTIVE_RUN_STATUSES))})"
    )


def _agent_by_active_run(credential: RunCredential, subject: str) -> tuple | None:
    """(agent id, agent's row version, run id, seconds the client stays locked) while the
    credential's run is active, or None (the agents' everyday key: fixed SQL, as for keys)."""
    ids = [uuid.UUID(credential.run_id), uuid.UUID(credential.agent_id)]
    params = [*locked_for_params(subject), *ids, uuid.UUID(credential.company_id)]
    return _fetch_one(_agent_by_active_run_sql(), [*params, *ACTIVE_RUN_STATUSES])


@functools.cache
def _board_token_by_hash_sql() -> str:
    user_table = get_user_model()._meta.db_table
    return (
        f"SELECT token.id, token.revoked_at, token.expires_at, token.last_used_at, "
        f"person.id, person.xmin::text, {LOCKED_FOR_SQL} "
        f'FROM "{BoardApiToken._meta.db_table}" AS token '
        f'JOIN "{user_table}" AS person ON person.id = token.user_id '
        f"WHERE token.token_hash = %s"
    )


def _board_token_by_hash(digest: str, subject: str) -> tuple | None:
    """(token id, revoked at, expires at, last use, user id, user's row version, seconds the
    client stays locked) of the board token with this hash, or None."""
    return _fetch_one(_board_token_by_hash_sql(), [*locked_for_params(subject), digest])


class BoardSessionAuthentication(authentication.SessionAuthentication):
    """The board's browser session (the admin login); unsafe methods need the CSRF token."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        return _board_actor(request, result[0], "session")
