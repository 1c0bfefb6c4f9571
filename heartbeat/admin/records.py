"""What the engine writes about runs: their events, the wakes that asked for them, their costs."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q

from heartbeat.models import AgentWakeupRequest, CostEvent, HeartbeatRun, HeartbeatRunEvent
from paperclip.admin import (
    BigTableAdmin,
    MachineOwnedAdmin,
    admin_link,
    as_uuid,
    choices_filter,
    short_id,
)


@admin.register(HeartbeatRunEvent)
class HeartbeatRunEventAdmin(BigTableAdmin, MachineOwnedAdmin):
    list_display = ["created_at", "run_link", "seq", "event_type", "level", "message", "agent"]
    list_filter = [
        "level",
        choices_filter("event_type", "event type", HeartbeatRunEvent.EventType.choices),
        "company",
    ]
    list_select_related = ["agent"]
    search_fields = ["message"]
    search_help_text = "Run id or message text."
    ordering = ["-created_at"]

    def get_search_results(self, request, queryset, search_term):
        run_id = as_uuid(search_term)
        if run_id is not None:
            return queryset.filter(run_id=run_id), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="run")
    def run_link(self, obj: HeartbeatRunEvent) -> str:
        return admin_link(None, short_id(obj.run_id), pk=obj.run_id, model=HeartbeatRun)


@admin.register(AgentWakeupRequest)
class AgentWakeupRequestAdmin(BigTableAdmin, MachineOwnedAdmin):
    list_display = [
        "requested_at",
        "agent",
        "source",
        "reason",
        "status",
        "coalesced_count",
        "run_link",
        "issue_id",
    ]
    list_filter = ["status", "source", "company"]
    list_select_related = ["agent"]
    search_fields = ["agent__name", "reason"]
    search_help_text = "Wake, agent, run or issue id; agent name; reason."
    ordering = ["-requested_at"]
    readonly_fields = ["run_link"]

    def get_search_results(self, request, queryset, search_term):
        as_id = as_uuid(search_term)
        if as_id is not None:
            return (
                queryset.filter(
                    Q(pk=as_id)
                    | Q(agent_id=as_id)
                    | Q(run_id=as_id)
                    | Q(payload__issueId=str(as_id))
                ),
                False,
            )
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="run")
    def run_link(self, obj: AgentWakeupRequest) -> str:
        if not obj.run_id:
            return "-"
        return admin_link(None, short_id(obj.run_id), pk=obj.run_id, model=HeartbeatRun)

    @admin.display(description="issue id")
    def issue_id(self, obj: AgentWakeupRequest) -> str:
        return short_id((obj.payload or {}).get("issueId"))


@admin.register(CostEvent)
class CostEventAdmin(BigTableAdmin, MachineOwnedAdmin):
    """What each run used and cost; written once when the run is finalized."""

    list_display = [
        "occurred_at",
        "agent",
        "run_link",
        "model",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "cost_usd",
        "cost_cents",
    ]
    list_select_related = ["agent"]
    list_filter = ["provider", "month", "company"]
    search_fields = ["agent__name", "model"]
    date_hierarchy = "occurred_at"

    @admin.display(description="run")
    def run_link(self, obj: CostEvent) -> str:
        return admin_link(None, short_id(obj.run_id), pk=obj.run_id, model=HeartbeatRun)
