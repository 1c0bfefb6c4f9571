"""Issue and comment routes (reference section 7, routes/issues.js), under /api/."""

from __future__ import annotations

import functools
import re
import uuid

from django.db import connection
from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions, status
from rest_framework.response import Response

from issues import serializers as issue_serializers
from issues.models import Issue, IssueComment
from issues.services import (
    IssueActionForbidden,
    IssueConflict,
    IssueInvalidInput,
    IssueTransitionInvalid,
    issue_checkout,
    issue_comment_delete,
    issue_comment_post,
    issue_create,
    issue_delete,
    issue_release,
    issue_update,
)
from paperclip.api import (
    ApiGenericView,
    ApiView,
    cursor_pagination,
    documented,
    get_scoped_or_404,
    json_body,
    query_params,
    register_domain_errors,
)
from paperclip.models import ActivityLog, Company
from paperclip.permissions import IsActor, IsBoardToDelete, request_actor
from paperclip.rows import ModelRows
from paperclip.serializers import ActivitySerializer

register_domain_errors(
    {
        IssueInvalidInput: 400,
        IssueActionForbidden: 403,
        IssueConflict: 409,
        IssueTransitionInvalid: 422,
    }
)

RUN_ID_PARAMETER = OpenApiParameter(
    "X-Paperclip-Run-Id",
    OpenApiTypes.UUID,
    OpenApiParameter.HEADER,
    description="The caller's heartbeat run (agents): links the write to the run.",
)


# PREFIX-NUMBER: the company's prefix (at most 16 characters) and the issue's number.
_IDENTIFIER = re.compile(r"[^\x00-\x1f]{1,16}-[0-9]{1,10}")


def issue_lookup(issue_ref: str) -> dict:
    """Issues are addressed by id or by identifier (`PAP-12`), as in the reference; anything
    else names no issue (and a NUL character would not even reach PostgreSQL)."""
    try:
        return {"id": uuid.UUID(issue_ref)}
    except ValueError:
        pass
    if not _IDENTIFIER.fullmatch(issue_ref):
        raise exceptions.NotFound("Issue not found")
    return {"identifier": issue_ref.upper()}


_ISSUE_ROWS = ModelRows(Issue)
_COMMENT_ROWS = ModelRows(IssueComment)


def issue_for_request(request, issue_ref: str) -> Issue:
    return get_scoped_or_404(Issue.objects.all(), request, **issue_lookup(issue_ref))


def actor_fields(request) -> dict:
    """The service arguments naming who acts (and with which run)."""
    actor = request_actor(request)
    return {
        "actor_type": actor.actor_type,
        "actor_id": actor.actor_id,
        "actor_agent_id": actor.agent_id,
        "actor_run_id": actor.run_id,
    }


class CompanyIssuesView(ApiGenericView):
    queryset = Issue.objects.none()
    serializer_class = issue_serializers.IssueSerializer
    pagination_class = cursor_pagination("-issue_number")

    @documented(
        responses={200: issue_serializers.IssueSerializer(many=True)},
        parameters=[issue_serializers.IssueListQuerySerializer],
    )
    def get(self, request, company_id):
        company = get_scoped_or_404(Company.objects.all(), request, id=company_id)
        filters = query_params(issue_serializers.IssueListQuerySerializer, request)
        queryset = Issue.objects.filter(company=company)
        if "assigneeAgentId" in filters:
            queryset = queryset.filter(assignee_agent_id=filters["assigneeAgentId"])
        if "assigneeUserId" in filters:
            queryset = queryset.filter(assignee_user_id=filters["assigneeUserId"])
        if "parentId" in filters:
            queryset = queryset.filter(parent_id=filters["parentId"])
        if filters.get("status"):
            queryset = queryset.filter(status__in=filters["status"])
        if "q" in filters:
            text = filters["q"]
            queryset = queryset.filter(
                Q(title__icontains=text)
                | Q(identifier__iexact=text)
                | Q(description__icontains=text)
            )
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @documented(
        request=issue_serializers.IssueCreateSerializer,
        responses={201: issue_serializers.IssueSerializer},
        errors=(422,),
        parameters=[RUN_ID_PARAMETER],
    )
    def post(self, request, company_id):
        actor = request_actor(request)
        company = get_scoped_or_404(Company.objects.all(), request, id=company_id)
        data = json_body(issue_serializers.IssueCreateSerializer, request)
        issue = issue_create(
            company_id=company.id,
            created_by_agent_id=actor.agent_id,
            created_by_user_id=actor.actor_id if actor.is_board else None,
            wake_assignee=True,
            actor_type=actor.actor_type,
            actor_id=actor.actor_id,
            **data,
        )
        return Response(
            issue_serializers.IssueSerializer(issue).data, status=status.HTTP_201_CREATED
        )


class IssueDetailView(ApiView):
    permission_classes = [IsActor, IsBoardToDelete]

    @documented(responses={200: issue_serializers.IssueSerializer})
    def get(self, request, issue_ref):
        return Response(
            issue_serializers.IssueSerializer(issue_for_request(request, issue_ref)).data
        )

    @documented(
        request=issue_serializers.IssueUpdateSerializer,
        responses={200: issue_serializers.IssueSerializer},
        errors=(409, 422),
        parameters=[RUN_ID_PARAMETER],
    )
    def patch(self, request, issue_ref):
        issue = issue_for_request(request, issue_ref)
        data = dict(json_body(issue_serializers.IssueUpdateSerializer, request))
        comment = data.pop("comment", None)
        reopen = data.pop("reopen")
        result = issue_update(
            issue_id=issue.id,
            company_id=issue.company_id,
            changes=data,
            comment_body=comment,
            reopen=reopen,
            **actor_fields(request),
        )
        return Response(issue_serializers.IssueSerializer(result.issue).data)

    @documented(responses={204: None}, errors=(409,))
    def delete(self, request, issue_ref):
        actor = request_actor(request)
        issue = issue_for_request(request, issue_ref)
        self.check_object_permissions(request, issue)
        issue_delete(
            issue_id=issue.id,
            company_id=issue.company_id,
            actor_type=actor.actor_type,
            actor_id=actor.actor_id,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class IssueCheckoutView(ApiView):
    @documented(
        request=issue_serializers.CheckoutSerializer,
        responses={200: issue_serializers.IssueSerializer},
        errors=(409,),
        parameters=[RUN_ID_PARAMETER],
    )
    def post(self, request, issue_ref):
        actor = request_actor(request)
        issue = issue_for_request(request, issue_ref)
        data = json_body(issue_serializers.CheckoutSerializer, request)
        agent_id = data.get("agentId")
        if actor.is_agent:
            if agent_id is not None and agent_id != actor.agent_id:
                raise exceptions.PermissionDenied("Agent can only check out as itself")
            if actor.run_id is None:
                raise exceptions.NotAuthenticated("Agent run id required (X-Paperclip-Run-Id)")
            agent_id = actor.agent_id
        elif agent_id is None:
            raise exceptions.ValidationError({"agentId": ["This field is required."]})
        issue = issue_checkout(
            issue_id=issue.id,
            company_id=issue.company_id,
            agent_id=agent_id,
            run_id=actor.run_id,
            expected_statuses=data["expectedStatuses"],
            actor_type=actor.actor_type,
            actor_id=actor.actor_id,
        )
        return Response(issue_serializers.IssueSerializer(issue).data)


class IssueReleaseView(ApiView):
    @documented(
        request=None,
        responses={200: issue_serializers.IssueSerializer},
        errors=(409,),
        parameters=[RUN_ID_PARAMETER],
    )
    def post(self, request, issue_ref):
        issue = issue_for_request(request, issue_ref)
        issue = issue_release(
            issue_id=issue.id, company_id=issue.company_id, **actor_fields(request)
        )
        return Response(issue_serializers.IssueSerializer(issue).data)


class IssueCommentsView(ApiView):
    @documented(
        responses={200: issue_serializers.CommentSerializer(many=True)},
        parameters=[issue_serializers.CommentListQuerySerializer],
    )
    def get(self, request, issue_ref):
        issue = issue_for_request(request, issue_ref)
        params = query_params(issue_serializers.CommentListQuerySerializer, request)
        descending = params["order"] == "desc"
        where, where_params = "issue_id = %s", [issue.id]
        if "after" in params:
            anchor = _COMMENT_ROWS.first("id = %s AND issue_id = %s", [params["after"], issue.id])
            if anchor is None:
                raise exceptions.ValidationError({"after": ["No such comment on this issue."]})
            where += f" AND (created_at, id) {'<' if descending else '>'} (%s, %s)"
            where_params += [anchor.created_at, anchor.id]
        direction = "DESC" if descending else "ASC"
        comments = _COMMENT_ROWS.fetch(
            where,
            where_params,
            order_by=f"created_at {direction}, id {direction}",
            limit=params["limit"],
        )
        return Response(issue_serializers.CommentSerializer(comments, many=True).data)

    @documented(
        request=issue_serializers.CommentCreateSerializer,
        responses={201: issue_serializers.CommentSerializer},
        errors=(409,),
        parameters=[RUN_ID_PARAMETER],
    )
    def post(self, request, issue_ref):
        issue = issue_for_request(request, issue_ref)
        data = json_body(issue_serializers.CommentCreateSerializer, request)
        comment = issue_comment_post(
            issue_id=issue.id,
            company_id=issue.company_id,
            body=data["body"],
            reopen=data["reopen"],
            **actor_fields(request),
        )
        return Response(
            issue_serializers.CommentSerializer(comment).data, status=status.HTTP_201_CREATED
        )


class IssueCommentDetailView(ApiView):
    @documented(responses={200: issue_serializers.CommentSerializer})
    def get(self, request, issue_ref, comment_id):
        issue = issue_for_request(request, issue_ref)
        comment = IssueComment.objects.filter(issue=issue, id=comment_id).first()
        if comment is None:
            raise exceptions.NotFound("Comment not found")
        return Response(issue_serializers.CommentSerializer(comment).data)

    @documented(
        responses={200: issue_serializers.CommentSerializer},
        errors=(409,),
        parameters=[RUN_ID_PARAMETER],
    )
    def delete(self, request, issue_ref, comment_id):
        """Only the author deletes; the comment stays as a tombstone with an empty body."""
        issue = issue_for_request(request, issue_ref)
        comment = issue_comment_delete(
            issue_id=issue.id,
            company_id=issue.company_id,
            comment_id=comment_id,
            **actor_fields(request),
        )
        return Response(issue_serializers.CommentSerializer(comment).data)


class IssueActivityView(ApiGenericView):
    """The issue's activity log, newest first (Paperclip's `activity issue`)."""

    queryset = ActivityLog.objects.none()
    serializer_class = ActivitySerializer
    pagination_class = cursor_pagination("-created_at")

    @documented(responses={200: ActivitySerializer(many=True)})
    def get(self, request, issue_ref):
        issue = issue_for_request(request, issue_ref)
        rows = ActivityLog.objects.filter(
            company_id=issue.company_id, entity_type="issue", entity_id=str(issue.id)
        )
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


# Ancestors shown in a heartbeat context: enough for an agent to see why its task exists.
HEARTBEAT_CONTEXT_ANCESTORS = 5


class IssueHeartbeatContextView(ApiView):
    """What an agent's run needs to resume an issue, in one small response: the issue, its
    ancestors, a cursor over the comments (to fetch only new ones) and the comment that woke it."""

    @documented(
        responses={200: issue_serializers.HeartbeatContextSerializer},
        parameters=[issue_serializers.HeartbeatContextQuerySerializer],
    )
    def get(self, request, issue_ref):
        issue = issue_for_request(request, issue_ref)
        params = query_params(issue_serializers.HeartbeatContextQuerySerializer, request)
        ancestors = []
        if issue.parent_id is not None:
            with connection.cursor() as cursor:
                cursor.execute(_ancestors_sql(), [issue.parent_id, issue.company_id])
                ancestors = _ISSUE_ROWS.instances(cursor.fetchall())
        with connection.cursor() as cursor:
            cursor.execute(_comment_cursor_sql(), [issue.id, issue.id])
            total, latest_id, latest_at = cursor.fetchone()
        wake_comment = None
        if "wakeCommentId" in params:
            wake_comment = _COMMENT_ROWS.first(
                "id = %s AND issue_id = %s", [params["wakeCommentId"], issue.id]
            )
        body = {
            "issue": issue,
            "description": issue.description,
            "ancestors": ancestors,
            "commentCursor": {
                "totalComments": total,
                "latestCommentId": latest_id,
                "latestCommentAt": latest_at,
            },
            "wakeComment": wake_comment,
        }
        return Response(issue_serializers.HeartbeatContextSerializer(body).data)


@functools.cache
def _ancestors_sql() -> str:
    """The issue's parent and its ancestors, nearest first, at most HEARTBEAT_CONTEXT_ANCESTORS
    (the depth bound also ends a cycle), all in the issue's company."""
    table = Issue._meta.db_table
    return (
        f'WITH RECURSIVE chain AS (SELECT issue.*, 1 AS depth FROM "{table}" AS issue '
        f"WHERE issue.id = %s AND issue.company_id = %s "
        f'UNION ALL SELECT parent.*, chain.depth + 1 FROM "{table}" AS parent '
        f"JOIN chain ON parent.id = chain.parent_id AND parent.company_id = chain.company_id "
        f"WHERE chain.depth < {HEARTBEAT_CONTEXT_ANCESTORS}) "
        f"SELECT {_ISSUE_ROWS.columns} FROM chain ORDER BY depth"
    )


@functools.cache
def _comment_cursor_sql() -> str:
    """The issue's comment count and its latest comment's id and time, in one statement."""
    table = IssueComment._meta.db_table
    return (
        f'SELECT (SELECT count(*) FROM "{table}" WHERE issue_id = %s), latest.id, '
        f"latest.created_at FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT id, created_at "
        f'FROM "{table}" WHERE issue_id = %s ORDER BY created_at DESC, id DESC LIMIT 1) '
        f"AS latest ON TRUE"
    )
