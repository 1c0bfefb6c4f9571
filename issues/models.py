import uuid
from typing import Self

from django.apps import apps
from django.db import models
from django.db.models import Exists, OuterRef, Q, TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from paperclip.models import Company


class IssueStatus(models.TextChoices):
    BACKLOG = "backlog"
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    IN_REVIEW = "in_review"
    BLOCKED = "blocked"
    DONE = "done"
    CANCELLED = "cancelled"


class IssuePriority(models.TextChoices):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class IssueQuerySet(models.QuerySet):
    def stranded(self) -> Self:
        """Assigned to an agent, todo or in progress, and no live execution path: no queued or
        running run for it (its execution lock included) and no wake waiting to become one.
        Issues of a paused company wait for it. These are the reconciler's candidates (reference
        section 5); the reconciler selects the same rows a locked page at a time, set-based
        (heartbeat/services/reconciler.py: issues_stranded)."""
        # Runs and wakes are heartbeat's: reached by model name, never imported (layering).
        runs = apps.get_model("heartbeat", "HeartbeatRun").objects.active()
        wakes = apps.get_model("heartbeat", "AgentWakeupRequest").objects.waiting()
        issue_key = Cast(OuterRef("pk"), TextField())
        live_run = runs.alias(issue_key=KT("context_snapshot__issueId")).filter(issue_key=issue_key)
        waiting_wake = wakes.alias(issue_key=KT("payload__issueId")).filter(issue_key=issue_key)
        executing = runs.filter(pk=OuterRef("execution_run_id"))
        return self.filter(
            Q(assignee_agent__isnull=False, assignee_user_id__isnull=True)
            & Q(status__in=(IssueStatus.TODO, IssueStatus.IN_PROGRESS))
            & ~Q(company__status=Company.Status.PAUSED)
            & ~Exists(executing)
            & ~Exists(live_run)
            & ~Exists(waiting_wake)
        )

    def escalated(self) -> Self:
        """Blocked with a comment from no author: the reconciler's escalation note."""
        system_comment = IssueComment.objects.filter(
            issue=OuterRef("pk"), author_agent__isnull=True, author_user_id__isnull=True
        )
        return self.filter(Q(status=IssueStatus.BLOCKED) & Exists(system_comment))


class Issue(models.Model):
    Status = IssueStatus
    Priority = IssuePriority

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: the composite indexes that start with it serve its lookups.
    company = models.ForeignKey(
        "paperclip.Company", on_delete=models.CASCADE, related_name="issues", db_index=False
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    title = models.TextField()
    description = models.TextField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BACKLOG)
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.MEDIUM)
    assignee_agent = models.ForeignKey(
        "heartbeat.Agent",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="assigned_issues",
    )
    assignee_user_id = models.TextField(null=True, blank=True)
    # The run locks: checkout_run is who checked the issue out; execution_run is the run that
    # currently executes it (stamped at claim, moved to a retry, released at finish).
    checkout_run = models.ForeignKey(
        "heartbeat.HeartbeatRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="checked_out_issues",
    )
    execution_run = models.ForeignKey(
        "heartbeat.HeartbeatRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="executing_issues",
    )
    execution_agent_name_key = models.TextField(null=True, blank=True)
    execution_locked_at = models.DateTimeField(null=True, blank=True)
    issue_number = models.IntegerField()
    identifier = models.CharField(max_length=64, unique=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    hidden_at = models.DateTimeField(null=True, blank=True)
    origin_kind = models.TextField(default="manual")
    origin_id = models.TextField(null=True, blank=True)
    origin_run_id = models.UUIDField(null=True, blank=True)
    created_by_agent = models.ForeignKey(
        "heartbeat.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_user_id = models.TextField(null=True, blank=True)
    request_depth = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = IssueQuerySet.as_manager()

    class Meta:
        # company_id, not company: ordering through the relation joins paperclip_company, and a
        # `select_for_update().first()` on an issue then also locked its company's row, which
        # serialised every issue write of a company (and issue creation's counter update).
        ordering = ["company_id", "issue_number"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=IssueStatus.values), name="issue_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(priority__in=IssuePriority.values), name="issue_priority_valid"
            ),
            models.CheckConstraint(
                condition=Q(assignee_agent__isnull=True) | Q(assignee_user_id__isnull=True),
                name="issue_single_assignee",
                violation_error_message="Issue can only have one assignee",
            ),
            models.CheckConstraint(
                condition=~Q(status="in_progress")
                | Q(assignee_agent__isnull=False)
                | Q(assignee_user_id__isnull=False),
                name="issue_in_progress_has_assignee",
                violation_error_message="An in_progress issue needs an assignee",
            ),
            models.UniqueConstraint(
                fields=["company", "issue_number"], name="issue_company_number_uniq"
            ),
        ]
        indexes = [
            models.Index(fields=["company", "status"], name="issue_company_status_idx"),
            # The reconciler's and inbox's query: an agent's open assigned issues.
            models.Index(
                fields=["company", "assignee_agent", "status"], name="issue_company_agent_st_idx"
            ),
            models.Index(
                fields=["company", "assignee_user_id", "status"], name="issue_company_user_st_idx"
            ),
            models.Index(fields=["company", "parent"], name="issue_company_parent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.identifier} {self.title}"


class IssueComment(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    company = models.ForeignKey("paperclip.Company", on_delete=models.CASCADE, related_name="+")
    issue = models.ForeignKey(Issue, on_delete=models.CASCADE, related_name="comments")
    # Both authors null means a system comment (the reconciler's escalation note).
    author_agent = models.ForeignKey(
        "heartbeat.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    author_user_id = models.TextField(null=True, blank=True)
    created_by_run = models.ForeignKey(
        "heartbeat.HeartbeatRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="comments",
    )
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # A deleted comment stays in the thread as a tombstone (empty body), as in Paperclip, so
    # cursors and wake references to it keep working; these say when and by whom.
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by_agent = models.ForeignKey(
        "heartbeat.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    deleted_by_user_id = models.TextField(null=True, blank=True)
    deleted_by_run = models.ForeignKey(
        "heartbeat.HeartbeatRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["company", "issue", "created_at"], name="comment_company_issue_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"comment on {self.issue_id}"
