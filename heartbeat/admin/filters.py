"""The run list's filters and its search."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q
from django.db.models.fields.json import KT
from django.utils import timezone

from heartbeat import selectors
from heartbeat.models import ACTIVE_RUN_STATUSES, Agent, HeartbeatRun, RunErrorCode, SweepRecord
from heartbeat.process_control import current_host
from issues.models import Issue
from paperclip.admin import as_uuid

# A word search finds the runs of at most this many matching issues and agents (newest issues).
_SEARCH_MAX_ISSUES = 200
_SEARCH_MAX_AGENTS = 200


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


def search_runs(queryset, search_term: str):
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
