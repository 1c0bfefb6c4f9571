"""Who is calling the API: board users (browser session or personal token) and agents (API key or
the run-scoped credential a run's process gets as PAPERCLIP_API_KEY).

Every authenticator leaves an `Actor` in `request.auth`; views and permissions read only that.
Agents and their credentials are heartbeat's tables and paperclip never imports heartbeat:
heartbeat installs the resolver of agent secrets (`agent_credential_resolver_register`, from its
AppConfig.ready), and the bearer authentication hands it every secret that is not a board token.
"""

from __future__ import annotations

import copy
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Model
from django.db.models.expressions import RawSQL
from django.utils import timezone
from rest_framework import authentication, exceptions

from paperclip.credentials import secret_hash
from paperclip.models import BoardApiToken
from paperclip.services import auth_failure_record, board_token_touch
from paperclip.throttle import (
    LOCKED_FOR_SQL,
    api_client_subject,
    auth_locked_for,
    locked_for_params,
    too_many_failures,
)

BOARD_TOKEN_PREFIX = "pcbt_"
RUN_ID_HEADER = "HTTP_X_PAPERCLIP_RUN_ID"


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


def _board_actor(request, user: Any, source: str, key_id: uuid.UUID | None = None):
    if request.META.get(RUN_ID_HEADER):
        raise exceptions.PermissionDenied("Only agents link writes to a run (X-Paperclip-Run-Id)")
    return user, Actor(kind="board", source=source, user=user, key_id=key_id)


# (request, client subject, secret) -> (AgentPrincipal, Actor) for an agent's secret; refuses
# with AuthenticationFailed (or the 429 of a locked client) otherwise.
AgentCredentialResolver = Callable[[Any, str, str], tuple[Any, Actor]]
_agent_credential_resolver: AgentCredentialResolver | None = None


def agent_credential_resolver_register(resolver: AgentCredentialResolver) -> None:
    """Install the resolver of agent secrets (API keys, run credentials): the app that owns
    agents does, from its AppConfig.ready."""
    global _agent_credential_resolver
    _agent_credential_resolver = resolver


class BearerAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <secret>`: a board token, or an agent's secret (a run credential or
    an agent API key) for the resolver the agents' app installed.

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
        if secret.startswith(BOARD_TOKEN_PREFIX):
            return self._board_token(request, subject, secret)
        if _agent_credential_resolver is None:
            refuse_guess(subject, "Invalid API key")
        return _agent_credential_resolver(request, subject, secret)

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'

    def _board_token(self, request, subject: str, secret: str):
        found = _board_token_by_hash(secret_hash(secret), subject)
        if found is None:
            refuse_guess(subject, "Invalid board token")
        token_id, revoked_at, expires_at, last_used_at, user_id, user_version, locked_for = found
        expired = expires_at is not None and expires_at <= timezone.now()
        user = _user_rows.get(user_id, user_version) if revoked_at is None and not expired else None
        if user is None or not user.is_active:
            refuse_known(subject, "Invalid board token")
        refuse_if_locked(locked_for)
        board_token_touch(token_id=token_id, last_used_at=last_used_at)
        return _board_actor(request, user, "board_token", key_id=token_id)


def refuse_if_locked(locked_for_sec: int | None) -> None:
    if locked_for_sec is not None:
        raise too_many_failures(locked_for_sec)


def refuse_guess(subject: str, message: str) -> NoReturn:
    """401 for a secret that matches nothing, counted toward the client's lockout (429 once
    the client is locked)."""
    refuse_if_locked(auth_failure_record(subject=subject).locked_for_sec)
    raise exceptions.AuthenticationFailed(message)


def refuse_known(subject: str, message: str) -> NoReturn:
    """401 for a credential that exists but no longer works: not a guess, not counted."""
    refuse_if_locked(auth_locked_for(subject=subject))
    raise exceptions.AuthenticationFailed(message)


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

    def __init__(self, model: type[Model], max_rows: int = 4096) -> None:
        self._model = model
        self._max_rows = max_rows
        self._rows: dict[Any, tuple[str, Any]] = {}

    def get(self, pk: Any, version: str) -> Any:
        cached = self._rows.get(pk)
        if cached is not None and cached[0] == version:
            return copy.copy(cached[1])
        rows = (
            self._model._default_manager.annotate(row_version=RawSQL("xmin::text", ()))
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


_user_rows = RowCache(get_user_model())


def credential_row(sql: str, params: list) -> tuple | None:
    """The one row of a credential's lookup (fixed SQL through a plain cursor), or None."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


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
    return credential_row(_board_token_by_hash_sql(), [*locked_for_params(subject), digest])


class BoardSessionAuthentication(authentication.SessionAuthentication):
    """The board's browser session (the admin login); unsafe methods need the CSRF token."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        return _board_actor(request, result[0], "session")
