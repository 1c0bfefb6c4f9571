from django.contrib import admin

from issues.models import Issue, IssueComment


class IssueCommentInline(admin.TabularInline):
    model = IssueComment
    extra = 0
    fields = ["created_at", "author_agent", "author_user_id", "body"]
    readonly_fields = ["created_at", "author_agent"]


@admin.register(Issue)
class IssueAdmin(admin.ModelAdmin):
    list_display = [
        "identifier",
        "title",
        "status",
        "priority",
        "assignee_agent",
        "execution_run",
        "updated_at",
    ]
    list_filter = ["status", "priority", "company"]
    list_select_related = ["company", "assignee_agent"]
    search_fields = ["identifier", "title", "id"]
    raw_id_fields = [
        "assignee_agent",
        "checkout_run",
        "execution_run",
        "parent",
        "created_by_agent",
    ]
    readonly_fields = ["issue_number", "identifier", "created_at", "updated_at"]
    inlines = [IssueCommentInline]


@admin.register(IssueComment)
class IssueCommentAdmin(admin.ModelAdmin):
    list_display = ["issue", "author_agent", "author_user_id", "created_at"]
    list_select_related = ["issue", "author_agent"]
    search_fields = ["body", "issue__identifier"]
    raw_id_fields = ["issue", "author_agent", "created_by_run"]
