"""The operator console for issues: who holds an issue, which runs worked on it, and why it is
blocked. Runs are heartbeat's; this app reaches them through string model references only."""

from __future__ import annotations

from django.apps import apps
from django.contrib import admin, messages
from django.utils.html import format_html

from issues.models import Issue, IssueComment
from issues.services import (
    IssueError,
    issue_create,
    issue_delete,
    issue_release,
    issue_update,
)
from paperclip.admin import (
    CompanyScopedAdmin,
    MachineOwnedAdmin,
    ServiceBackedAdmin,
    actor_of,
    admin_link,
    age_of,
    as_uuid,
    changelist_link,
    form_changes,
    short_id,
)
from paperclip.models import ActivityLog


def _run_model():
    return apps.get_model("heartbeat", "HeartbeatRun")


class IssueAttentionFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return [
            ("stranded", "stranded (assigned, no live run)"),
            ("escalated", "escalated (blocked with a system comment)"),
            ("locked", "execution lock held"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "stranded":
            return queryset.stranded()
        if self.value() == "escalated":
            return queryset.escalated()
        if self.value() == "locked":
            return queryset.filter(execution_run__isnull=False)
        return queryset


class IssueCommentInline(admin.TabularInline):
    model = IssueComment
    extra = 0
    fields = ["created_at", "author", "body", "run"]
    readonly_fields = fields
    ordering = ["created_at"]
    can_delete = False

    def has_add_permission(self, request, obj=None):
        # Comments go through the API's comment service: a comment wakes the assignee.
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("author_agent")

    @admin.display(description="author")
    def author(self, obj: IssueComment) -> str:
        if obj.author_agent_id:
            return admin_link(obj.author_agent)
        return obj.author_user_id or "system"

    @admin.display(description="run")
    def run(self, obj: IssueComment) -> str:
        if not obj.created_by_run_id:
            return "-"
        return admin_link(
            None, short_id(obj.created_by_run_id), pk=obj.created_by_run_id, model=_run_model()
        )


@admin.register(Issue)
class IssueAdmin(ServiceBackedAdmin, CompanyScopedAdmin):
    board_may_add = True
    board_may_change = True
    list_display = [
        "identifier",
        "title",
        "status",
        "priority",
        "assignee",
        "execution",
        "lock_age",
        "updated_at",
    ]
    list_display_links = ["identifier", "title"]
    list_filter = [IssueAttentionFilter, "status", "priority", "company"]
    list_select_related = ["company", "assignee_agent", "execution_run"]
    search_fields = ["identifier", "title"]
    search_help_text = "Issue id, identifier or title."
    raw_id_fields = ["assignee_agent", "parent"]
    inlines = [IssueCommentInline]
    service_errors = (IssueError, Issue.DoesNotExist)
    form_fields = ("title", "description", "status", "priority", "assignee_agent")
    form_fields += ("assignee_user_id", "parent")
    # The run engine and the checkout service own the locks; numbers come from the company.
    machine_owned_fields = [
        "id",
        "links",
        "issue_number",
        "identifier",
        "checkout_run_link",
        "execution_run_link",
        "execution_agent_name_key",
        "execution_locked_at",
        "started_at",
        "completed_at",
        "cancelled_at",
        "origin_kind",
        "origin_id",
        "origin_run_id",
        "created_by_agent",
        "created_by_user_id",
        "request_depth",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "company",
                    "title",
                    "description",
                    "status",
                    "priority",
                    "assignee_agent",
                    "assignee_user_id",
                    "parent",
                ]
            },
        ),
        (
            "Execution",
            {
                "fields": [
                    "links",
                    "checkout_run_link",
                    "execution_run_link",
                    "execution_agent_name_key",
                    "execution_locked_at",
                ]
            },
        ),
        (
            "Record",
            {
                "classes": ["collapse"],
                "fields": [
                    "id",
                    "issue_number",
                    "identifier",
                    "started_at",
                    "completed_at",
                    "cancelled_at",
                    "origin_kind",
                    "origin_id",
                    "origin_run_id",
                    "created_by_agent",
                    "created_by_user_id",
                    "request_depth",
                    "created_at",
                    "updated_at",
                ],
            },
        ),
    ]

    actions = ["release_issues"]

    @admin.action(
        description="Release selected issues (back to todo, unassigned, checkout dropped)",
        permissions=["operate"],
    )
    def release_issues(self, request, queryset):
        released = []
        for issue in queryset.select_related(None).only("pk", "company_id", "identifier"):
            try:
                issue_release(
                    issue_id=issue.pk,
                    company_id=issue.company_id,
                    actor_type="user",
                    actor_id=str(request.user.pk),
                )
            except (IssueError, Issue.DoesNotExist) as exc:
                self.message_user(request, f"{issue.identifier}: {exc}", messages.ERROR)
                continue
            released.append(issue.identifier)
        if released:
            self.message_user(
                request,
                f"Released {len(released)} issue(s): {', '.join(released)}. A run still "
                "executing one keeps its execution lock until it finishes.",
                messages.SUCCESS,
            )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.machine_owned_fields
        return [*self.machine_owned_fields, "company"]

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.fieldsets[:1]
        return self.fieldsets

    def get_search_results(self, request, queryset, search_term):
        as_id = as_uuid(search_term)
        if as_id is not None:
            return queryset.filter(pk=as_id), False
        return super().get_search_results(request, queryset, search_term)

    def save_through_service(self, request, form, obj):
        # Status and assignee changes release run locks and wake the assignee: the services do.
        if obj is None:
            data = form.cleaned_data
            return issue_create(
                company_id=data["company"].pk,
                title=data["title"],
                description=data.get("description"),
                status=data["status"],
                priority=data["priority"],
                assignee_agent_id=_pk(data.get("assignee_agent")),
                assignee_user_id=data.get("assignee_user_id") or None,
                parent_id=_pk(data.get("parent")),
                created_by_user_id=str(request.user.pk),
                wake_assignee=True,
                **actor_of(request),
            )
        changes = form_changes(form, self.form_fields)
        return issue_update(
            issue_id=obj.pk, company_id=obj.company_id, changes=changes, **actor_of(request)
        ).issue

    # Deletes go through issue_delete, as the API's do: it refuses an issue a run is executing
    # and records the deletion; the admin's own delete did neither.
    def delete_through_service(self, request, obj):
        issue_delete(issue_id=obj.pk, company_id=obj.company_id, **actor_of(request))

    @admin.display(description="assignee", ordering="assignee_agent__name")
    def assignee(self, obj: Issue) -> str:
        if obj.assignee_agent_id:
            return admin_link(obj.assignee_agent)
        return obj.assignee_user_id or "-"

    @admin.display(description="executing run")
    def execution(self, obj: Issue) -> str:
        run = obj.execution_run
        if run is None:
            return "-"
        return admin_link(run, f"{short_id(run.pk)} ({run.status})")

    @admin.display(description="locked for", ordering="execution_locked_at")
    def lock_age(self, obj: Issue) -> str:
        return age_of(obj.execution_locked_at) if obj.execution_run_id else "-"

    @admin.display(description="checkout run")
    def checkout_run_link(self, obj: Issue) -> str:
        return admin_link(obj.checkout_run) if obj.checkout_run_id else "-"

    @admin.display(description="execution run")
    def execution_run_link(self, obj: Issue) -> str:
        return admin_link(obj.execution_run) if obj.execution_run_id else "-"

    @admin.display(description="console")
    def links(self, obj: Issue) -> str:
        if obj.pk is None:
            return "-"
        return format_html(
            "{} · {} · {}",
            changelist_link(_run_model(), "runs", q=str(obj.pk)),
            changelist_link(IssueComment, "comments", issue=obj.pk),
            changelist_link(ActivityLog, "activity", entity_type="issue", entity_id=obj.pk),
        )


def _pk(obj):
    return obj.pk if obj is not None else None


@admin.register(IssueComment)
class IssueCommentAdmin(MachineOwnedAdmin):
    """Comments are only read here. They are written through the API's comment service (a
    comment wakes the assignee and the agents it mentions) and deleted only by their author,
    leaving a tombstone (issue_comment_delete); the plain admin add, edit and delete did none of
    that, and an operator has no need to write as someone else."""

    list_display = ["created_at", "issue_link", "author", "excerpt", "run"]
    list_select_related = ["issue", "author_agent"]
    list_filter = ["company"]
    search_fields = ["body", "issue__identifier"]
    raw_id_fields = ["issue", "author_agent", "created_by_run"]
    ordering = ["-created_at"]

    @admin.display(description="issue", ordering="issue__identifier")
    def issue_link(self, obj: IssueComment) -> str:
        return admin_link(obj.issue, obj.issue.identifier)

    @admin.display(description="author")
    def author(self, obj: IssueComment) -> str:
        if obj.author_agent_id:
            return admin_link(obj.author_agent)
        return obj.author_user_id or "system"

    @admin.display(description="comment")
    def excerpt(self, obj: IssueComment) -> str:
        if obj.deleted_at is not None:
            return "(deleted by its author)"
        return obj.body if len(obj.body) <= 120 else obj.body[:117] + "..."

    @admin.display(description="run")
    def run(self, obj: IssueComment) -> str:
        if not obj.created_by_run_id:
            return "-"
        return admin_link(
            None, short_id(obj.created_by_run_id), pk=obj.created_by_run_id, model=_run_model()
        )
