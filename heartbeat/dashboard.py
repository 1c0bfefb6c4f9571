"""The board's "what is stuck" dashboard: a page in the admin, refreshed in place every few
seconds by fetching its fragment (no external scripts)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.urls import path
from django.utils import timezone

from heartbeat import selectors
from heartbeat.conf import heartbeat_conf
from heartbeat.services.sweeps import sweep_overdue_sec
from paperclip.admin import board_company_ids
from paperclip.models import Company

REFRESH_MS = 5000

_CHART_WIDTH = 720
_CHART_HEIGHT = 160
_CHART_LEFT = 36
_CHART_BOTTOM = 18
_CHART_TOP = 8
# Stacking order, bottom up: the outcomes that need attention sit on top where the eye lands.
_OUTCOME_ORDER = [
    selectors.Outcome.SUCCEEDED,
    selectors.Outcome.ACTIVE,
    selectors.Outcome.CANCELLED,
    selectors.Outcome.TIMED_OUT,
    selectors.Outcome.FAILED,
    selectors.Outcome.LOST,
]


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    outcome: str
    title: str


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    plot_left: int
    plot_bottom: float
    max_value: int
    bars: list[Bar]
    labels: list[tuple[float, str]]
    totals: dict[str, int]


def outcome_chart(title: str, buckets: list[selectors.ChartBucket], label_format: str) -> Chart:
    """Stacked bars, one per bucket, laid out for a server-rendered SVG."""
    plot_width = _CHART_WIDTH - _CHART_LEFT
    plot_height = _CHART_HEIGHT - _CHART_BOTTOM - _CHART_TOP
    slot = plot_width / max(len(buckets), 1)
    max_value = max((sum(b.counts.values()) for b in buckets), default=0) or 1
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    totals = dict.fromkeys(_OUTCOME_ORDER, 0)
    label_every = max(1, len(buckets) // 8)
    for index, bucket in enumerate(buckets):
        x = _CHART_LEFT + index * slot + slot * 0.1
        y = _CHART_TOP + plot_height
        for outcome in _OUTCOME_ORDER:
            count = bucket.counts.get(outcome, 0)
            totals[outcome] += count
            if not count:
                continue
            height = plot_height * count / max_value
            y -= height
            bars.append(
                Bar(
                    x=round(x, 1),
                    y=round(y, 1),
                    width=round(slot * 0.8, 1),
                    height=round(height, 1),
                    outcome=outcome,
                    title=f"{bucket.start:{label_format}} UTC: {count} {outcome}",
                )
            )
        if index % label_every == 0:
            labels.append((round(x + slot * 0.4, 1), f"{bucket.start:{label_format}}"))
    return Chart(
        title=title,
        width=_CHART_WIDTH,
        height=_CHART_HEIGHT,
        plot_left=_CHART_LEFT,
        plot_bottom=_CHART_TOP + plot_height,
        max_value=max_value,
        bars=bars,
        labels=labels,
        totals=totals,
    )


def _visible_companies(request) -> frozenset[uuid.UUID] | None:
    ids = board_company_ids(request)
    if ids is not None and not ids:
        raise PermissionDenied("You are not on the board of any company.")
    return ids


def _selected_companies(request, visible) -> tuple[frozenset[uuid.UUID] | None, str]:
    """The companies the request asks for (?company=<id>), within those the user may see."""
    raw = request.GET.get("company", "")
    if not raw:
        return visible, ""
    try:
        company_id = uuid.UUID(raw)
    except ValueError as exc:
        raise Http404("No such company") from exc
    if visible is not None and company_id not in visible:
        raise Http404("No such company")
    return frozenset({company_id}), str(company_id)


def _fragment_context(request) -> dict:
    visible = _visible_companies(request)
    selected, selected_id = _selected_companies(request, visible)
    data = selectors.dashboard_data(company_ids=selected, now=timezone.now())
    conf = heartbeat_conf()
    return {
        "data": data,
        "selected_company": selected_id,
        "show_company": selected is None or len(selected) > 1,
        "is_instance_admin": visible is None,
        "detached_grace_sec": conf.detached_grace_sec,
        "sweep_overdue_sec": sweep_overdue_sec(),
        "chart_24h": outcome_chart("Runs by outcome, last 24 hours", data.chart_24h, "%H:00"),
        "chart_7d": outcome_chart("Runs by outcome, last 7 days", data.chart_7d, "%a %d"),
        "outcomes": _OUTCOME_ORDER,
    }


def dashboard_view(request):
    context = _fragment_context(request)
    visible = board_company_ids(request)
    companies = Company.objects.order_by("name")
    if visible is not None:
        companies = companies.filter(pk__in=visible)
    context.update(
        admin.site.each_context(request),
        title="What is stuck",
        companies=list(companies),
        refresh_ms=REFRESH_MS,
    )
    return render(request, "admin/heartbeat/dashboard.html", context)


def dashboard_fragment_view(request):
    return render(request, "admin/heartbeat/dashboard_fragment.html", _fragment_context(request))


urlpatterns = [
    path("", admin.site.admin_view(dashboard_view), name="heartbeat-dashboard"),
    path(
        "fragment/",
        admin.site.admin_view(dashboard_fragment_view),
        name="heartbeat-dashboard-fragment",
    ),
]
