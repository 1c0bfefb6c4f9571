"""The core app's admin: companies, memberships, board tokens, the activity log, skills."""

from __future__ import annotations

from django.apps import apps
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from paperclip.admin.display import admin_link, as_uuid, changelist_link, choices_filter, short_id
from paperclip.admin.paging import BigTableAdmin
from paperclip.admin.scoping import CompanyScopedAdmin, MachineOwnedAdmin, board_company_ids
from paperclip.admin.service_backed import (
    CredentialAdmin,
    ServiceBackedAdmin,
    actor_of,
    form_changes,
)
from paperclip.models import ActivityLog, BoardApiToken, Company, CompanyMembership, CompanySkill
from paperclip.services import (
    COMPANY_SKILL_EDITABLE_FIELDS,
    CompanyBudgetSpent,
    CompanyDeleteRefused,
    CompanyMembershipError,
    CompanySkillInvalid,
    board_token_create,
    board_token_revoke,
    company_create,
    company_delete,
    company_membership_add,
    company_membership_remove,
    company_membership_role_set,
    company_skill_create,
    company_skill_delete,
    company_skill_update,
    company_update,
)


@admin.register(Company)
class CompanyAdmin(ServiceBackedAdmin, CompanyScopedAdmin):
    company_field = "pk"
    board_may_change = True
    service_errors = (CompanyDeleteRefused, CompanyBudgetSpent)
    editable_fields = (
        "name",
        "description",
        "status",
        "pause_reason",
        "issue_prefix",
        "budget_monthly_cents",
        "require_board_approval_for_new_agents",
        "brand_color",
    )
    list_display = [
        "name",
        "issue_prefix",
        "status",
        "issue_counter",
        "budget_monthly_cents",
        "spent_monthly_cents",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["name", "issue_prefix"]
    readonly_fields = [
        "id",
        "links",
        "issue_counter",
        "spent_monthly_cents",
        "spend_month",
        "paused_at",
        "created_at",
        "updated_at",
    ]

    def get_queryset(self, request):
        queryset = admin.ModelAdmin.get_queryset(self, request)
        ids = board_company_ids(request)
        return queryset if ids is None else queryset.filter(pk__in=ids)

    def save_through_service(self, request, form, obj):
        data = form.cleaned_data
        if obj is None:
            created = company_create(
                name=data["name"],
                issue_prefix=data["issue_prefix"],
                description=data.get("description"),
                require_board_approval_for_new_agents=data["require_board_approval_for_new_agents"],
            )
            created_with = {"name", "issue_prefix", "description"}
            created_with.add("require_board_approval_for_new_agents")
            rest = {
                key: value
                for key, value in form_changes(form, self.editable_fields).items()
                if key not in created_with
            }
            if not rest:
                return created
            return company_update(company=created, changes=rest, **actor_of(request))
        return company_update(
            company=obj, changes=form_changes(form, self.editable_fields), **actor_of(request)
        )

    def delete_through_service(self, request, obj):
        company_delete(company_id=obj.pk, **actor_of(request))

    def get_search_results(self, request, queryset, search_term):
        queryset, duplicates = super().get_search_results(request, queryset, search_term)
        term = as_uuid(search_term)
        if term is not None:
            queryset = queryset | self.get_queryset(request).filter(pk=term)
        return queryset, duplicates

    @admin.display(description="console")
    def links(self, obj: Company) -> str:
        agent = apps.get_model("heartbeat", "Agent")
        run = apps.get_model("heartbeat", "HeartbeatRun")
        issue = apps.get_model("issues", "Issue")
        return format_html(
            '{} · {} · {} · {} · <a href="{}?{}">what is stuck</a>',
            changelist_link(agent, "agents", company__id__exact=obj.pk),
            changelist_link(issue, "issues", company__id__exact=obj.pk),
            changelist_link(run, "runs", company__id__exact=obj.pk),
            changelist_link(ActivityLog, "activity", company__id__exact=obj.pk),
            reverse("heartbeat-dashboard"),
            urlencode({"company": obj.pk}),
        )


@admin.register(CompanyMembership)
class CompanyMembershipAdmin(ServiceBackedAdmin, CompanyScopedAdmin):
    service_errors = (CompanyMembershipError,)
    list_display = ["user", "company", "role", "created_at"]
    list_filter = ["role", "company"]
    list_select_related = ["user", "company"]
    search_fields = ["user__username", "company__name"]
    autocomplete_fields = ["company"]

    def get_readonly_fields(self, request, obj=None):
        # A membership is one user on one board: only its role changes.
        return [] if obj is None else ["company", "user"]

    def save_through_service(self, request, form, obj):
        role = form.cleaned_data["role"]
        if obj is None:
            return company_membership_add(
                company_id=form.cleaned_data["company"].pk,
                user_id=form.cleaned_data["user"].pk,
                role=role,
                **actor_of(request),
            )
        return company_membership_role_set(membership_id=obj.pk, role=role, **actor_of(request))

    def delete_through_service(self, request, obj):
        company_membership_remove(membership_id=obj.pk, **actor_of(request))


@admin.register(BoardApiToken)
class BoardApiTokenAdmin(CredentialAdmin):
    list_display = ["name", "user", "token_prefix", "created_at", "last_used_at", "revoked_at"]
    list_select_related = ["user"]
    search_fields = ["name", "user__username", "token_prefix"]
    readonly_fields = ["token_prefix", "token_hash", "created_at", "last_used_at"]
    usage = (
        "A board API token of yours: send it as `Authorization: Bearer <token>`, or give it to "
        "the paperclipai CLI as PAPERCLIP_API_KEY. It works until revoked here."
    )

    def get_fields(self, request, obj=None):
        # A new token is always the creating user's own.
        return ["name"] if obj is None else super().get_fields(request, obj)

    def save_through_service(self, request, form, obj):
        token, form.secret = board_token_create(
            user_id=request.user.pk, name=form.cleaned_data["name"]
        )
        return token

    def credential_revoke(self, request, credential):
        board_token_revoke(token=credential)


# The entity types the services write, and the admin page each one opens.
_ACTIVITY_ENTITY_MODELS = {
    "company": "paperclip.Company",
    "agent": "heartbeat.Agent",
    "heartbeat_run": "heartbeat.HeartbeatRun",
    "issue": "issues.Issue",
}


@admin.register(ActivityLog)
class ActivityLogAdmin(BigTableAdmin, MachineOwnedAdmin):
    list_display = [
        "created_at",
        "company",
        "actor",
        "action",
        "entity",
        "agent_link",
        "run_link",
    ]
    list_filter = [
        "actor_type",
        choices_filter("entity_type", "entity type", [(t, t) for t in _ACTIVITY_ENTITY_MODELS]),
        "company",
    ]
    list_select_related = ["company", "agent"]
    search_fields = ["action", "entity_id", "actor_id"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "id",
        "company",
        "actor_type",
        "actor_id",
        "action",
        "entity_type",
        "entity_id",
        "agent",
        "run",
        "details",
        "created_at",
    ]

    @admin.display(description="actor")
    def actor(self, obj: ActivityLog) -> str:
        return f"{obj.actor_type}:{obj.actor_id}"

    @admin.display(description="entity")
    def entity(self, obj: ActivityLog) -> str:
        label = f"{obj.entity_type}:{short_id(obj.entity_id)}"
        model_ref = _ACTIVITY_ENTITY_MODELS.get(obj.entity_type)
        if model_ref is None or as_uuid(obj.entity_id) is None:
            return label
        return admin_link(None, label, pk=obj.entity_id, model=apps.get_model(model_ref))

    @admin.display(description="agent")
    def agent_link(self, obj: ActivityLog) -> str:
        return admin_link(obj.agent) if obj.agent_id else "-"

    @admin.display(description="run")
    def run_link(self, obj: ActivityLog) -> str:
        if not obj.run_id:
            return "-"
        run = apps.get_model("heartbeat.HeartbeatRun")
        return admin_link(None, short_id(obj.run_id), pk=obj.run_id, model=run)


@admin.register(CompanySkill)
class CompanySkillAdmin(ServiceBackedAdmin, CompanyScopedAdmin):
    board_may_add = True
    board_may_change = True
    service_errors = (CompanySkillInvalid,)
    single_line_fields = ("key", "slug", "name")
    list_display = ["key", "name", "company", "trust_level", "updated_at"]
    list_filter = ["trust_level", "company"]
    list_select_related = ["company"]
    search_fields = ["key", "name", "slug"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["company"]

    def save_through_service(self, request, form, obj):
        if obj is None:
            data = form.cleaned_data
            return company_skill_create(
                company_id=data["company"].pk,
                fields={name: data[name] for name in COMPANY_SKILL_EDITABLE_FIELDS if name in data},
                **actor_of(request),
            )
        return company_skill_update(
            skill_id=obj.pk,
            changes=form_changes(form, COMPANY_SKILL_EDITABLE_FIELDS),
            **actor_of(request),
        )

    def delete_through_service(self, request, obj):
        company_skill_delete(skill_id=obj.pk, **actor_of(request))
