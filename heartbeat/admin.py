from django.contrib import admin

from heartbeat.models import (
    Agent,
    AgentApiKey,
    AgentRuntimeState,
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
)


class MachineOwnedAdmin(admin.ModelAdmin):
    """Rows written only by the engine and the sweeps: never added or edited by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "company", "role", "status", "adapter_type", "last_heartbeat_at"]
    list_filter = ["status", "role", "adapter_type", "company"]
    list_select_related = ["company"]
    search_fields = ["name", "id"]
    raw_id_fields = ["reports_to"]
    readonly_fields = ["last_heartbeat_at", "created_at", "updated_at"]


@admin.register(AgentApiKey)
class AgentApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "agent", "key_prefix", "created_at", "last_used_at", "revoked_at"]
    list_select_related = ["agent"]
    search_fields = ["name", "agent__name", "key_prefix"]
    readonly_fields = ["key_prefix", "key_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request):
        return False


@admin.register(AgentRuntimeState)
class AgentRuntimeStateAdmin(MachineOwnedAdmin):
    list_display = ["agent", "company", "adapter_type", "last_run_status", "updated_at"]
    list_select_related = ["agent", "company"]
    search_fields = ["agent__name"]


@admin.register(AgentWakeupRequest)
class AgentWakeupRequestAdmin(MachineOwnedAdmin):
    list_display = ["requested_at", "agent", "source", "reason", "status", "coalesced_count", "run"]
    list_filter = ["status", "source", "company"]
    list_select_related = ["agent", "run"]
    search_fields = ["id", "agent__name", "reason"]
    show_full_result_count = False


@admin.register(HeartbeatRun)
class HeartbeatRunAdmin(MachineOwnedAdmin):
    list_display = [
        "id",
        "agent",
        "status",
        "error_code",
        "invocation_source",
        "process_pid",
        "process_host",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "error_code", "invocation_source", "process_host", "company"]
    list_select_related = ["agent"]
    search_fields = ["id", "agent__name"]
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(HeartbeatRunEvent)
class HeartbeatRunEventAdmin(MachineOwnedAdmin):
    list_display = ["run", "seq", "event_type", "level", "message", "created_at"]
    list_filter = ["event_type", "level"]
    list_select_related = ["run"]
    search_fields = ["run__id", "message"]
    show_full_result_count = False
