"""The recovery sweeps started by hand from the run list (a dry run first), and their record."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from heartbeat import selectors
from heartbeat.conf import heartbeat_conf
from heartbeat.models import HeartbeatRun, SweepRecord
from heartbeat.process_control import current_host
from heartbeat.services import reap_orphaned_runs, reconcile_stranded_assigned_issues
from issues.models import Issue
from paperclip.admin import BigTableAdmin, admin_link, short_id


class RunSweepViews:
    """The run list's "Reap now" and "Reconcile now" pages (instance admins only)."""

    def has_sweep_permission(self, request) -> bool:
        """Sweeps act on every company, so only instance admins start them by hand."""
        return request.user.is_active and request.user.is_superuser

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_sweep": self.has_sweep_permission(request),
        }
        return super().changelist_view(request, extra_context)

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


def _reconcile_counts(result) -> str:
    return (
        f"re-dispatch {result.dispatch_requeued}, continue {result.continuation_requeued}, "
        f"escalate {result.escalated} issue(s), skip {result.skipped}, errors {result.errors}"
    )


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
