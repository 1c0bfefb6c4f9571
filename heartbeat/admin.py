"""The operator console for agents and runs: which run is stuck, why, and what happens next."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from heartbeat import selectors
from heartbeat.conf import heartbeat_conf
from heartbeat.forms import AgentAdminForm
from heartbeat.models import (
    ACTIVE_RUN_STATUSES,
    Agent,
    AgentApiKey,
    AgentRuntimeState,
    AgentTaskSession,
    AgentWakeupRequest,
    CostEvent,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunErrorCode,
    RunStatus,
    SweepRecord,
)
from heartbeat.process_control import current_host
from heartbeat.services import (
    AgentNotFound,
    AgentNotInvokable,
    RunNotFound,
    RunNotRetryable,
    agent_invoke,
    agent_session_reset,
    cancel_run,
    reap_orphaned_runs,
    reconcile_stranded_assigned_issues,
    run_retry_now,
)
from heartbeat.services.agents import (
    AGENT_EDITABLE_FIELDS,
    AgentError,
    agent_create,
    agent_key_create,
    agent_pause,
    agent_resume,
    agent_update,
)
from issues.models import Issue
from paperclip.admin import (
    BigTableAdmin,
    CompanyScopedAdmin,
    CredentialAdmin,
    MachineOwnedAdmin,
    PrefetchingChangeList,
    ServiceBackedAdmin,
    actor_of,
    admin_link,
    age_of,
    as_uuid,
    changelist_link,
    choices_filter,
    form_changes,
    humanize_seconds,
    short_id,
)
from paperclip.models import spend_month_of


def run_duration_text(seconds: float) -> str:
    """A run's duration: tenths of a second under a minute (runs are often that short)."""
    return f"{seconds:.1f}s" if seconds < 60 else humanize_seconds(seconds)


# How many retry hops the run page follows each way (a lineage is short: one automatic retry,
# one stranded-issue recovery), so a corrupt loop cannot hang the page.
_RETRY_CHAIN_MAX_HOPS = 10
# A word search finds the runs of at most this many matching issues and agents (newest issues).
_SEARCH_MAX_ISSUES = 200
_SEARCH_MAX_AGENTS = 200
# Events shown inline on a run page; the rest are one link away.
_INLINE_EVENTS = 50


def _status_badge(status: str) -> str:
    return format_html('<span class="pc-status pc-status-{}">{}</span>', status, status)


def _liveness_text(liveness) -> str:
    return "-" if liveness is None else str(liveness)


class RunErrorCodeFilter(admin.SimpleListFilter):
    title = "error code"
    parameter_name = "error_code"

    def lookups(self, request, model_admin):
        return [("__none__", "(none)"), *RunErrorCode.choices]

    def queryset(self, request, queryset):
        if self.value() == "__none__":
            return queryset.filter(error_code__isnull=True)
        if self.value():
            return queryset.filter(error_code=self.value())
        return queryset


class RunHostFilter(admin.SimpleListFilter):
    """Hosts that run agents now or run sweeps: a small set, found without scanning all runs."""

    title = "host"
    parameter_name = "host"

    def lookups(self, request, model_admin):
        hosts = set(
            HeartbeatRun.objects.filter(status__in=ACTIVE_RUN_STATUSES)
            .exclude(process_host__isnull=True)
            .values_list("process_host", flat=True)
            .distinct()
        )
        hosts.update(SweepRecord.objects.values_list("host", flat=True).distinct())
        hosts.add(current_host())
        if self.value():
            hosts.add(self.value())
        return [(host, host) for host in sorted(hosts)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(Q(process_host=self.value()) | Q(owner_host=self.value()))
        return queryset


class AdapterTypeFilter(admin.SimpleListFilter):
    title = "adapter"
    parameter_name = "adapter"
    field = "agent__adapter_type"

    def lookups(self, request, model_admin):
        # order_by() first: the model's default ordering would add its columns to the DISTINCT
        # and list a type once per agent name.
        types = Agent.objects.order_by().values_list("adapter_type", flat=True).distinct()
        return [(t, t) for t in sorted(types)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.field: self.value()})
        return queryset


class StaleRunFilter(admin.SimpleListFilter):
    """The runs an operator looks at first: the same definitions as the dashboard."""

    title = "stale"
    parameter_name = "stale"

    def lookups(self, request, model_admin):
        return [
            ("any", "any stale"),
            ("owner_gone", "owner lease expired or missing"),
            ("detached", "detached (process without owner)"),
            ("silent", "running, no activity past the reap threshold"),
            ("queued_long", "queued past the reap threshold"),
        ]

    def queryset(self, request, queryset):
        conditions = selectors.stale_run_conditions(timezone.now())
        if self.value() == "any":
            combined = Q()
            for condition in conditions.values():
                combined |= condition
            return queryset.filter(combined)
        if self.value() in conditions:
            return queryset.filter(conditions[self.value()])
        return queryset


def _search_runs(queryset, search_term: str):
    """A run id, agent id or issue id finds by index; other words match agent names and issue
    identifiers and titles (runs point at issues through context_snapshot.issueId)."""
    term = search_term.strip()
    if not term:
        return queryset
    as_id = as_uuid(term)
    if as_id is not None:
        return queryset.filter(
            Q(pk=as_id)
            | Q(agent_id=as_id)
            | Q(retry_of_run_id=as_id)
            | Q(context_snapshot__issueId=str(as_id))
        )
    # Two small lookups first, so the runs are found through their agent and issue indexes
    # rather than by joining every run to its agent and testing each name.
    issue_ids = [
        str(pk)
        for pk in Issue.objects.filter(Q(identifier__iexact=term) | Q(title__icontains=term))
        .order_by("-created_at")
        .values_list("pk", flat=True)[:_SEARCH_MAX_ISSUES]
    ]
    agent_ids = list(
        Agent.objects.filter(name__icontains=term).values_list("pk", flat=True)[:_SEARCH_MAX_AGENTS]
    )
    return queryset.alias(issue_key=KT("context_snapshot__issueId")).filter(
        Q(agent_id__in=agent_ids) | Q(issue_key__in=issue_ids)
    )


class HeartbeatRunEventInline(admin.TabularInline):
    model = HeartbeatRunEvent
    fk_name = "run"
    fields = ["seq", "created_at", "event_type", "stream", "level", "message", "payload"]
    readonly_fields = fields
    ordering = ["-seq"]
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = f"run events (newest {_INLINE_EVENTS})"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        match = request.resolver_match
        run_id = as_uuid((match.kwargs.get("object_id") or "") if match else "")
        if run_id is None:
            return queryset.none()
        # Only the newest events: a long run has thousands, and the inline renders every row.
        last_seq = HeartbeatRun.objects.filter(pk=run_id).values_list("event_seq", flat=True)
        return queryset.filter(seq__gt=Subquery(last_seq) - _INLINE_EVENTS)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ConsoleMedia:
    css = {"all": ["heartbeat/console.css"]}


@admin.register(HeartbeatRun)
class HeartbeatRunAdmin(BigTableAdmin, MachineOwnedAdmin):
    Media = ConsoleMedia
    list_display = [
        "run",
        "status_badge",
        "agent_link",
        "issue_link",
        "age",
        "took",
        "process",
        "owner",
        "lease",
        "retries",
    ]
    list_display_links = None
    list_filter = [
        StaleRunFilter,
        "status",
        RunErrorCodeFilter,
        AdapterTypeFilter,
        RunHostFilter,
        "invocation_source",
        "company",
    ]
    list_select_related = ["agent"]
    search_fields = ["agent__name"]
    search_help_text = "Run, agent or issue id; agent name; issue identifier or title."
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    inlines = [HeartbeatRunEventInline]
    actions = ["cancel_runs", "retry_runs_now"]
    change_form_template = "admin/heartbeat/heartbeatrun/change_form.html"
    fieldsets = [
        (
            "What is happening",
            {
                "fields": [
                    "diagnosis",
                    "status",
                    "error_code",
                    "error",
                    "agent_link",
                    "issue_link",
                    "wakeup_link",
                    "retry_chain",
                    "invocation_source",
                    "trigger_detail",
                ]
            },
        ),
        (
            "What the agent reported",
            {"fields": ["summary", "usage", "session"]},
        ),
        (
            "Timing",
            {
                "fields": [
                    "created_at",
                    "started_at",
                    "finished_at",
                    "took",
                    "last_activity_at",
                    "detached_at",
                    "updated_at",
                ]
            },
        ),
        (
            "Process",
            {
                "fields": [
                    "process_liveness",
                    "shim_pid",
                    "shim_started_at",
                    "process_pid",
                    "process_group_id",
                    "process_started_at",
                    "process_host",
                    "process_boot_id",
                    "exit_code",
                    "signal",
                ]
            },
        ),
        (
            "Watched by, and lease",
            {
                "fields": [
                    "watcher",
                    "owner_liveness",
                    "owner_host",
                    "owner_pid",
                    "owner_started_at",
                    "owner_boot_id",
                    "owner_since",
                    "lease_expires_at",
                    "lease_renewed_at",
                    "lease",
                ]
            },
        ),
        ("Log", {"fields": ["log_tail", "log_ref", "log_bytes", "log_compressed"]}),
        (
            "Details",
            {
                "classes": ["collapse"],
                "fields": [
                    "id",
                    "company",
                    "context_snapshot",
                    "process_loss_retry_count",
                    "usage_json",
                    "result_json",
                    "session_id_before",
                    "session_id_after",
                    "stdout_excerpt",
                    "stderr_excerpt",
                    "external_run_id",
                    "issue_comment_status",
                    "event_seq",
                ],
            },
        ),
    ]
    readonly_fields = [
        "diagnosis",
        "summary",
        "usage",
        "session",
        "took",
        "agent_link",
        "issue_link",
        "wakeup_link",
        "retry_chain",
        "process_liveness",
        "owner_liveness",
        "watcher",
        "lease",
        "log_tail",
    ]

    def get_queryset(self, request):
        retry = HeartbeatRun.objects.filter(retry_of_run=OuterRef("pk"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                retried_by_id=Subquery(retry.values("pk")[:1]),
                retried_by_status=Subquery(retry.values("status")[:1]),
            )
        )

    def get_changelist(self, request, **kwargs):
        return PrefetchingChangeList

    def has_sweep_permission(self, request) -> bool:
        """Sweeps act on every company, so only instance admins start them by hand."""
        return request.user.is_active and request.user.is_superuser

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_sweep": self.has_sweep_permission(request),
        }
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_operate": self.has_operate_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        sweeps = [
            path(
                "sweeps/reap/",
                self.admin_site.admin_view(self.reap_view),
                name="heartbeat_heartbeatrun_reap",
            ),
            path(
                "sweeps/reconcile/",
                self.admin_site.admin_view(self.reconcile_view),
                name="heartbeat_heartbeatrun_reconcile",
            ),
        ]
        return sweeps + super().get_urls()

    @admin.action(
        description="Cancel selected runs (stops their process trees)", permissions=["operate"]
    )
    def cancel_runs(self, request, queryset):
        cancelled, untouched = [], 0
        for run_id in queryset.values_list("pk", flat=True):
            try:
                run = cancel_run(
                    run_id,
                    reason=f"Cancelled by board user {request.user}",
                    via="admin",
                    **actor_of(request),
                )
            except RunNotFound:
                untouched += 1
                continue
            if run.status == RunStatus.CANCELLED and run.error_code == RunErrorCode.CANCELLED:
                cancelled.append(run)
            else:
                untouched += 1
        if cancelled:
            self.message_user(
                request,
                f"Cancelled {len(cancelled)} run(s): "
                + ", ".join(short_id(run.pk) for run in cancelled),
                messages.SUCCESS,
            )
        if untouched:
            self.message_user(
                request,
                f"{untouched} run(s) had already finished; left unchanged.",
                messages.WARNING,
            )
        return self._back_to_run_page(request, queryset)

    @admin.action(
        description="Retry now (wake the agent again on the run's issue)", permissions=["operate"]
    )
    def retry_runs_now(self, request, queryset):
        for run in queryset.select_related("agent"):
            try:
                result = run_retry_now(run_id=run.pk, via="admin", **actor_of(request))
            except RunNotRetryable as exc:
                self.message_user(
                    request, f"Run {short_id(run.pk)} {exc.because}.", messages.WARNING
                )
                continue
            except (AgentNotInvokable, AgentNotFound) as exc:
                self.message_user(
                    request,
                    f"Run {short_id(run.pk)}: agent {run.agent.name} cannot be woken ({exc}).",
                    messages.ERROR,
                )
                continue
            self.message_user(
                request, _wake_message(run.agent, result, retry_of=run), messages.SUCCESS
            )
        return self._back_to_run_page(request, queryset)

    def _back_to_run_page(self, request, queryset):
        """Actions started from a run page (its buttons) return to that page."""
        if request.POST.get("_from_change_page") and queryset.count() == 1:
            return HttpResponseRedirect(
                reverse("admin:heartbeat_heartbeatrun_change", args=[queryset.get().pk])
            )
        return None

    def reap_view(self, request):
        if not self.has_sweep_permission(request):
            raise PermissionDenied
        threshold = heartbeat_conf().reap_stale_threshold_sec
        if request.method == "POST":
            result = reap_orphaned_runs(stale_threshold_sec=threshold)
            if result.sweep_skipped:
                self.message_user(
                    request,
                    "Another reap sweep holds the lock; nothing was done.",
                    messages.WARNING,
                )
            else:
                self.message_user(
                    request,
                    f"Reap sweep: {result.reaped} run(s) failed as process_lost (each retried "
                    f"once per lineage), {result.detached} detached, {result.errors} error(s).",
                    messages.SUCCESS if not result.errors else messages.WARNING,
                )
            return HttpResponseRedirect(reverse("admin:heartbeat_heartbeatrun_changelist"))
        preview = reap_orphaned_runs(stale_threshold_sec=threshold, dry_run=True)
        runs = {
            run.pk: run
            for run in HeartbeatRun.objects.filter(
                pk__in=[*preview.run_ids, *preview.detached_run_ids]
            ).select_related("agent", "company")
        }
        rows = [
            (runs[i], "fail as process_lost, queue one retry") for i in preview.run_ids if i in runs
        ]
        rows += [(runs[i], "mark detached") for i in preview.detached_run_ids if i in runs]
        return self._sweep_preview(
            request,
            title="Reap now",
            intro=(
                f"A dry run of the reap sweep on host {current_host()} (runs untouched for "
                f"{threshold} s, as the periodic sweep): this is what it would do."
            ),
            skipped=preview.sweep_skipped,
            rows=[(admin_link(run, short_id(run.pk)), run, what) for run, what in rows],
            confirm="Reap now",
        )

    def reconcile_view(self, request):
        if not self.has_sweep_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            result = reconcile_stranded_assigned_issues()
            if result.sweep_skipped:
                self.message_user(
                    request,
                    "Another reconcile sweep holds the lock; nothing was done.",
                    messages.WARNING,
                )
            else:
                self.message_user(
                    request,
                    f"Reconcile sweep: {_reconcile_counts(result)}.",
                    messages.SUCCESS if not result.errors else messages.WARNING,
                )
            return HttpResponseRedirect(reverse("admin:heartbeat_heartbeatrun_changelist"))
        preview = reconcile_stranded_assigned_issues(dry_run=True)
        issues = Issue.objects.select_related("company").in_bulk(preview.issue_ids)
        rows = [
            (admin_link(issue, issue.identifier), issue, f"{issue.status}: {issue.title}")
            for issue in (issues.get(i) for i in preview.issue_ids)
            if issue is not None
        ]
        return self._sweep_preview(
            request,
            title="Reconcile now",
            intro=(
                "A dry run of the reconcile sweep over stranded assigned issues: it would "
                f"{_reconcile_counts(preview)}. Each issue is re-dispatched once, then escalated."
            ),
            skipped=preview.sweep_skipped,
            rows=rows,
            confirm="Reconcile now",
        )

    def _sweep_preview(self, request, *, title, intro, skipped, rows, confirm):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "intro": intro,
            "skipped": skipped,
            "rows": rows,
            "confirm": confirm,
        }
        return TemplateResponse(request, "admin/heartbeat/sweep_preview.html", context)

    def prefetch_for_page(self, request, runs):
        issues = selectors.issues_by_id(run.issue_id for run in runs)
        for run in runs:
            run.console_issue = issues.get(str(run.issue_id))

    def get_search_results(self, request, queryset, search_term):
        return _search_runs(queryset, search_term), False

    def get_object(self, request, object_id, from_field=None):
        run = super().get_object(request, object_id, from_field)
        run.console_issue = selectors.issues_by_id([run.issue_id]).get(str(run.issue_id))
        return run

    @admin.display(description="run", ordering="created_at")
    def run(self, obj: HeartbeatRun) -> str:
        return admin_link(obj, short_id(obj.pk))

    @admin.display(description="status · error code", ordering="status")
    def status_badge(self, obj: HeartbeatRun) -> str:
        if not obj.error_code:
            return _status_badge(obj.status)
        return format_html("{} {}", _status_badge(obj.status), obj.error_code)

    @admin.display(description="agent", ordering="agent__name")
    def agent_link(self, obj: HeartbeatRun) -> str:
        return admin_link(obj.agent)

    @admin.display(description="issue")
    def issue_link(self, obj: HeartbeatRun) -> str:
        issue = getattr(obj, "console_issue", None)
        if issue is None:
            return short_id(obj.issue_id) if obj.issue_id else "-"
        return admin_link(issue, issue.identifier)

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: HeartbeatRun) -> str:
        return age_of(obj.created_at)

    @admin.display(description="took")
    def took(self, obj: HeartbeatRun) -> str:
        """How long the run has been running, or ran: a 2-second run reads 2.0s, not 0."""
        if obj.started_at is None:
            return "-"
        end = obj.finished_at or timezone.now()
        return run_duration_text((end - obj.started_at).total_seconds())

    @admin.display(description="pid@host")
    def process(self, obj: HeartbeatRun) -> str:
        if not obj.process_pid:
            return "-"
        return f"{obj.process_pid}@{obj.process_host or '?'}"

    @admin.display(description="owner")
    def owner(self, obj: HeartbeatRun) -> str:
        if obj.status != RunStatus.RUNNING:
            return "-"
        liveness = selectors.run_owner_liveness(obj)
        where = f"{obj.owner_pid}@{obj.owner_host}" if obj.owner_pid else "none recorded"
        return f"{where} ({_liveness_text(liveness)})"

    @admin.display(description="lease")
    def lease(self, obj: HeartbeatRun) -> str:
        remaining = selectors.run_lease_remaining(obj, timezone.now())
        if remaining is None or obj.status != RunStatus.RUNNING:
            return "-"
        if remaining >= 0:
            return f"{humanize_seconds(remaining)} left"
        return format_html(
            '<span class="pc-warn">expired {} ago</span>', humanize_seconds(remaining)
        )

    @admin.display(description="retry of / retried by")
    def retries(self, obj: HeartbeatRun) -> str:
        parts = []
        if obj.retry_of_run_id:
            parent = admin_link(
                None, short_id(obj.retry_of_run_id), pk=obj.retry_of_run_id, model=HeartbeatRun
            )
            parts.append(format_html("of {}", parent))
        retry_id = getattr(obj, "retried_by_id", None)
        if retry_id:
            label = f"{short_id(retry_id)} ({obj.retried_by_status})"
            child = admin_link(None, label, pk=retry_id, model=HeartbeatRun)
            parts.append(format_html("by {}", child))
        if not parts:
            return "-"
        return format_html_join(mark_safe("<br>"), "{}", ((part,) for part in parts))

    @admin.display(description="what happens next")
    def diagnosis(self, obj: HeartbeatRun) -> str:
        return selectors.run_diagnosis(obj, timezone.now())

    @admin.display(description="summary")
    def summary(self, obj: HeartbeatRun) -> str:
        """The CLI's final result text (posted as the issue comment when the run left none)."""
        text = (obj.result_json or {}).get("summary") if isinstance(obj.result_json, dict) else None
        if not isinstance(text, str) or not text:
            return "-"
        return format_html('<div class="pc-summary">{}</div>', text)

    @admin.display(description="usage and cost")
    def usage(self, obj: HeartbeatRun) -> str:
        return selectors.run_usage_text(obj)

    @admin.display(description="CLI session")
    def session(self, obj: HeartbeatRun) -> str:
        return selectors.run_session_text(obj)

    @admin.display(description="wakeup")
    def wakeup_link(self, obj: HeartbeatRun) -> str:
        own = (
            admin_link(
                None,
                short_id(obj.wakeup_request_id),
                pk=obj.wakeup_request_id,
                model=AgentWakeupRequest,
            )
            if obj.wakeup_request_id
            else "-"
        )
        return format_html(
            "{} · {}",
            own,
            changelist_link(AgentWakeupRequest, "all wakes of this run", run=obj.pk),
        )

    @admin.display(description="retry chain")
    def retry_chain(self, obj: HeartbeatRun) -> str:
        chain = selectors.run_retry_chain(obj, max_hops=_RETRY_CHAIN_MAX_HOPS)
        if len(chain) == 1:
            return "no retries"
        return format_html_join(
            " → ",
            "{}",
            (
                (
                    format_html("<strong>{}</strong>", _chain_label(run))
                    if run.pk == obj.pk
                    else admin_link(run, _chain_label(run)),
                )
                for run in chain
            ),
        )

    @admin.display(description="process liveness")
    def process_liveness(self, obj: HeartbeatRun) -> str:
        return _liveness_text(selectors.run_process_liveness(obj))

    @admin.display(description="owner liveness")
    def owner_liveness(self, obj: HeartbeatRun) -> str:
        return _liveness_text(selectors.run_owner_liveness(obj))

    @admin.display(description="watched by")
    def watcher(self, obj: HeartbeatRun) -> str:
        return selectors.run_watcher(obj)

    @admin.display(description="log tail")
    def log_tail(self, obj: HeartbeatRun) -> str:
        tail = selectors.run_log_tail(obj)
        if tail.note:
            return tail.note
        header = (
            f"last {len(tail.lines)} lines of {tail.size} bytes"
            if tail.truncated
            else f"whole log, {tail.size} bytes"
        )
        return format_html(
            '<div class="pc-log-head">{}</div><pre class="pc-log">{}</pre>',
            header,
            "\n".join(tail.lines),
        )


def _reconcile_counts(result) -> str:
    return (
        f"re-dispatch {result.dispatch_requeued}, continue {result.continuation_requeued}, "
        f"escalate {result.escalated} issue(s), skip {result.skipped}, errors {result.errors}"
    )


def _wake_message(agent: Agent, result, *, retry_of: HeartbeatRun | None = None) -> str:
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


def _chain_label(run: HeartbeatRun) -> str:
    code = f" {run.error_code}" if run.error_code else ""
    return f"{short_id(run.pk)} {run.status}{code}"


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
            self.message_user(request, _wake_message(agent, result), messages.SUCCESS)

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


@admin.register(SweepRecord)
class SweepRecordAdmin(BigTableAdmin):
    """Sweeps span every company, so only instance admins list them (the dashboard summarises)."""

    list_display = ["started_at", "kind", "host", "duration", "outcome", "error"]
    list_filter = ["kind", "host"]
    date_hierarchy = "started_at"

    @admin.display(description="took", ordering="duration_ms")
    def duration(self, obj: SweepRecord) -> str:
        return f"{obj.duration_ms:.0f} ms"

    @admin.display(description="result")
    def outcome(self, obj: SweepRecord) -> str:
        return selectors.sweep_summary(obj.result)

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
