"""The operator console's shared pieces (company scoping, the estimating paginator, links) and the
core app's admin.

A board user who is not an instance admin (superuser) sees and acts on the companies they have a
membership in, whatever their Django model permissions say: board membership is the role.
"""

from __future__ import annotations

import json
import uuid

from django import forms
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Model, QuerySet, TextField
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import urlencode

from paperclip.models import ActivityLog, BoardApiToken, Company, CompanyMembership, CompanySkill
from paperclip.services import board_token_create, company_create, company_update

# Below this many rows an exact count is cheap enough; above it the planner's estimate is shown.
_EXACT_COUNT_BELOW = 10_000


# The console is the product's, not a generic Django site.
admin.site.site_header = "Paperclip"
admin.site.site_title = "Paperclip"
admin.site.index_title = "Control plane"


class EstimatedCountPaginator(Paginator):
    """Counts a big result from PostgreSQL's estimates instead of COUNT(*).

    COUNT(*) over hundreds of thousands of runs or events takes a good part of a second on every
    list page (healthchecks' admin has the same paginator for its pings). The whole table is
    estimated from its statistics, a filtered list from the planner's row estimate; when either
    says the result is small, it is counted exactly.
    """

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is None:
            return super().count
        if not query.where:
            estimate = _table_row_estimate(self.object_list.model._meta.db_table)
        else:
            estimate = _planner_row_estimate(self.object_list)
        if estimate >= _EXACT_COUNT_BELOW:
            return estimate
        return super().count


def _table_row_estimate(table: str) -> int:
    """The planner's row estimate for a table; -1 when it has never been analysed."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    return int(row[0]) if row else -1


def _planner_row_estimate(queryset: QuerySet) -> int:
    """How many rows the planner expects the query to return (EXPLAIN, nothing executed)."""
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def board_company_ids(request) -> frozenset[uuid.UUID] | None:
    """The companies a board user may see; None means every company (an instance admin)."""
    user = request.user
    if user.is_active and user.is_superuser:
        return None
    cached = getattr(request, "_board_company_ids", None)
    if cached is None:
        if not (user.is_active and user.is_staff):
            cached = frozenset()
        else:
            cached = frozenset(
                CompanyMembership.objects.filter(user_id=user.pk).values_list(
                    "company_id", flat=True
                )
            )
        request._board_company_ids = cached
    return cached


def admin_link(obj: Model | None, text: str | None = None, *, pk=None, model=None) -> str:
    """An HTML link to an object's admin change page ("-" when there is none)."""
    if obj is None and pk is None:
        return "-"
    model = model or type(obj)
    pk = pk if pk is not None else obj.pk
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, text if text is not None else str(obj))


def changelist_link(model, text: str, **filters) -> str:
    """An HTML link to a model's admin list filtered by `filters`."""
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode(filters), text)


def short_id(value) -> str:
    return str(value)[:8] if value else "-"


def humanize_seconds(seconds: float | None) -> str:
    """A compact duration: 45s, 12m, 3h05m, 2d04h."""
    if seconds is None:
        return "-"
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def age_of(moment) -> str:
    if moment is None:
        return "-"
    return humanize_seconds((timezone.now() - moment).total_seconds())


def _object_company_id(obj: Model, company_field: str):
    value = obj
    for part in company_field.split("__"):
        value = getattr(value, part)
    return value.pk if isinstance(value, Model) else value


class ScopedCompanyListFilter(admin.RelatedFieldListFilter):
    """The company filter lists only the companies the user may see."""

    def field_choices(self, field, request, model_admin):
        companies = Company.objects.order_by("name")
        ids = board_company_ids(request)
        if ids is not None:
            companies = companies.filter(id__in=ids)
        return [(c.pk, str(c)) for c in companies]


def choices_filter(field: str, title: str, choices) -> type[admin.SimpleListFilter]:
    """A list filter with fixed choices: the default one for an unconstrained column runs
    SELECT DISTINCT over the whole table on every list page (0.5 s at a million events)."""

    class ChoicesFilter(admin.SimpleListFilter):
        parameter_name = field

        def lookups(self, request, model_admin):
            return [(value, label) for value, label in choices]

        def queryset(self, request, queryset):
            if self.value():
                return queryset.filter(**{field: self.value()})
            return queryset

    ChoicesFilter.title = title
    return ChoicesFilter


class CompanyScopedAdmin(admin.ModelAdmin):
    """Filters rows, foreign-key choices and permissions by the user's board memberships.

    `company_field` is the lookup path from the model to its company. Rows outside the user's
    companies answer 404, exactly like rows that do not exist.
    """

    company_field = "company"
    # What a board member (not an instance admin) may do on rows of their own companies.
    board_may_add = False
    board_may_change = False
    board_may_delete = False

    def get_queryset(self, request) -> QuerySet:
        queryset = super().get_queryset(request)
        ids = board_company_ids(request)
        if ids is None:
            return queryset
        return queryset.filter(**{f"{self.company_field}__in": ids})

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} with id {object_id!r}")
        return obj

    def _board_allows(self, request, obj, allowed: bool) -> bool:
        ids = board_company_ids(request)
        if not allowed or not ids:
            return False
        return obj is None or _object_company_id(obj, self.company_field) in ids

    def has_module_permission(self, request) -> bool:
        if board_company_ids(request) is None:
            return super().has_module_permission(request)
        return bool(board_company_ids(request))

    def has_view_permission(self, request, obj=None) -> bool:
        if board_company_ids(request) is None:
            return super().has_view_permission(request, obj)
        return self._board_allows(request, obj, True)

    def has_add_permission(self, request) -> bool:
        if board_company_ids(request) is None:
            return super().has_add_permission(request)
        return self._board_allows(request, None, self.board_may_add)

    def has_change_permission(self, request, obj=None) -> bool:
        if board_company_ids(request) is None:
            return super().has_change_permission(request, obj)
        return self._board_allows(request, obj, self.board_may_change)

    def has_delete_permission(self, request, obj=None) -> bool:
        if board_company_ids(request) is None:
            return super().has_delete_permission(request, obj)
        return self._board_allows(request, obj, self.board_may_delete)

    def has_operate_permission(self, request) -> bool:
        """Operator actions (cancel, retry, pause, wake, sweeps): any board member."""
        ids = board_company_ids(request)
        return ids is None or bool(ids)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        # Nullable text columns mean "not set" when null (an assignee_user_id of "" would be a
        # second assignee), so an empty input saves null, as CharField already does.
        if db_field.null and isinstance(db_field, TextField) and hasattr(formfield, "empty_value"):
            formfield.empty_value = None
        return formfield

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        ids = board_company_ids(request)
        if ids is not None and "queryset" not in kwargs:
            related = db_field.related_model
            if related is Company:
                kwargs["queryset"] = Company.objects.filter(id__in=ids)
            elif any(f.name == "company" for f in related._meta.get_fields()):
                kwargs["queryset"] = related._default_manager.filter(company_id__in=ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_list_filter(self, request):
        return [
            (name, ScopedCompanyListFilter) if name == self.company_field else name
            for name in super().get_list_filter(request)
        ]


class ServiceBackedAdmin(admin.ModelAdmin):
    """Saves go through the app's services (activity log, lock release, wakes), not model.save().

    The service runs once the form (and the model's constraints) validated, inside the admin's
    transaction; a domain error it raises shows on the form like any validation error instead of
    a server error, and its own transaction has rolled back.
    """

    # Domain errors of the services, shown as form errors.
    service_errors: tuple[type[Exception], ...] = ()
    # Text columns that hold one line (names, titles): a text input, not a 10-row box.
    single_line_fields: tuple[str, ...] = ("name", "title")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name in self.single_line_fields:
            kwargs["widget"] = forms.TextInput(attrs={"class": "vTextField"})
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def save_through_service(self, request, form, obj: Model | None) -> Model:
        """Create (obj None) or change the object with the form's cleaned data; return it."""
        raise NotImplementedError

    def get_form(self, request, obj=None, change=False, **kwargs):
        base = super().get_form(request, obj, change=change, **kwargs)
        model_admin = self

        class ServiceForm(base):
            def _post_clean(self):
                super()._post_clean()
                if self.errors:
                    return
                try:
                    self.service_result = model_admin.save_through_service(request, self, obj)
                except model_admin.service_errors as exc:
                    self.add_error(None, str(exc))

        return ServiceForm

    def save_model(self, request, obj, form, change):
        saved = form.service_result
        for field in obj._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state = saved._state


class CredentialAdmin(ServiceBackedAdmin):
    """Credentials are made by their service, and the secret is shown once, on the page that
    answers the creation: only its hash is stored, and it never goes into a message (messages
    travel back in a cookie or sit in the session)."""

    # What the created credential is for and how to use it, shown beside the secret.
    usage = ""

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        obj.secret_shown_once = form.secret

    def response_add(self, request, obj, post_url_continue=None):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{self.opts.verbose_name.capitalize()} created",
            "credential": obj,
            "secret": obj.secret_shown_once,
            "usage": self.usage,
        }
        return TemplateResponse(request, "admin/credential_created.html", context)


def form_changes(form, fields) -> dict:
    """The changed form fields among `fields`, keyed by attname (`assignee_agent_id`)."""
    changes = {}
    for name in form.changed_data:
        if name not in fields:
            continue
        field = form._meta.model._meta.get_field(name)
        value = form.cleaned_data[name]
        if field.is_relation:
            changes[field.attname] = value.pk if value is not None else None
        else:
            changes[field.attname] = value
    return changes


def actor_of(request) -> dict:
    return {"actor_type": "user", "actor_id": str(request.user.pk)}


class MachineOwnedAdmin(CompanyScopedAdmin):
    """Rows written only by the engine and the sweeps: never added or edited by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class BigTableAdmin(admin.ModelAdmin):
    """Large, append-mostly tables: estimated counts and no full-table count per page."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    # Facet counts are one COUNT per filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER


class PrefetchingChangeList(ChangeList):
    """Lets an admin batch-load what its columns need for one page, in a fixed query count."""

    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        self.model_admin.prefetch_for_page(request, self.result_list)


@admin.register(Company)
class CompanyAdmin(ServiceBackedAdmin, CompanyScopedAdmin):
    company_field = "pk"
    board_may_change = True
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


def as_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term.strip())
    except (ValueError, AttributeError):
        return None


@admin.register(CompanyMembership)
class CompanyMembershipAdmin(CompanyScopedAdmin):
    list_display = ["user", "company", "role", "created_at"]
    list_filter = ["role", "company"]
    list_select_related = ["user", "company"]
    search_fields = ["user__username", "company__name"]
    autocomplete_fields = ["company"]


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
class CompanySkillAdmin(CompanyScopedAdmin):
    board_may_add = True
    board_may_change = True
    list_display = ["key", "name", "company", "trust_level", "updated_at"]
    list_filter = ["trust_level", "company"]
    list_select_related = ["company"]
    search_fields = ["key", "name", "slug"]
