"""Agents and what belongs to each: state, keys, task sessions; pause, resume and wake them."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.html import format_html

from heartbeat.forms import AgentAdminForm
from heartbeat.models import (
    ACTIVE_RUN_STATUSES,
    Agent,
    AgentApiKey,
    AgentRuntimeState,
    AgentTaskSession,
    AgentWakeupRequest,
    HeartbeatRun,
)
from heartbeat.services import AgentNotFound, AgentNotInvokable, agent_invoke, agent_session_reset
from heartbeat.services.agents import (
    AGENT_EDITABLE_FIELDS,
    AgentError,
    agent_create,
    agent_delete,
    agent_key_create,
    agent_key_revoke,
    agent_pause,
    agent_resume,
    agent_update,
)
from issues.models import Issue
from paperclip.admin import (
    CompanyScopedAdmin,
    CredentialAdmin,
    MachineOwnedAdmin,
    ServiceBackedAdmin,
    actor_of,
    admin_link,
    as_uuid,
    changelist_link,
    form_changes,
    short_id,
)
from paperclip.models import spend_month_of


def wake_message(agent: Agent, result, *, retry_of: HeartbeatRun | None = None) -> str:
    subject = (
        f"Run {short_id(retry_of.pk)}: agent {agent.name}" if retry_of else f"Agent {agent.name}"
    )
    if result.run is not None and result.outcome == "queued":
        return f"{subject} woken: run {short_id(result.run.pk)} queued."
    if result.run is not None:
        return (
            f"{subject}: the wake joined active run {short_id(result.run.pk)} ({result.outcome})."
        )
    return f"{subject}: wake {result.outcome} ({result.wakeup.reason or result.wakeup.status})."


@admin.register(AgentRuntimeState)
class AgentRuntimeStateAdmin(MachineOwnedAdmin):
    list_display = [
        "agent",
        "company",
        "adapter_type",
        "last_run",
        "last_run_status",
        "total_cost_cents",
        "updated_at",
    ]
    list_select_related = ["agent", "company"]
    list_filter = ["last_run_status", "company"]
    search_fields = ["agent__name"]

    @admin.display(description="last run")
    def last_run(self, obj: AgentRuntimeState) -> str:
        if not obj.last_run_id:
            return "-"
        return admin_link(None, short_id(obj.last_run_id), pk=obj.last_run_id, model=HeartbeatRun)


@admin.register(Agent)
class AgentAdmin(ServiceBackedAdmin, CompanyScopedAdmin):
    form = AgentAdminForm
    board_may_add = True
    board_may_change = True
    service_errors = (AgentError,)
    list_display = [
        "name",
        "company",
        "role",
        "status",
        "adapter_type",
        "active_runs",
        "last_run",
        "month_spend",
        "last_heartbeat_at",
    ]
    list_filter = ["status", "role", "adapter_type", "company"]
    list_select_related = ["company", "runtime_state"]
    search_fields = ["name"]
    search_help_text = "Agent id or name."
    raw_id_fields = ["reports_to"]
    # The engine and the agent services own these: status changes go through pause / resume.
    readonly_fields = [
        "id",
        "links",
        "status",
        "pause_reason",
        "paused_at",
        "last_heartbeat_at",
        "spent_monthly_cents",
        "spend_month",
        "permissions",
        "created_at",
        "updated_at",
    ]
    form_fields = (*(f.removesuffix("_id") for f in AGENT_EDITABLE_FIELDS),)

    actions = ["wake_agents", "pause_agents", "resume_agents"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.readonly_fields
        return [*self.readonly_fields, "company"]

    def save_through_service(self, request, form, obj):
        changes = form_changes(form, self.form_fields)
        if obj is None:
            changes.pop("name", None)
            return agent_create(
                company_id=form.cleaned_data["company"].pk,
                name=form.cleaned_data["name"],
                fields=changes,
                **actor_of(request),
            )
        return agent_update(agent_id=obj.pk, changes=changes, **actor_of(request))

    def delete_through_service(self, request, obj):
        agent_delete(agent_id=obj.pk, **actor_of(request))

    @admin.action(
        description="Pause selected agents (cancels their active runs)", permissions=["operate"]
    )
    def pause_agents(self, request, queryset):
        for agent in queryset:
            try:
                change = agent_pause(
                    agent_id=agent.pk,
                    reason=f"Paused by board user {request.user}",
                    actor_type="user",
                    actor_id=str(request.user.pk),
                )
            except AgentError as exc:
                self.message_user(request, f"Agent {agent.name}: {exc}", messages.ERROR)
                continue
            self.message_user(
                request,
                f"Paused agent {agent.name}; cancelled {len(change.cancelled_run_ids)} active "
                "run(s).",
                messages.SUCCESS,
            )

    @admin.action(description="Resume selected paused agents", permissions=["operate"])
    def resume_agents(self, request, queryset):
        for agent in queryset:
            try:
                agent_resume(agent_id=agent.pk, actor_type="user", actor_id=str(request.user.pk))
            except AgentError as exc:
                self.message_user(request, f"Agent {agent.name}: {exc}", messages.WARNING)
                continue
            self.message_user(
                request,
                f"Resumed agent {agent.name}: runs queued for it start now.",
                messages.SUCCESS,
            )

    @admin.action(description="Wake selected agents now (on demand)", permissions=["operate"])
    def wake_agents(self, request, queryset):
        for agent in queryset:
            try:
                result = agent_invoke(
                    agent_id=agent.pk,
                    trigger_detail="manual",
                    reason="board_wake",
                    via="admin",
                    **actor_of(request),
                )
            except (AgentNotInvokable, AgentNotFound) as exc:
                self.message_user(
                    request, f"Agent {agent.name} cannot be woken ({exc}).", messages.ERROR
                )
                continue
            self.message_user(request, wake_message(agent, result), messages.SUCCESS)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                active_run_count=Coalesce(
                    Subquery(
                        HeartbeatRun.objects.filter(
                            agent=OuterRef("pk"), status__in=ACTIVE_RUN_STATUSES
                        )
                        .values("agent")
                        .annotate(n=Count("pk"))
                        .values("n")
                    ),
                    0,
                )
            )
        )

    def get_search_results(self, request, queryset, search_term):
        as_id = as_uuid(search_term)
        if as_id is not None:
            return queryset.filter(pk=as_id), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="active runs", ordering="active_run_count")
    def active_runs(self, obj: Agent) -> str:
        return changelist_link(
            HeartbeatRun,
            str(obj.active_run_count),
            agent=obj.pk,
            status__in="queued,running",
        )

    @admin.display(description="spent this month", ordering="spent_monthly_cents")
    def month_spend(self, obj: Agent) -> str:
        spent = obj.monthly_spend_cents(spend_month_of(timezone.now()))
        if obj.budget_monthly_cents <= 0:
            return f"{spent} cents"
        text = f"{spent} of {obj.budget_monthly_cents} cents"
        if obj.is_budget_paused:
            return format_html('<span class="pc-warn">{} (paused: budget)</span>', text)
        return text

    @admin.display(description="last run")
    def last_run(self, obj: Agent) -> str:
        state = getattr(obj, "runtime_state", None) if _has_runtime_state(obj) else None
        if state is None or not state.last_run_id:
            return "-"
        return admin_link(
            None,
            f"{short_id(state.last_run_id)} ({state.last_run_status})",
            pk=state.last_run_id,
            model=HeartbeatRun,
        )

    @admin.display(description="console")
    def links(self, obj: Agent) -> str:
        runtime = (
            admin_link(obj.runtime_state, "runtime state")
            if _has_runtime_state(obj)
            else "no runtime state"
        )
        return format_html(
            "{} · {} · {} · {}",
            changelist_link(HeartbeatRun, "runs", agent=obj.pk),
            changelist_link(AgentWakeupRequest, "wakes", agent=obj.pk),
            changelist_link(Issue, "assigned issues", assignee_agent=obj.pk),
            runtime,
        )


def _has_runtime_state(agent: Agent) -> bool:
    try:
        return agent.runtime_state is not None
    except AgentRuntimeState.DoesNotExist:
        return False


@admin.register(AgentApiKey)
class AgentApiKeyAdmin(CredentialAdmin, CompanyScopedAdmin):
    board_may_add = True
    service_errors = (AgentError,)
    list_display = ["name", "agent", "key_prefix", "created_at", "last_used_at", "revoked_at"]
    list_select_related = ["agent"]
    list_filter = ["company"]
    search_fields = ["name", "agent__name", "key_prefix"]
    readonly_fields = ["key_prefix", "key_hash", "created_at", "last_used_at"]
    usage = (
        "An API key of the agent for work outside its runs (each run gets a key of its own in "
        "PAPERCLIP_API_KEY): send it as `Authorization: Bearer <key>`. It works until revoked "
        "here."
    )

    def get_fields(self, request, obj=None):
        return ["agent", "name"] if obj is None else super().get_fields(request, obj)

    def save_through_service(self, request, form, obj):
        created = agent_key_create(
            agent_id=form.cleaned_data["agent"].pk,
            name=form.cleaned_data["name"],
            **actor_of(request),
        )
        form.secret = created.secret
        return created.key

    def credential_revoke(self, request, credential):
        agent_key_revoke(agent_id=credential.agent_id, key_id=credential.pk, **actor_of(request))


@admin.register(AgentTaskSession)
class AgentTaskSessionAdmin(MachineOwnedAdmin):
    """Each agent's CLI session per task: the next run on the task resumes it."""

    list_display = ["agent", "task_key", "adapter_type", "session_id", "last_run", "updated_at"]
    list_select_related = ["agent"]
    list_filter = ["adapter_type", "company"]
    search_fields = ["agent__name", "task_key", "session_id"]
    actions = ["reset_sessions"]

    @admin.display(description="last run")
    def last_run(self, obj: AgentTaskSession) -> str:
        if not obj.last_run_id:
            return "-"
        return admin_link(None, short_id(obj.last_run_id), pk=obj.last_run_id, model=HeartbeatRun)

    @admin.action(
        description="Reset selected sessions (the next run on the task starts fresh)",
        permissions=["operate"],
    )
    def reset_sessions(self, request, queryset):
        for session in queryset.select_related("agent"):
            agent_session_reset(
                agent_id=session.agent_id, task_key=session.task_key, **actor_of(request)
            )
        self.message_user(request, "Reset the selected sessions.", messages.SUCCESS)
