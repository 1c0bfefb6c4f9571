"""Who may do what, and which companies a caller sees.

Company scoping is a filter, not a check after the fact: a row of a company the caller cannot see
is never loaded, so it answers 404 exactly like a row that does not exist.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet
from rest_framework import exceptions, permissions

from paperclip.authentication import Actor
from paperclip.models import CompanyMembership


def request_actor(request) -> Actor:
    actor = request.auth
    if not isinstance(actor, Actor):
        raise exceptions.NotAuthenticated()
    return actor


def company_scope(actor: Actor, field: str = "company_id") -> Q:
    """A filter on `field` (a company id) that keeps the companies the actor may see.

    One subquery rather than a membership lookup first, so scoping adds no query of its own.
    """
    if actor.is_agent:
        return Q(**{field: actor.company_id})
    if actor.is_instance_admin:
        return Q()
    member_of = CompanyMembership.objects.filter(user_id=actor.user.pk).values("company_id")
    return Q(**{f"{field}__in": member_of})


def company_scope_sql(actor: Actor, column: str = "company_id") -> tuple[str, list]:
    """company_scope as an SQL condition (`TRUE` for an instance admin) and its parameters."""
    if actor.is_agent:
        return f"{column} = %s", [actor.company_id]
    if actor.is_instance_admin:
        return "TRUE", []
    memberships = CompanyMembership._meta.db_table
    return (
        f'{column} IN (SELECT company_id FROM "{memberships}" WHERE user_id = %s)',
        [actor.user.pk],
    )


def scoped(queryset: QuerySet, actor: Actor, field: str = "company_id") -> QuerySet:
    return queryset.filter(company_scope(actor, field))


class IsActor(permissions.BasePermission):
    """Any authenticated board user or agent."""

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, Actor)


class IsBoard(permissions.BasePermission):
    message = "Board access required"

    def has_permission(self, request, view) -> bool:
        if not isinstance(request.auth, Actor):
            return False
        return request.auth.is_board


class IsBoardOrReadOnly(permissions.BasePermission):
    """Agents may read; only the board writes."""

    message = "Board access required"

    def has_permission(self, request, view) -> bool:
        if not isinstance(request.auth, Actor):
            return False
        return request.method in permissions.SAFE_METHODS or request.auth.is_board


class IsBoardOnObject(permissions.BasePermission):
    """Only the board may use `methods` (default: all) on the object a route names.

    Checked on the object (the view calls check_object_permissions once it found it), not on the
    request: an object of a company the caller cannot see answers 404 before any 403.
    """

    message = "Board access required"
    methods: frozenset[str] | None = None

    def has_object_permission(self, request, view, obj) -> bool:
        if self.methods is not None and request.method not in self.methods:
            return True
        return request_actor(request).is_board


class IsBoardToChange(IsBoardOnObject):
    """Whoever sees the object reads it; only the board changes it."""

    methods = frozenset(("POST", "PUT", "PATCH", "DELETE"))


class IsBoardToDelete(IsBoardOnObject):
    methods = frozenset(("DELETE",))


class IsBoardAuthenticated(permissions.BasePermission):
    """Board users only; an agent is told to authenticate as one (401), as Paperclip answers
    on its board-key routes."""

    def has_permission(self, request, view) -> bool:
        if not request_actor(request).is_board:
            raise exceptions.NotAuthenticated("Board authentication required")
        return True


class IsInstanceAdmin(permissions.BasePermission):
    """Instance admins only (a recovery sweep spans every company)."""

    message = "Instance admin access required"

    def has_permission(self, request, view) -> bool:
        return request_actor(request).is_instance_admin


class IsAgent(permissions.BasePermission):
    message = "Agent authentication required"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, Actor) and request.auth.is_agent
