"""Issue and comment JSON, with the reference's camelCase keys."""

from __future__ import annotations

from rest_framework import serializers

from issues.models import Issue, IssueComment
from paperclip.serializers import CamelModelSerializer

TEXT_MAX = 100_000


def _uuid_out(source: str) -> serializers.UUIDField:
    return serializers.UUIDField(source=source, read_only=True, allow_null=True)


class IssueSerializer(CamelModelSerializer):
    companyId = serializers.UUIDField(source="company_id", read_only=True)
    parentId = _uuid_out("parent_id")
    assigneeAgentId = _uuid_out("assignee_agent_id")
    checkoutRunId = _uuid_out("checkout_run_id")
    executionRunId = _uuid_out("execution_run_id")
    createdByAgentId = _uuid_out("created_by_agent_id")

    class Meta:
        model = Issue
        fields = [
            "id",
            "companyId",
            "identifier",
            "issue_number",
            "title",
            "description",
            "status",
            "priority",
            "parentId",
            "assigneeAgentId",
            "assignee_user_id",
            "checkoutRunId",
            "executionRunId",
            "execution_agent_name_key",
            "execution_locked_at",
            "started_at",
            "completed_at",
            "cancelled_at",
            "hidden_at",
            "origin_kind",
            "origin_id",
            "origin_run_id",
            "createdByAgentId",
            "created_by_user_id",
            "request_depth",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class IssueCompactSerializer(CamelModelSerializer):
    """The few fields an agent needs to pick its next task (inbox-lite, heartbeat-context)."""

    parentId = _uuid_out("parent_id")
    assigneeAgentId = _uuid_out("assignee_agent_id")
    checkoutRunId = _uuid_out("checkout_run_id")
    executionRunId = _uuid_out("execution_run_id")

    class Meta:
        model = Issue
        fields = [
            "id",
            "identifier",
            "title",
            "status",
            "priority",
            "parentId",
            "assigneeAgentId",
            "checkoutRunId",
            "executionRunId",
            "updated_at",
        ]
        read_only_fields = fields


class IssueCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=500)
    description = serializers.CharField(
        max_length=TEXT_MAX, allow_null=True, allow_blank=True, required=False
    )
    status = serializers.ChoiceField(choices=Issue.Status.choices, default=Issue.Status.BACKLOG)
    priority = serializers.ChoiceField(
        choices=Issue.Priority.choices, default=Issue.Priority.MEDIUM
    )
    assigneeAgentId = serializers.UUIDField(
        source="assignee_agent_id", allow_null=True, required=False
    )
    assigneeUserId = serializers.CharField(
        source="assignee_user_id", max_length=200, allow_null=True, required=False
    )
    parentId = serializers.UUIDField(source="parent_id", allow_null=True, required=False)


class IssueUpdateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=500, required=False)
    description = serializers.CharField(
        max_length=TEXT_MAX, allow_null=True, allow_blank=True, required=False
    )
    status = serializers.ChoiceField(choices=Issue.Status.choices, required=False)
    priority = serializers.ChoiceField(choices=Issue.Priority.choices, required=False)
    assigneeAgentId = serializers.UUIDField(
        source="assignee_agent_id", allow_null=True, required=False
    )
    assigneeUserId = serializers.CharField(
        source="assignee_user_id", max_length=200, allow_null=True, required=False
    )
    parentId = serializers.UUIDField(source="parent_id", allow_null=True, required=False)
    comment = serializers.CharField(
        max_length=TEXT_MAX,
        required=False,
        help_text="A comment posted in the same transaction as the update.",
    )
    reopen = serializers.BooleanField(
        default=False,
        help_text="With a comment and no status: move a done, cancelled or blocked issue back "
        "to todo.",
    )


class IssueListQuerySerializer(serializers.Serializer):
    assigneeAgentId = serializers.UUIDField(required=False)
    assigneeUserId = serializers.CharField(max_length=200, required=False)
    parentId = serializers.UUIDField(required=False)
    status = serializers.CharField(
        max_length=200,
        required=False,
        help_text="Comma-separated statuses, e.g. todo,in_progress.",
    )
    q = serializers.CharField(max_length=200, required=False, help_text="Text search.")

    def validate_status(self, value: str) -> list[str]:
        statuses = [s.strip() for s in value.split(",") if s.strip()]
        unknown = sorted(set(statuses) - set(Issue.Status.values))
        if unknown:
            raise serializers.ValidationError(f"Unknown statuses: {', '.join(unknown)}")
        return statuses


class CheckoutSerializer(serializers.Serializer):
    agentId = serializers.UUIDField(
        required=False, help_text="The agent taking the issue; an agent may omit it (itself)."
    )
    expectedStatuses = serializers.ListField(
        child=serializers.ChoiceField(choices=Issue.Status.choices),
        allow_empty=False,
        max_length=7,
        default=lambda: [Issue.Status.BACKLOG, Issue.Status.TODO, Issue.Status.BLOCKED],
    )


class CommentSerializer(CamelModelSerializer):
    companyId = serializers.UUIDField(source="company_id", read_only=True)
    issueId = serializers.UUIDField(source="issue_id", read_only=True)
    authorAgentId = _uuid_out("author_agent_id")
    createdByRunId = _uuid_out("created_by_run_id")
    deletedByAgentId = _uuid_out("deleted_by_agent_id")
    deletedByRunId = _uuid_out("deleted_by_run_id")

    class Meta:
        model = IssueComment
        fields = [
            "id",
            "companyId",
            "issueId",
            "authorAgentId",
            "author_user_id",
            "createdByRunId",
            "body",
            "created_at",
            "updated_at",
            "deleted_at",
            "deletedByAgentId",
            "deleted_by_user_id",
            "deletedByRunId",
        ]
        read_only_fields = fields


class CommentCreateSerializer(serializers.Serializer):
    body = serializers.CharField(max_length=TEXT_MAX)
    reopen = serializers.BooleanField(
        default=False, help_text="Move a done, cancelled or blocked issue back to todo."
    )


class CommentListQuerySerializer(serializers.Serializer):
    after = serializers.UUIDField(
        required=False, help_text="Only comments after this comment (in the given order)."
    )
    afterCommentId = serializers.UUIDField(
        required=False, help_text="The same as `after` (the name Paperclip's CLI sends)."
    )
    order = serializers.ChoiceField(choices=["asc", "desc"], default="asc")
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)

    def validate(self, attrs: dict) -> dict:
        after_comment_id = attrs.pop("afterCommentId", None)
        if after_comment_id is not None:
            if attrs.get("after", after_comment_id) != after_comment_id:
                raise serializers.ValidationError(
                    {"afterCommentId": ["Differs from `after`; send one of them."]}
                )
            attrs["after"] = after_comment_id
        return attrs


class CommentCursorSerializer(serializers.Serializer):
    totalComments = serializers.IntegerField()
    latestCommentId = serializers.UUIDField(allow_null=True)
    latestCommentAt = serializers.DateTimeField(allow_null=True)


class HeartbeatContextSerializer(serializers.Serializer):
    issue = IssueCompactSerializer()
    description = serializers.CharField(allow_null=True)
    ancestors = IssueCompactSerializer(many=True)
    commentCursor = CommentCursorSerializer()
    wakeComment = CommentSerializer(allow_null=True)


class HeartbeatContextQuerySerializer(serializers.Serializer):
    wakeCommentId = serializers.UUIDField(required=False)
