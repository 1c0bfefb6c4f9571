"""The REST API's shared machinery (error format, views, input parsing) and the core app's
routes: the API root, companies, their activity feed, board members' personal tokens.

Errors are always JSON `{"error": "...", "details": ...}`. Services raise domain exceptions; each
app's api module registers which HTTP status a domain exception means, so services stay free of
HTTP and the mapping lives in one table per app.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import IntegrityError, connection
from django.db.models import Q
from django.http import Http404, HttpResponse, JsonResponse
from django.utils import timezone
from django.views import defaults
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from paperclip import serializers as core_serializers
from paperclip.authentication import Actor
from paperclip.models import ActivityLog, BoardApiToken, Company, CompanyMembership
from paperclip.permissions import (
    IsActor,
    IsBoard,
    IsBoardAuthenticated,
    IsBoardOrReadOnly,
    IsBoardToChange,
    company_scope_sql,
    request_actor,
    scoped,
)
from paperclip.rest import ArrayCursorPagination
from paperclip.rows import ModelRows
from paperclip.services import (
    BOARD_API_KEY_DEFAULT_TTL,
    CompanyBudgetSpent,
    board_token_create,
    board_token_revoke,
    company_create,
    company_update,
)
from paperclip.signals import agent_run_write

_domain_error_statuses: dict[type[Exception], int] = {}


def register_domain_errors(mapping: dict[type[Exception], int]) -> None:
    """Declare the HTTP status of domain exceptions (called by each app's api module)."""
    _domain_error_statuses.update(mapping)


register_domain_errors({CompanyBudgetSpent: 409})


def _domain_status(exc: Exception) -> int | None:
    for cls in type(exc).__mro__:
        if cls in _domain_error_statuses:
            return _domain_error_statuses[cls]
    return None


def _first_message(detail: Any, path: str = "") -> str:
    """'field: message' for the first problem in a DRF error detail, so the error names it."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            return _first_message(value, f"{path}.{name}" if path and name else path or name)
    if isinstance(detail, list) and detail:
        return _first_message(detail[0], path)
    return f"{path}: {detail}" if path else str(detail)


def _error_body(message: str, details: Any = None) -> dict:
    return {"error": message, "details": details}


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"Request body too large: at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"
    default_code = "request_too_large"


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    status_code = _domain_status(exc)
    if status_code is not None:
        return Response(_error_body(str(exc), getattr(exc, "details", None)), status=status_code)
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        exc = exceptions.NotFound(str(exc) or "Not found")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge()
    elif isinstance(exc, SuspiciousOperation):
        # Too many query or form fields, and the like: the request is malformed.
        exc = exceptions.ParseError(str(exc) or None)
    elif isinstance(exc, IntegrityError):
        # A uniqueness race lost to a concurrent request (the constraint is the arbiter).
        exc = exceptions.APIException("Conflict with the current state of the resource")
        exc.status_code = status.HTTP_409_CONFLICT
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        message = f"Validation error: {_first_message(exc.detail)}"
        response.data = _error_body(message, exc.detail)
    else:
        detail = getattr(exc, "detail", None)
        response.data = _error_body(str(detail) if detail is not None else str(exc))
    return response


def json_not_found(request, exception=None) -> HttpResponse:
    """JSON for API clients; the admin and the dashboard keep Django's HTML page."""
    if request.path.startswith("/api/"):
        return JsonResponse(_error_body("Not found"), status=404)
    return defaults.page_not_found(request, exception)


def json_bad_request(request, exception=None) -> HttpResponse:
    """Requests refused before any view ran (a bad Host header, a body or query string over
    Django's limits): JSON under /api/ like every other API error."""
    if request.path.startswith("/api/"):
        if isinstance(exception, RequestDataTooBig):
            return JsonResponse(_error_body(RequestTooLarge.default_detail), status=413)
        return JsonResponse(_error_body("Bad request"), status=400)
    return defaults.bad_request(request, exception)


def json_server_error(request) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(_error_body("Internal server error"), status=500)
    return defaults.server_error(request)


def cursor_pagination(ordering: str) -> type[ArrayCursorPagination]:
    return type(f"CursorPagination_{ordering}", (ArrayCursorPagination,), {"ordering": ordering})


class RunActivityMixin:
    """A successful write by an agent linked to a run counts as that run's activity (reference
    4.1: it clears a process_detached warning), whatever route it went through."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        actor = getattr(request, "auth", None)
        if (
            request.method not in ("GET", "HEAD", "OPTIONS")
            and response.status_code < 400
            and isinstance(actor, Actor)
            and actor.run_id is not None
        ):
            agent_run_write.send_robust(
                sender=type(self), run_id=actor.run_id, agent_id=actor.agent_id
            )
        return response


class ApiView(RunActivityMixin, APIView):
    permission_classes = [IsActor]


class ApiGenericView(RunActivityMixin, generics.GenericAPIView):
    permission_classes = [IsActor]


def json_body(serializer_class: type[serializers.Serializer], request) -> dict:
    """Validated input of a request body (400 naming the field otherwise)."""
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def query_params(serializer_class: type[serializers.Serializer], request) -> dict:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def get_scoped_or_404(queryset, request, **lookup):
    """The row if it exists in a company the caller may see; 404 alike for missing and foreign.

    Every route of an object starts here: for a model's whole table (`Model.objects.all()`) it
    is one fixed statement (paperclip.rows); a filtered queryset goes through the ORM.
    """
    model = queryset.model
    scope_field = "id" if model is Company else "company_id"
    if queryset.query.where:
        # A lookup by a unique key needs no ORDER BY (first() would add the model's default one).
        rows = scoped(queryset, request_actor(request), field=scope_field).filter(**lookup)
        row = next(iter(rows.order_by()[:1]), None)
    else:
        scope, params = company_scope_sql(request_actor(request), scope_field)
        conditions = [scope]
        for name, value in lookup.items():
            field = model._meta.get_field(name)
            conditions.append(f'"{field.column}" = %s')
            params.append(field.get_db_prep_value(value, connection))
        row = _model_rows(model).first(" AND ".join(conditions), params)
    if row is None:
        raise exceptions.NotFound(f"{model._meta.verbose_name.capitalize()} not found")
    return row


@functools.cache
def _model_rows(model) -> ModelRows:
    return ModelRows(model)


def documented(*, responses: dict, errors: tuple[int, ...] = (), **kwargs) -> Callable:
    """`extend_schema` with the error responses every route can give added to `responses`
    (429: the caller's address is locked after failed authentication; 413: a body too large)."""
    common = (400, 401, 403, 404, 429, *((413,) if kwargs.get("request") else ()))
    all_responses = {code: core_serializers.ErrorSerializer for code in common}
    all_responses.update({code: core_serializers.ErrorSerializer for code in errors})
    all_responses.update(responses)
    return extend_schema(responses=all_responses, **kwargs)


class BearerAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "paperclip.authentication.BearerAuthentication"
    name = "bearer"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An agent API key (pcak_...), a run credential (pcr_..., the "
            "PAPERCLIP_API_KEY of a run) or a board personal token (pcbt_...).",
        }


class BoardSessionScheme(OpenApiAuthenticationExtension):
    target_class = "paperclip.authentication.BoardSessionAuthentication"
    name = "boardSession"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


class ApiRootView(APIView):
    """Where to start: the interactive docs, the schema, health."""

    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(responses={200: core_serializers.ApiRootSerializer})
    def get(self, request):
        body = {
            "docs": request.build_absolute_uri("/api/docs/"),
            "schema": request.build_absolute_uri("/api/schema/"),
            "health": request.build_absolute_uri("/api/health"),
        }
        return Response(core_serializers.ApiRootSerializer(body).data)


# Companies


class CompanyListCreateView(ApiGenericView):
    permission_classes = [IsBoardOrReadOnly]
    serializer_class = core_serializers.CompanySerializer
    pagination_class = cursor_pagination("name")

    queryset = Company.objects.none()

    @documented(responses={200: core_serializers.CompanySerializer(many=True)})
    def get(self, request):
        companies = scoped(Company.objects.all(), request_actor(request), field="id")
        page = self.paginate_queryset(companies)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @documented(
        request=core_serializers.CompanyCreateSerializer,
        responses={201: core_serializers.CompanySerializer},
        errors=(409,),
    )
    def post(self, request):
        actor = request_actor(request)
        data = json_body(core_serializers.CompanyCreateSerializer, request)
        company = company_create(creator_user_id=actor.user.pk, **data)
        return Response(
            core_serializers.CompanySerializer(company).data, status=status.HTTP_201_CREATED
        )


class CompanyDetailView(ApiView):
    permission_classes = [IsActor, IsBoardToChange]

    def _company(self, request, company_id) -> Company:
        return get_scoped_or_404(Company.objects.all(), request, id=company_id)

    @documented(responses={200: core_serializers.CompanySerializer})
    def get(self, request, company_id):
        return Response(core_serializers.CompanySerializer(self._company(request, company_id)).data)

    @documented(
        request=core_serializers.CompanyUpdateSerializer,
        responses={200: core_serializers.CompanySerializer},
        errors=(409,),
    )
    def patch(self, request, company_id):
        actor = request_actor(request)
        company = self._company(request, company_id)
        self.check_object_permissions(request, company)
        data = json_body(core_serializers.CompanyUpdateSerializer, request)
        company = company_update(
            company=company, actor_type="user", actor_id=actor.actor_id, changes=data
        )
        return Response(core_serializers.CompanySerializer(company).data)


class CompanyActivityView(ApiGenericView):
    queryset = ActivityLog.objects.none()
    serializer_class = core_serializers.ActivitySerializer
    pagination_class = cursor_pagination("-created_at")

    @documented(
        responses={200: core_serializers.ActivitySerializer(many=True)},
        parameters=[core_serializers.ActivityQuerySerializer],
    )
    def get(self, request, company_id):
        company = get_scoped_or_404(Company.objects.all(), request, id=company_id)
        filters = query_params(core_serializers.ActivityQuerySerializer, request)
        queryset = ActivityLog.objects.filter(company=company)
        if filters.get("agentId"):
            queryset = queryset.filter(agent_id=filters["agentId"])
        if filters.get("entityType"):
            queryset = queryset.filter(entity_type=filters["entityType"])
        if filters.get("entityId"):
            queryset = queryset.filter(entity_id=filters["entityId"])
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


# Board personal tokens


class BoardTokenListCreateView(ApiGenericView):
    queryset = BoardApiToken.objects.none()
    permission_classes = [IsBoard]
    serializer_class = core_serializers.BoardTokenSerializer
    pagination_class = cursor_pagination("-created_at")

    @documented(responses={200: core_serializers.BoardTokenSerializer(many=True)})
    def get(self, request):
        queryset = BoardApiToken.objects.filter(user_id=request_actor(request).user.pk)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @documented(
        request=core_serializers.BoardTokenCreateSerializer,
        responses={201: core_serializers.BoardTokenCreatedSerializer},
    )
    def post(self, request):
        data = json_body(core_serializers.BoardTokenCreateSerializer, request)
        user_id = request_actor(request).user.pk
        token, secret = board_token_create(user_id=user_id, name=data["name"])
        body = core_serializers.BoardTokenSerializer(token).data
        body["token"] = secret
        return Response(body, status=status.HTTP_201_CREATED)


class BoardTokenRevokeView(ApiView):
    permission_classes = [IsBoard]

    @documented(responses={200: core_serializers.BoardTokenSerializer})
    def delete(self, request, token_id):
        token = BoardApiToken.objects.filter(
            id=token_id, user_id=request_actor(request).user.pk
        ).first()
        if token is None:
            raise exceptions.NotFound("Token not found")
        token = board_token_revoke(token=token)
        return Response(core_serializers.BoardTokenSerializer(token).data)


# Paperclip's names for the same board tokens (its CLI's `whoami` and `token board ...`)


class CliAuthMeView(ApiView):
    """Who the board caller is: user, instance admin, memberships, and how it authenticated."""

    permission_classes = [IsActor, IsBoardAuthenticated]

    @documented(responses={200: core_serializers.CliAuthMeSerializer})
    def get(self, request):
        actor = request_actor(request)
        user = actor.user
        memberships = list(CompanyMembership.objects.filter(user=user).order_by("created_at"))
        body = {
            "user": {
                "id": str(user.pk),
                "name": user.get_full_name() or user.get_username(),
                "email": user.email,
            },
            "userId": str(user.pk),
            "isInstanceAdmin": actor.is_instance_admin,
            "companyIds": [m.company_id for m in memberships],
            "memberships": memberships,
            "source": "board_key" if actor.source == "board_token" else "session",
            "keyId": actor.key_id,
        }
        return Response(core_serializers.CliAuthMeSerializer(body).data)


class BoardApiKeyListCreateView(ApiView):
    permission_classes = [IsActor, IsBoardAuthenticated]

    @documented(
        responses={200: core_serializers.BoardTokenSerializer(many=True)},
        parameters=[
            OpenApiParameter("includeInactive", bool, description="Also revoked and expired keys.")
        ],
    )
    def get(self, request):
        actor = request_actor(request)
        keys = BoardApiToken.objects.filter(user_id=actor.user.pk).order_by("-created_at")
        if request.query_params.get("includeInactive") != "true":
            keys = keys.filter(revoked_at__isnull=True).filter(
                Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
            )
        return Response(core_serializers.BoardTokenSerializer(keys, many=True).data)

    @documented(
        request=core_serializers.BoardApiKeyCreateSerializer,
        responses={201: core_serializers.BoardTokenCreatedSerializer},
    )
    def post(self, request):
        actor = request_actor(request)
        data = json_body(core_serializers.BoardApiKeyCreateSerializer, request)
        company_id = data.get("requestedCompanyId")
        if company_id is not None:
            get_scoped_or_404(Company.objects.all(), request, id=company_id)
        expires_at = data.get("expiresAt", timezone.now() + BOARD_API_KEY_DEFAULT_TTL)
        token, secret = board_token_create(
            user_id=actor.user.pk, name=data["name"].strip(), expires_at=expires_at
        )
        body = core_serializers.BoardTokenSerializer(token).data
        body["token"] = secret
        return Response(body, status=status.HTTP_201_CREATED)


class BoardApiKeyRevokeView(ApiView):
    permission_classes = [IsActor, IsBoardAuthenticated]

    @documented(responses={200: core_serializers.BoardApiKeyRevokedSerializer})
    def delete(self, request, key_id):
        actor = request_actor(request)
        token = BoardApiToken.objects.filter(id=key_id, user_id=actor.user.pk).first()
        if token is None:
            raise exceptions.NotFound("Board API key not found")
        board_token_revoke(token=token)
        return Response({"ok": True, "keyId": str(token.id)})
