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


class IsAgent(permissions.BasePermission):
    message = "Agent authentication required"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, Actor) and request.auth.is_agent
