from django.contrib import admin

from paperclip.models import ActivityLog, BoardApiToken, Company, CompanyMembership, CompanySkill


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = ["name", "issue_prefix", "status", "issue_counter", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "issue_prefix", "id"]
    readonly_fields = ["issue_counter", "created_at", "updated_at"]


@admin.register(CompanyMembership)
class CompanyMembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "company", "role", "created_at"]
    list_filter = ["role", "company"]
    list_select_related = ["user", "company"]
    search_fields = ["user__username", "company__name"]
    autocomplete_fields = ["company"]


@admin.register(BoardApiToken)
class BoardApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "token_prefix", "created_at", "last_used_at", "revoked_at"]
    list_select_related = ["user"]
    search_fields = ["name", "user__username", "token_prefix"]
    readonly_fields = ["token_prefix", "token_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request):
        # Tokens are shown once at creation through the API; the admin cannot show one.
        return False


@admin.register(ActivityLog)
class ActivityLogAdmin(admin.ModelAdmin):
    list_display = ["created_at", "company", "actor_type", "actor_id", "action", "entity_type"]
    list_filter = ["action", "actor_type", "entity_type", "company"]
    list_select_related = ["company"]
    search_fields = ["action", "entity_id", "actor_id", "id"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(CompanySkill)
class CompanySkillAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "company", "trust_level", "updated_at"]
    list_filter = ["trust_level", "company"]
    list_select_related = ["company"]
    search_fields = ["key", "name", "slug"]
