import uuid
from datetime import date, datetime
from typing import Self

from django.db import models
from django.db.models import F, Q
from django.db.models.fields.json import KT

from paperclip.models import BUDGET_PAUSE_REASON


class AgentStatus(models.TextChoices):
    ACTIVE = "active"
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    ERROR = "error"
    PENDING_APPROVAL = "pending_approval"
    TERMINATED = "terminated"


NOT_INVOKABLE_AGENT_STATUSES = frozenset(
    {AgentStatus.PAUSED, AgentStatus.TERMINATED, AgentStatus.PENDING_APPROVAL}
)


class AgentRole(models.TextChoices):
    CEO = "ceo"
    CTO = "cto"
    CMO = "cmo"
    CFO = "cfo"
    ENGINEER = "engineer"
    DESIGNER = "designer"
    PM = "pm"
    QA = "qa"
    DEVOPS = "devops"
    RESEARCHER = "researcher"
    GENERAL = "general"


class WakeSource(models.TextChoices):
    TIMER = "timer"
    ASSIGNMENT = "assignment"
    ON_DEMAND = "on_demand"
    AUTOMATION = "automation"


class WakeupStatus(models.TextChoices):
    QUEUED = "queued"
    DEFERRED_ISSUE_EXECUTION = "deferred_issue_execution"
    CLAIMED = "claimed"
    COALESCED = "coalesced"
    SKIPPED = "skipped"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
# A wake that has not become a run yet: a live execution path for its issue, like an active run.
WAITING_WAKEUP_STATUSES = (WakeupStatus.QUEUED, WakeupStatus.DEFERRED_ISSUE_EXECUTION)
TERMINAL_RUN_STATUSES = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
    RunStatus.TIMED_OUT,
)


class RunErrorCode(models.TextChoices):
    """Codes this product writes; adapters may report others, so the column is not constrained."""

    PROCESS_LOST = "process_lost"
    PROCESS_DETACHED = "process_detached"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    ADAPTER_FAILED = "adapter_failed"
    ADAPTER_INVALID = "adapter_invalid"
    ADAPTER_UNKNOWN = "adapter_unknown"
    # The CLI could not resume the run's session (it no longer exists): retried once without.
    SESSION_UNKNOWN = "session_unknown"
    SPAWN_FAILED = "spawn_failed"
    AGENT_NOT_FOUND = "agent_not_found"
    AGENT_NOT_INVOKABLE = "agent_not_invokable"


class Agent(models.Model):
    Status = AgentStatus
    Role = AgentRole

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    company = models.ForeignKey(
        "paperclip.Company", on_delete=models.CASCADE, related_name="agents"
    )
    name = models.TextField()
    role = models.CharField(max_length=32, choices=AgentRole.choices, default=AgentRole.GENERAL)
    title = models.TextField(null=True, blank=True)
    icon = models.TextField(null=True, blank=True)
    capabilities = models.TextField(null=True, blank=True)
    status = models.CharField(max_length=32, choices=AgentStatus.choices, default=AgentStatus.IDLE)
    reports_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reports"
    )
    # Not constrained to the built-in adapters: plugin types exist, and an unknown type must fail
    # its run with a clear error rather than be refused at write time.
    adapter_type = models.CharField(max_length=64, default="process")
    adapter_config = models.JSONField(default=dict, blank=True)
    runtime_config = models.JSONField(default=dict, blank=True)
    # 0: no budget. The spend is kept by SQL increments as each run's cost is recorded, for the
    # month (its first day, UTC) in spend_month; a later month starts again from 0.
    budget_monthly_cents = models.IntegerField(default=0)
    spent_monthly_cents = models.IntegerField(default=0)
    spend_month = models.DateField(null=True, blank=True)
    pause_reason = models.TextField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    permissions = models.JSONField(default=dict, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # company_id, not company: through the relation, a locking `.first()` on an agent joined
        # and locked its company's row too (see Issue.Meta.ordering).
        ordering = ["company_id", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=AgentStatus.values), name="agent_status_valid"
            ),
            models.CheckConstraint(condition=Q(role__in=AgentRole.values), name="agent_role_valid"),
        ]
        indexes = [
            models.Index(fields=["company", "status"], name="agent_company_status_idx"),
            models.Index(fields=["company", "reports_to"], name="agent_company_reports_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_invokable(self) -> bool:
        """Whether wakes may create runs for this agent (reference 2.2 step 5)."""
        return self.status not in NOT_INVOKABLE_AGENT_STATUSES

    @property
    def is_budget_paused(self) -> bool:
        """Whether the agent is paused because its monthly budget was reached."""
        return self.status == AgentStatus.PAUSED and self.pause_reason == BUDGET_PAUSE_REASON

    def monthly_spend_cents(self, month: date) -> int:
        """What the agent spent in `month` (a first day); 0 when its spend is of an earlier one."""
        return self.spent_monthly_cents if self.spend_month == month else 0

    def budget_reached(self, month: date) -> bool:
        """Whether a budget is set and the spend of `month` has reached it."""
        budget = self.budget_monthly_cents
        return budget > 0 and self.monthly_spend_cents(month) >= budget


class AgentApiKey(models.Model):
    """A long-lived agent credential created by the board; only its SHA-256 is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    company = models.ForeignKey("paperclip.Company", on_delete=models.CASCADE, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200)
    key_prefix = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"


class AgentRuntimeState(models.Model):
    agent = models.OneToOneField(
        Agent, primary_key=True, on_delete=models.CASCADE, related_name="runtime_state"
    )
    company = models.ForeignKey("paperclip.Company", on_delete=models.CASCADE, related_name="+")
    adapter_type = models.CharField(max_length=64)
    session_id = models.TextField(null=True, blank=True)
    state_json = models.JSONField(default=dict, blank=True)
    last_run_id = models.UUIDField(null=True, blank=True)
    last_run_status = models.CharField(max_length=16, null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)
    total_input_tokens = models.BigIntegerField(default=0)
    total_output_tokens = models.BigIntegerField(default=0)
    total_cached_input_tokens = models.BigIntegerField(default=0)
    total_cost_cents = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["company", "updated_at"], name="runtime_company_updated_idx"),
        ]

    def __str__(self) -> str:
        return f"runtime state of {self.agent_id}"


class AgentWakeupRequestQuerySet(models.QuerySet):
    def waiting(self) -> Self:
        """Wakes queued or deferred behind their issue's run: each will still become a run."""
        return self.filter(status__in=WAITING_WAKEUP_STATUSES)


class AgentWakeupRequest(models.Model):
    Status = WakeupStatus
    Source = WakeSource

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of their own: the composite indexes that start with them serve their lookups,
    # and every index of a wake is written for each retry the reaper queues.
    company = models.ForeignKey(
        "paperclip.Company", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    agent = models.ForeignKey(
        Agent, on_delete=models.CASCADE, related_name="wakeup_requests", db_index=False
    )
    source = models.CharField(max_length=16, choices=WakeSource.choices)
    trigger_detail = models.CharField(max_length=32, null=True, blank=True)
    reason = models.TextField(null=True, blank=True)
    payload = models.JSONField(null=True, blank=True)
    status = models.CharField(
        max_length=32, choices=WakeupStatus.choices, default=WakeupStatus.QUEUED
    )
    coalesced_count = models.IntegerField(default=0)
    requested_by_actor_type = models.CharField(max_length=16, null=True, blank=True)
    requested_by_actor_id = models.TextField(null=True, blank=True)
    idempotency_key = models.TextField(null=True, blank=True)
    run = models.ForeignKey(
        "HeartbeatRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="wakeups",
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AgentWakeupRequestQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=WakeupStatus.values), name="wakeup_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(source__in=WakeSource.values), name="wakeup_source_valid"
            ),
            # A repeated idempotency key returns the first wake instead of a second run.
            models.UniqueConstraint(
                fields=["agent", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="wakeup_agent_idempotency_uniq",
            ),
        ]
        indexes = [
            models.Index(fields=["company", "agent", "status"], name="wakeup_company_agent_st_idx"),
            models.Index(fields=["company", "requested_at"], name="wakeup_company_requested_idx"),
            models.Index(fields=["agent", "requested_at"], name="wakeup_agent_requested_idx"),
            # Deferred and queued wakes of an issue (deferral, promotion, the reconciler).
            models.Index(KT("payload__issueId"), "status", name="wakeup_payload_issue_idx"),
        ]

    def __str__(self) -> str:
        return f"wake {self.id} ({self.status})"


class HeartbeatRunQuerySet(models.QuerySet):
    def active(self) -> Self:
        """Queued or running: the runs that still hold their issue and a slot of their agent."""
        return self.filter(status__in=ACTIVE_RUN_STATUSES)

    def running_on_host(self, host: str) -> Self:
        """Running runs owned on `host`: by its run supervisor, or the worker that launched them."""
        return self.filter(status=RunStatus.RUNNING, owner_host=host)


class HeartbeatRun(models.Model):
    Status = RunStatus
    ErrorCode = RunErrorCode

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of their own: the composite indexes that start with them serve their lookups,
    # and a run's every index is written again when the reaper fails it and inserts its retry.
    company = models.ForeignKey(
        "paperclip.Company", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="runs", db_index=False)
    invocation_source = models.CharField(
        max_length=16, choices=WakeSource.choices, default=WakeSource.ON_DEMAND
    )
    trigger_detail = models.CharField(max_length=32, null=True, blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    error_code = models.CharField(max_length=64, null=True, blank=True)
    wakeup_request = models.ForeignKey(
        AgentWakeupRequest,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    exit_code = models.IntegerField(null=True, blank=True)
    signal = models.CharField(max_length=16, null=True, blank=True)
    usage_json = models.JSONField(null=True, blank=True)
    result_json = models.JSONField(null=True, blank=True)
    session_id_before = models.TextField(null=True, blank=True)
    session_id_after = models.TextField(null=True, blank=True)
    log_store = models.CharField(max_length=32, null=True, blank=True)
    log_ref = models.TextField(null=True, blank=True)
    log_bytes = models.BigIntegerField(null=True, blank=True)
    log_sha256 = models.CharField(max_length=64, null=True, blank=True)
    log_compressed = models.BooleanField(default=False)
    stdout_excerpt = models.TextField(null=True, blank=True)
    stderr_excerpt = models.TextField(null=True, blank=True)
    external_run_id = models.TextField(null=True, blank=True)
    # The process identity. pid alone is not identity (pids are recycled), so liveness is judged
    # on pid + OS start time + host + boot id.
    process_pid = models.IntegerField(null=True, blank=True)
    process_group_id = models.IntegerField(null=True, blank=True)
    process_started_at = models.DateTimeField(null=True, blank=True)
    process_host = models.CharField(max_length=255, null=True, blank=True)
    process_boot_id = models.CharField(max_length=64, null=True, blank=True)
    # The run's monitor (heartbeat/shim/run_shim.py, on the process host and boot): it owns the
    # agent's output and writes how the agent ended; alive while the run executes.
    shim_pid = models.IntegerField(null=True, blank=True)
    shim_started_at = models.DateTimeField(null=True, blank=True)
    # Who watches the run and its lease: the worker that launched it, then its host's run
    # supervisor from owner_since on. A run whose owner is gone (lease expired, or the owner
    # process no longer exists on this host and boot) is orphaned; no owner counts as gone.
    owner_host = models.CharField(max_length=255, null=True, blank=True)
    owner_boot_id = models.CharField(max_length=64, null=True, blank=True)
    owner_pid = models.IntegerField(null=True, blank=True)
    owner_started_at = models.DateTimeField(null=True, blank=True)
    owner_since = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # The last renewal of the lease: "stale" is measured from it (updated_at when never renewed).
    lease_renewed_at = models.DateTimeField(null=True, blank=True)
    # When the reaper found the process alive without its owner (error_code process_detached).
    detached_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    # Indexed by run_one_retry_per_run (unique where not null) alone.
    retry_of_run = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
        db_index=False,
    )
    process_loss_retry_count = models.IntegerField(default=0)
    issue_comment_status = models.CharField(max_length=32, default="not_applicable")
    issue_comment_satisfied_by_comment_id = models.UUIDField(null=True, blank=True)
    issue_comment_retry_queued_at = models.DateTimeField(null=True, blank=True)
    context_snapshot = models.JSONField(null=True, blank=True)
    # Last allocated HeartbeatRunEvent.seq: bumped with UPDATE ... RETURNING, so gapless and unique.
    event_seq = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = HeartbeatRunQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="run_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status__in=TERMINAL_RUN_STATUSES) | Q(finished_at__isnull=False),
                name="run_terminal_has_finished_at",
            ),
            models.CheckConstraint(
                condition=~Q(status=RunStatus.RUNNING) | Q(started_at__isnull=False),
                name="run_running_has_started_at",
            ),
            models.CheckConstraint(
                condition=Q(process_loss_retry_count__gte=0), name="run_retry_count_gte_0"
            ),
            models.CheckConstraint(condition=Q(event_seq__gte=0), name="run_event_seq_gte_0"),
            # At most one automatic retry per run, however many reapers race.
            models.UniqueConstraint(
                fields=["retry_of_run"],
                condition=Q(retry_of_run__isnull=False),
                name="run_one_retry_per_run",
            ),
            # One issue has at most one active run: coalescing and deferral must hold even when
            # two wakes race on two hosts.
            models.UniqueConstraint(
                KT("context_snapshot__issueId"),
                condition=Q(status__in=ACTIVE_RUN_STATUSES),
                name="run_one_active_per_issue",
            ),
        ]
        indexes = [
            # The claim loop, resume_queued_runs and the reaper read only active runs.
            models.Index(
                fields=["status"],
                condition=Q(status__in=ACTIVE_RUN_STATUSES),
                name="run_active_status_idx",
            ),
            # reap_orphans: running runs by owner host and lease.
            models.Index(
                fields=["owner_host", "lease_expires_at"],
                condition=Q(status=RunStatus.RUNNING),
                name="run_running_owner_idx",
            ),
            models.Index(fields=["agent", "status", "created_at"], name="run_agent_status_idx"),
            models.Index(
                fields=["company", "agent", "started_at"], name="run_company_agent_started_idx"
            ),
            models.Index(fields=["company", "created_at"], name="run_company_created_idx"),
            # The console's run list (newest first), its date hierarchy and the dashboard's chart
            # across all companies: without it each is a sort or scan of the whole table.
            models.Index(fields=["created_at"], name="run_created_idx"),
            # The dashboard's "lost in the last 24 hours" and the lost-run filter: lost runs are
            # few, so a partial index finds them without scanning every finished run.
            models.Index(
                fields=["finished_at"],
                condition=Q(error_code=RunErrorCode.PROCESS_LOST),
                name="run_lost_finished_idx",
            ),
            # Runs of an issue, newest first (reconciler's latest run, issue run lists).
            models.Index(
                KT("context_snapshot__issueId"), F("created_at").desc(), name="run_ctx_issue_idx"
            ),
            # The previous run of a CLI session: its usage is the base of a cumulative total.
            models.Index(
                fields=["agent", "session_id_after", "created_at"],
                condition=Q(session_id_after__isnull=False),
                name="run_agent_session_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        """Whether the run has finished (any status but queued and running)."""
        return self.status in TERMINAL_RUN_STATUSES

    @property
    def issue_id(self) -> str | None:
        """The issue this run works on, from its context; None for wakes without an issue."""
        return (self.context_snapshot or {}).get("issueId")

    def age(self, now: datetime) -> float:
        """Seconds since the run was created."""
        return (now - self.created_at).total_seconds()


class HeartbeatRunEvent(models.Model):
    class EventType(models.TextChoices):
        LIFECYCLE = "lifecycle"
        ADAPTER_INVOKE = "adapter.invoke"
        ERROR = "error"
        RECOVERY = "recovery"

    class Level(models.TextChoices):
        INFO = "info"
        WARN = "warn"
        ERROR = "error"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of their own: (company, created_at) and run_event_seq_uniq (run, seq) serve
    # their lookups, and each lost run writes two events.
    company = models.ForeignKey(
        "paperclip.Company", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    run = models.ForeignKey(
        HeartbeatRun, on_delete=models.PROTECT, related_name="events", db_index=False
    )
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    seq = models.IntegerField()
    event_type = models.CharField(max_length=32)
    stream = models.CharField(max_length=16, null=True, blank=True, default="system")
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.INFO)
    color = models.CharField(max_length=16, null=True, blank=True)
    message = models.TextField(null=True, blank=True)
    payload = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="run_event_seq_uniq"),
            models.CheckConstraint(
                condition=Q(level__in=["info", "warn", "error"]), name="run_event_level_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["company", "created_at"], name="run_event_company_created_idx"),
            # The console's event list, newest first across all companies.
            models.Index(fields=["created_at"], name="run_event_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.event_type}"


class AgentTaskSession(models.Model):
    """The CLI session an agent last had on one task (reference 1.11 agent_task_sessions): the
    next run of the agent on that task resumes it; another task starts a session of its own.

    The task is the run's taskKey (an issue's id for issue work); runs without one share the
    agent's heartbeat session (task key `__heartbeat__`, as the reference names it).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    company = models.ForeignKey("paperclip.Company", on_delete=models.CASCADE, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="task_sessions")
    adapter_type = models.CharField(max_length=64)
    task_key = models.TextField()
    session_id = models.TextField()
    last_run = models.ForeignKey(
        HeartbeatRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "adapter_type", "task_key"], name="task_session_agent_task_uniq"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_key}: {self.session_id}"


class CostEvent(models.Model):
    """What one run used and cost (reference 1.11 cost_events): written once, in the transaction
    that finalizes the run, and never changed. The month's spend of the agent and of the company
    grows by its cost_cents in that same transaction."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    company = models.ForeignKey("paperclip.Company", on_delete=models.CASCADE, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="cost_events")
    run = models.OneToOneField(HeartbeatRun, on_delete=models.PROTECT, related_name="cost_event")
    occurred_at = models.DateTimeField()
    # The month (its first day, UTC) the cost counts for.
    month = models.DateField()
    provider = models.CharField(max_length=32)
    model = models.TextField(null=True, blank=True)
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    # Exactly as the CLI reported it; None when it reported no cost (Codex).
    cost_usd = models.DecimalField(max_digits=20, decimal_places=10, null=True, blank=True)
    # The cost rounded half up to cents: what the month's spend adds.
    cost_cents = models.IntegerField(default=0)

    class Meta:
        ordering = ["-occurred_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(cost_cents__gte=0)
                & Q(input_tokens__gte=0)
                & Q(cached_input_tokens__gte=0)
                & Q(output_tokens__gte=0),
                name="cost_event_amounts_gte_0",
            ),
        ]
        indexes = [
            models.Index(fields=["company", "month"], name="cost_event_company_month_idx"),
            models.Index(fields=["agent", "month"], name="cost_event_agent_month_idx"),
        ]

    def __str__(self) -> str:
        return f"cost of run {self.run_id}: {self.cost_cents} cents"


class RunSupervisor(models.Model):
    """The run supervisor of one host (`manage.py supervise_runs`), as it last reported itself.

    One row per host, rewritten when a supervisor starts there: the dashboard shows who watches
    each host's runs and whether it still renews their leases.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    host = models.CharField(max_length=255, unique=True)
    boot_id = models.CharField(max_length=64)
    pid = models.IntegerField()
    process_started_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField()
    renewed_at = models.DateTimeField()
    # Since when it has renewed its leases without a gap (a database outage or a stop resets it).
    renewing_since = models.DateTimeField()
    # Set when the supervisor stopped cleanly (its runs keep running and wait to be adopted).
    stopped_at = models.DateTimeField(null=True, blank=True)
    runs_watched = models.IntegerField(default=0)

    class Meta:
        ordering = ["host"]

    def __str__(self) -> str:
        return f"run supervisor {self.pid}@{self.host}"


class SweepKind(models.TextChoices):
    REAP = "reap"
    RECONCILE = "reconcile"


class SweepRecord(models.Model):
    """One finished reap or reconcile sweep: when, how long, what it did (health and dashboard)."""

    Kind = SweepKind

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16, choices=SweepKind.choices)
    host = models.CharField(max_length=255)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_ms = models.FloatField()
    # The sweep's result in the JSON shape of the commands' --json output.
    result = models.JSONField(default=dict)
    # Set when the sweep itself failed (per-run failures are recorded on their runs instead).
    error = models.TextField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=SweepKind.values), name="sweep_kind_valid"),
        ]
        indexes = [
            # sweeps_latest() and the retention prune.
            models.Index(fields=["kind", "-started_at"], name="sweep_kind_started_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} sweep at {self.started_at:%Y-%m-%d %H:%M:%S}"
