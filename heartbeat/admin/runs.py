"""The run list and the run page: which run is stuck, why, and what happens next; cancel and
retry from there."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from heartbeat import selectors
from heartbeat.admin.agents import wake_message
from heartbeat.admin.filters import (
    AdapterTypeFilter,
    RunErrorCodeFilter,
    RunHostFilter,
    StaleRunFilter,
    search_runs,
)
from heartbeat.admin.sweeps import RunSweepViews
from heartbeat.models import (
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunErrorCode,
    RunStatus,
)
from heartbeat.services import (
    AgentNotFound,
    AgentNotInvokable,
    RunNotFound,
    RunNotRetryable,
    cancel_run,
    run_retry_now,
)
from paperclip.admin import (
    BigTableAdmin,
    MachineOwnedAdmin,
    PrefetchingChangeList,
    actor_of,
    admin_link,
    age_of,
    as_uuid,
    changelist_link,
    humanize_seconds,
    short_id,
)


def run_duration_text(seconds: float) -> str:
    """A run's duration: tenths of a second under a minute (runs are often that short)."""
    return f"{seconds:.1f}s" if seconds < 60 else humanize_seconds(seconds)


# How many retry hops the run page follows each way (a lineage is short: one automatic retry,
# one stranded-issue recovery), so a corrupt loop cannot hang the page.
_RETRY_CHAIN_MAX_HOPS = 10
# Events shown inline on a run page; the rest are one link away.
_INLINE_EVENTS = 50


def _status_badge(status: str) -> str:
    return format_html('<span class="pc-status pc-status-{}">{}</span>', status, status)


def _liveness_text(liveness) -> str:
    return "-" if liveness is None else str(liveness)


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
class HeartbeatRunAdmin(RunSweepViews, BigTableAdmin, MachineOwnedAdmin):
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

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_operate": self.has_operate_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)

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
                request, wake_message(run.agent, result, retry_of=run), messages.SUCCESS
            )
        return self._back_to_run_page(request, queryset)

    def _back_to_run_page(self, request, queryset):
        """Actions started from a run page (its buttons) return to that page."""
        if request.POST.get("_from_change_page") and queryset.count() == 1:
            return HttpResponseRedirect(
                reverse("admin:heartbeat_heartbeatrun_change", args=[queryset.get().pk])
            )
        return None

    def prefetch_for_page(self, request, runs):
        issues = selectors.issues_by_id(run.issue_id for run in runs)
        for run in runs:
            run.console_issue = issues.get(str(run.issue_id))

    def get_search_results(self, request, queryset, search_term):
        return search_runs(queryset, search_term), False

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


def _chain_label(run: HeartbeatRun) -> str:
    code = f" {run.error_code}" if run.error_code else ""
    return f"{short_id(run.pk)} {run.status}{code}"
