"""Agent, run, wakeup and event JSON, with the reference's camelCase keys."""

from __future__ import annotations

import json

from rest_framework import serializers

from heartbeat.adapters.base import adapter_config_masked
from heartbeat.models import (
    Agent,
    AgentApiKey,
    AgentRole,
    AgentRuntimeState,
    AgentTaskSession,
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunStatus,
    WakeSource,
)
from paperclip.authentication import Actor
from paperclip.serializers import CamelModelSerializer

JSON_DOCUMENT_MAX_BYTES = 64 * 1024


def _uuid_out(source: str) -> serializers.UUIDField:
    return serializers.UUIDField(source=source, read_only=True, allow_null=True)


class JsonObjectField(serializers.JSONField):
    """A JSON object (not a list or a scalar), bounded in size: agent configs and wake payloads."""

    default_error_messages = {
        "not_object": "Must be a JSON object.",
        "too_large": f"Must be at most {JSON_DOCUMENT_MAX_BYTES} bytes of JSON.",
    }

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_object")
        if len(json.dumps(value)) > JSON_DOCUMENT_MAX_BYTES:
            self.fail("too_large")
        return value


class AgentSerializer(CamelModelSerializer):
    """An agent. Its adapter's env (and http headers) hold credentials the board configured:
    only a board member reads their values; anyone else, the agent itself included, gets the
    names with masked values (the request comes in the serializer's context)."""

    companyId = serializers.UUIDField(source="company_id", read_only=True)
    reportsTo = _uuid_out("reports_to_id")

    def to_representation(self, instance):
        data = super().to_representation(instance)
        actor = getattr(self.context.get("request"), "auth", None)
        if not (isinstance(actor, Actor) and actor.is_board):
            data["adapterConfig"] = adapter_config_masked(data["adapterConfig"])
        return data

    class Meta:
        model = Agent
        fields = [
            "id",
            "companyId",
            "name",
            "role",
            "title",
            "icon",
            "capabilities",
            "status",
            "reportsTo",
            "adapter_type",
            "adapter_config",
            "runtime_config",
            "budget_monthly_cents",
            "spent_monthly_cents",
            "pause_reason",
            "paused_at",
            "permissions",
            "last_heartbeat_at",
            "metadata",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class AgentWriteSerializer(serializers.Serializer):
    """Fields a board member sets on an agent (create requires name)."""

    name = serializers.CharField(max_length=200)
    role = serializers.ChoiceField(choices=AgentRole.choices, default=AgentRole.GENERAL)
    title = serializers.CharField(max_length=200, allow_null=True, allow_blank=True, required=False)
    icon = serializers.CharField(max_length=100, allow_null=True, allow_blank=True, required=False)
    capabilities = serializers.CharField(
        max_length=10_000, allow_null=True, allow_blank=True, required=False
    )
    reportsTo = serializers.UUIDField(source="reports_to_id", allow_null=True, required=False)
    adapterType = serializers.RegexField(
        r"^[a-z][a-z0-9_.-]{0,63}$", source="adapter_type", default="process"
    )
    adapterConfig = JsonObjectField(source="adapter_config", default=dict)
    runtimeConfig = JsonObjectField(source="runtime_config", default=dict)
    budgetMonthlyCents = serializers.IntegerField(
        source="budget_monthly_cents", min_value=0, max_value=2**31 - 1, default=0
    )
    metadata = JsonObjectField(allow_null=True, required=False)


class AgentUpdateSerializer(AgentWriteSerializer):
    """Every field optional: PATCH changes only what it names."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False
            field.default = serializers.empty


class AgentKeySerializer(CamelModelSerializer):
    agentId = serializers.UUIDField(source="agent_id", read_only=True)

    class Meta:
        model = AgentApiKey
        fields = ["id", "agentId", "name", "key_prefix", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class AgentKeyCreatedSerializer(AgentKeySerializer):
    token = serializers.CharField(read_only=True, help_text="The secret; shown only once.")
    key = serializers.CharField(read_only=True, help_text="The same secret (earlier name).")

    class Meta(AgentKeySerializer.Meta):
        fields = [*AgentKeySerializer.Meta.fields, "token", "key"]
        read_only_fields = fields


class AgentKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, default="default")


class RuntimeStateSerializer(CamelModelSerializer):
    agentId = serializers.UUIDField(source="agent_id", read_only=True)
    companyId = serializers.UUIDField(source="company_id", read_only=True)

    class Meta:
        model = AgentRuntimeState
        fields = [
            "agentId",
            "companyId",
            "adapter_type",
            "session_id",
            "state_json",
            "last_run_id",
            "last_run_status",
            "last_error",
            "total_input_tokens",
            "total_output_tokens",
            "total_cached_input_tokens",
            "total_cost_cents",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class TaskSessionSerializer(CamelModelSerializer):
    """An agent's CLI session for one task; the reference's sessionDisplayId and
    sessionParamsJson are kept so its clients read it unchanged."""

    companyId = serializers.UUIDField(source="company_id", read_only=True)
    agentId = serializers.UUIDField(source="agent_id", read_only=True)
    lastRunId = _uuid_out("last_run_id")
    sessionDisplayId = serializers.CharField(source="session_id", read_only=True)
    sessionParamsJson = serializers.SerializerMethodField()

    class Meta:
        model = AgentTaskSession
        fields = [
            "id",
            "companyId",
            "agentId",
            "adapter_type",
            "task_key",
            "session_id",
            "sessionDisplayId",
            "sessionParamsJson",
            "lastRunId",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_sessionParamsJson(self, session: AgentTaskSession) -> dict:
        return {"sessionId": session.session_id}


class SessionResetSerializer(serializers.Serializer):
    taskKey = serializers.CharField(
        max_length=500,
        required=False,
        allow_null=True,
        help_text="The task whose session to drop; without it, every session of the agent.",
    )


class RunSerializer(CamelModelSerializer):
    companyId = serializers.UUIDField(source="company_id", read_only=True)
    agentId = serializers.UUIDField(source="agent_id", read_only=True)
    wakeupRequestId = _uuid_out("wakeup_request_id")
    retryOfRunId = _uuid_out("retry_of_run_id")

    class Meta:
        model = HeartbeatRun
        fields = [
            "id",
            "companyId",
            "agentId",
            "invocation_source",
            "trigger_detail",
            "status",
            "started_at",
            "finished_at",
            "error",
            "error_code",
            "wakeupRequestId",
            "exit_code",
            "signal",
            "usage_json",
            "result_json",
            "session_id_before",
            "session_id_after",
            "log_store",
            "log_ref",
            "log_bytes",
            "log_sha256",
            "log_compressed",
            "stdout_excerpt",
            "stderr_excerpt",
            "external_run_id",
            "process_pid",
            "process_group_id",
            "process_started_at",
            "process_host",
            "owner_host",
            "lease_expires_at",
            "detached_at",
            "last_activity_at",
            "retryOfRunId",
            "process_loss_retry_count",
            "issue_comment_status",
            "context_snapshot",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class RunSummarySerializer(CamelModelSerializer):
    """A run in a list: no excerpts or results (they can be large), the issue it works on."""

    companyId = serializers.UUIDField(source="company_id", read_only=True)
    agentId = serializers.UUIDField(source="agent_id", read_only=True)
    retryOfRunId = _uuid_out("retry_of_run_id")
    issueId = serializers.CharField(source="issue_id", read_only=True, allow_null=True)

    class Meta:
        model = HeartbeatRun
        fields = [
            "id",
            "companyId",
            "agentId",
            "issueId",
            "invocation_source",
            "trigger_detail",
            "status",
            "started_at",
            "finished_at",
            "error",
            "error_code",
            "exit_code",
            "process_pid",
            "process_host",
            "retryOfRunId",
            "process_loss_retry_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class LiveRunSerializer(RunSummarySerializer):
    agentName = serializers.CharField(source="agent.name", read_only=True)
    adapterType = serializers.CharField(source="agent.adapter_type", read_only=True)

    class Meta(RunSummarySerializer.Meta):
        fields = [*RunSummarySerializer.Meta.fields, "agentName", "adapterType"]
        read_only_fields = fields


class RunEventSerializer(CamelModelSerializer):
    runId = serializers.UUIDField(source="run_id", read_only=True)

    class Meta:
        model = HeartbeatRunEvent
        fields = [
            "id",
            "runId",
            "seq",
            "event_type",
            "stream",
            "level",
            "color",
            "message",
            "payload",
            "created_at",
        ]
        read_only_fields = fields


class WakeupSerializer(CamelModelSerializer):
    agentId = serializers.UUIDField(source="agent_id", read_only=True)
    runId = _uuid_out("run_id")

    class Meta:
        model = AgentWakeupRequest
        fields = [
            "id",
            "agentId",
            "source",
            "trigger_detail",
            "reason",
            "payload",
            "status",
            "coalesced_count",
            "runId",
            "requested_at",
            "finished_at",
            "error",
        ]
        read_only_fields = fields


class RunListQuerySerializer(serializers.Serializer):
    agentId = serializers.UUIDField(required=False)
    status = serializers.CharField(
        max_length=200, required=False, help_text="Comma-separated run statuses."
    )

    def validate_status(self, value: str) -> list[str]:
        statuses = [s.strip() for s in value.split(",") if s.strip()]
        unknown = sorted(set(statuses) - set(RunStatus.values))
        if unknown:
            raise serializers.ValidationError(f"Unknown statuses: {', '.join(unknown)}")
        return statuses


class LiveRunsQuerySerializer(serializers.Serializer):
    minCount = serializers.IntegerField(
        min_value=0,
        max_value=20,
        default=0,
        help_text="Pad with the most recent finished runs up to this many.",
    )


class RunEventsQuerySerializer(serializers.Serializer):
    afterSeq = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=200)


class RunLogQuerySerializer(serializers.Serializer):
    offset = serializers.IntegerField(min_value=0, max_value=2**62, default=0)
    limitBytes = serializers.IntegerField(min_value=1, max_value=1_048_576, default=256_000)


class RunLogSerializer(serializers.Serializer):
    runId = serializers.UUIDField()
    store = serializers.CharField(allow_null=True)
    logRef = serializers.CharField(allow_null=True)
    content = serializers.CharField(allow_blank=True)
    nextOffset = serializers.IntegerField(allow_null=True)


class WakeupRequestSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=WakeSource.choices, default=WakeSource.ON_DEMAND)
    triggerDetail = serializers.ChoiceField(
        choices=["manual", "ping", "callback", "system"], required=False, allow_null=True
    )
    reason = serializers.CharField(max_length=500, required=False, allow_null=True)
    payload = JsonObjectField(required=False, allow_null=True)
    idempotencyKey = serializers.CharField(max_length=200, required=False, allow_null=True)
    forceFreshSession = serializers.BooleanField(default=False)


class WakeupOutcomeSerializer(serializers.Serializer):
    """202 body of wakeup/invoke: the run, or what happened to the wake instead."""

    status = serializers.CharField(help_text="The run's status, or skipped/deferred/coalesced.")
    run = RunSerializer(allow_null=True)
    wakeup = WakeupSerializer(allow_null=True)
    reason = serializers.CharField(allow_null=True)


class InboxItemSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    identifier = serializers.CharField()
    title = serializers.CharField()
    status = serializers.CharField()
    priority = serializers.CharField()
    parentId = serializers.UUIDField(source="parent_id", allow_null=True)
    checkoutRunId = serializers.UUIDField(source="checkout_run_id", allow_null=True)
    executionRunId = serializers.UUIDField(source="execution_run_id", allow_null=True)
    updatedAt = serializers.DateTimeField(source="updated_at")


class AgentPauseSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_null=True)


class DatabaseHealthSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    error = serializers.CharField(allow_null=True, required=False, help_text="Board only.")


class ClusterHealthSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    queuedTasks = serializers.IntegerField(required=False, help_text="Board only.")
    oldestQueuedTaskAgeSec = serializers.FloatField(required=False, help_text="Board only.")


class SweepHealthSerializer(serializers.Serializer):
    """ok: the sweep ran within its interval and its last run did not fail; the rest is for
    board members only."""

    ok = serializers.BooleanField()
    overdue = serializers.BooleanField(required=False)
    lastStartedAt = serializers.DateTimeField(allow_null=True, required=False)
    lastFinishedAt = serializers.DateTimeField(allow_null=True, required=False)
    ageSec = serializers.FloatField(allow_null=True, required=False)
    durationMs = serializers.FloatField(allow_null=True, required=False)
    error = serializers.CharField(allow_null=True, required=False)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded", "unavailable"])
    checkedAt = serializers.DateTimeField(required=False, help_text="Board only.")
    database = DatabaseHealthSerializer()
    cluster = ClusterHealthSerializer(required=False)
    sweeps = serializers.DictField(child=SweepHealthSerializer(), required=False)


class WakeRunSerializer(RunSerializer):
    """A wake served by a run: the run, and how the wake joined it."""

    wakeOutcome = serializers.ChoiceField(choices=["queued", "coalesced"], read_only=True)
    wakeupId = serializers.UUIDField(read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "wakeOutcome", "wakeupId"]
        read_only_fields = fields


class WakeSkippedSerializer(serializers.Serializer):
    """A wake that created no run: skipped (with the reason) or deferred behind another run."""

    status = serializers.ChoiceField(choices=["skipped", "deferred"])
    wakeOutcome = serializers.ChoiceField(choices=["skipped", "deferred"])
    reason = serializers.CharField(allow_null=True)
    wakeupId = serializers.UUIDField()


class RecoveryRequestSerializer(serializers.Serializer):
    dryRun = serializers.BooleanField(default=False, help_text="Report, change nothing.")


class ReapResultSerializer(serializers.Serializer):
    reaped = serializers.IntegerField()
    runIds = serializers.ListField(child=serializers.UUIDField(), source="run_ids")
    detached = serializers.IntegerField()
    detachedRunIds = serializers.ListField(child=serializers.UUIDField(), source="detached_run_ids")
    deferred = serializers.IntegerField(help_text="Orphans left for the next sweep: issue busy.")
    deferredRunIds = serializers.ListField(child=serializers.UUIDField(), source="deferred_run_ids")
    errors = serializers.IntegerField()
    sweepSkipped = serializers.BooleanField(source="sweep_skipped")
    dryRun = serializers.BooleanField(source="dry_run")


class ReconcileResultSerializer(serializers.Serializer):
    dispatchRequeued = serializers.IntegerField(source="dispatch_requeued")
    continuationRequeued = serializers.IntegerField(source="continuation_requeued")
    escalated = serializers.IntegerField()
    skipped = serializers.IntegerField()
    issueIds = serializers.ListField(child=serializers.UUIDField(), source="issue_ids")
    errors = serializers.IntegerField()
    sweepSkipped = serializers.BooleanField(source="sweep_skipped")
    dryRun = serializers.BooleanField(source="dry_run")


class _SummaryAgentsSerializer(serializers.Serializer):
    active = serializers.IntegerField(help_text="Active or idle: able to run.")
    running = serializers.IntegerField()
    paused = serializers.IntegerField()
    error = serializers.IntegerField()


class _SummaryTasksSerializer(serializers.Serializer):
    open = serializers.IntegerField(help_text="Issues not done or cancelled.")
    inProgress = serializers.IntegerField()
    blocked = serializers.IntegerField()
    done = serializers.IntegerField()


class _SummaryCostsSerializer(serializers.Serializer):
    monthSpendCents = serializers.IntegerField()
    monthBudgetCents = serializers.IntegerField()
    monthUtilizationPercent = serializers.FloatField()


class _SummaryBudgetsSerializer(serializers.Serializer):
    activeIncidents = serializers.IntegerField()
    pendingApprovals = serializers.IntegerField()
    pausedAgents = serializers.IntegerField()
    pausedProjects = serializers.IntegerField()


class _SummaryDaySerializer(serializers.Serializer):
    date = serializers.CharField(help_text="UTC day, YYYY-MM-DD.")
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="Failed or timed out, not recovered.")
    recovered = serializers.IntegerField(help_text="Failed, but a retry later succeeded.")
    other = serializers.IntegerField(help_text="Queued, running or cancelled.")
    total = serializers.IntegerField()
    failedByErrorCode = serializers.DictField(child=serializers.IntegerField())


class CompanySummarySerializer(serializers.Serializer):
    companyId = serializers.UUIDField()
    agents = _SummaryAgentsSerializer()
    tasks = _SummaryTasksSerializer()
    costs = _SummaryCostsSerializer()
    pendingApprovals = serializers.IntegerField(help_text="Agents waiting for board approval.")
    budgets = _SummaryBudgetsSerializer()
    runActivity = _SummaryDaySerializer(many=True)


class AgentReferenceQuerySerializer(serializers.Serializer):
    companyId = serializers.UUIDField(help_text="The company whose agent the name refers to.")
