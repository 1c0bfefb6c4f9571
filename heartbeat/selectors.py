"""Read-only questions the operator console asks: each answers in a fixed number of queries,
whatever the number of rows, so the admin and the dashboard stay fast on big tables."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from django.core.cache import cache
from django.db.models import Count, F, OuterRef, Q, Subquery, TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Trunc
from django_q.models import OrmQ, Schedule
from django_q.status import Stat

from heartbeat.conf import heartbeat_conf
from heartbeat.models import (
    ACTIVE_RUN_STATUSES,
    BUDGET_PAUSE_REASON,
    Agent,
    AgentStatus,
    HeartbeatRun,
    RunErrorCode,
    RunStatus,
    RunSupervisor,
    SweepRecord,
)
from heartbeat.process_control import Liveness, ProcessIdentity, probe
from heartbeat.run_log import run_log_path_inside_root
from heartbeat.services import run_process_identity, sweeps_latest
from issues.models import Issue, IssueComment
from issues.wake_rules import CLOSED_STATUSES as CLOSED_ISSUE_STATUSES
from paperclip.models import Company, spend_month_of

# The log tail reads at most this much from the end of a log: enough for the last lines of any
# sane run, and bounded so a multi-gigabyte log costs the same as a small one.
LOG_TAIL_MAX_BYTES = 256 * 1024
_LOG_TAIL_BLOCK = 16 * 1024


def issues_by_id(issue_ids: Iterable[str | uuid.UUID | None]) -> dict[str, Issue]:
    """Issues keyed by their id as text (the form runs keep in context_snapshot.issueId)."""
    valid = set()
    for value in issue_ids:
        try:
            valid.add(uuid.UUID(str(value)))
        except ValueError:
            continue
    if not valid:
        return {}
    return {str(issue.pk): issue for issue in Issue.objects.filter(pk__in=valid)}


def run_owner_liveness(run: HeartbeatRun) -> Liveness | None:
    """Whether the run's owner (its host's run supervisor, or the worker that launched it) is
    alive; None when no owner was recorded.

    Other hosts answer OTHER_HOST: for them only the lease tells (never signalled from here).
    """
    if not run.owner_pid or run.owner_pid <= 0 or not run.owner_host:
        return None
    return probe(
        ProcessIdentity(
            pid=run.owner_pid,
            pgid=None,
            started_at=run.owner_started_at,
            host=run.owner_host,
            boot_id=run.owner_boot_id or "",
        )
    )


def run_process_liveness(run: HeartbeatRun) -> Liveness | None:
    """Whether the run's agent process is alive with its recorded identity; None if unrecorded."""
    identity = run_process_identity(run)
    return None if identity is None else probe(identity)


def run_watcher(run: HeartbeatRun) -> str:
    """Who watches a running run and since when, in a few words ("-" once it has ended)."""
    if run.status != RunStatus.RUNNING:
        return "-"
    if not run.owner_pid:
        return "nobody recorded"
    where = f"pid {run.owner_pid} on {run.owner_host}"
    if run.owner_since is None:
        return f"launched by worker {where}; not yet taken over by its host's run supervisor"
    return f"run supervisor {where}, since {run.owner_since:%Y-%m-%d %H:%M:%S} UTC"


def run_lease_remaining(run: HeartbeatRun, now: datetime) -> float | None:
    """Seconds until the owner's lease expires (negative once expired); None without a lease."""
    if run.lease_expires_at is None:
        return None
    return (run.lease_expires_at - now).total_seconds()


@dataclass(frozen=True)
class LogTail:
    lines: tuple[str, ...]
    # Whether older output exists before the first line shown.
    truncated: bool
    size: int
    note: str = ""


def run_log_tail(run: HeartbeatRun, *, max_lines: int = 80) -> LogTail:
    """The last lines of the run's NDJSON log, read backwards from the end of the file."""
    if not run.log_ref:
        return LogTail((), False, 0, "no log recorded")
    path = run_log_path_inside_root(run.log_ref)
    if path is None:
        return LogTail((), False, 0, "log outside the log directory")
    if run.log_compressed:
        return LogTail((), False, run.log_bytes or 0, "log is compressed; no inline tail")
    try:
        lines, truncated, size = _tail_lines(path, max_lines)
    except FileNotFoundError:
        return LogTail((), False, 0, "log file not found on this host")
    except OSError as exc:
        return LogTail((), False, 0, f"log unreadable: {exc.strerror}")
    rendered = _render_log_lines(lines)
    return LogTail(tuple(rendered[-max_lines:]), truncated or len(rendered) > max_lines, size)


def _tail_lines(path: Path, max_lines: int) -> tuple[list[str], bool, int]:
    with open(path, "rb") as log:
        size = os.fstat(log.fileno()).st_size
        end = size
        data = b""
        # Read fixed blocks from the end until enough newlines are in hand or the cap is hit.
        while end > 0 and data.count(b"\n") <= max_lines and size - end < LOG_TAIL_MAX_BYTES:
            start = max(0, end - _LOG_TAIL_BLOCK)
            log.seek(start)
            data = log.read(end - start) + data
            end = start
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    # The first line is partial unless the read reached the start of the file.
    if end > 0 and lines:
        lines.pop(0)
    truncated = end > 0 or len(lines) > max_lines
    return [line.decode("utf-8", "replace") for line in lines[-max_lines:]], truncated, size


def _render_log_lines(records: list[str]) -> list[str]:
    """NDJSON records as output lines, `time stream text`.

    A process writes a line in as many chunks as its pipe delivers, so the chunks of a stream
    are joined and split at newlines: a line reads as one line, stamped with the time its first
    chunk arrived. Anything that is not a record is shown as it is.
    """
    rendered: list[str] = []
    # Per stream: the time of the unfinished line's first chunk, and its text so far.
    unfinished: dict[str, tuple[str, str]] = {}
    for raw in records:
        record = _log_record(raw)
        if record is None:
            rendered.append(raw)
            continue
        stamp, stream, text = record
        line_stamp, pending = unfinished.pop(stream, (stamp, ""))
        *complete, rest = (pending + text).split("\n")
        for line in complete:
            rendered.append(_log_line(line_stamp, stream, line))
            line_stamp = stamp
        if rest:
            unfinished[stream] = (line_stamp, rest)
    rendered.extend(_log_line(stamp, stream, rest) for stream, (stamp, rest) in unfinished.items())
    return rendered


def _log_record(raw: str) -> tuple[str, str, str] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    text = record.get("chunk", record.get("text", record.get("message")))
    if text is None:
        return None
    stamp = str(record.get("ts", record.get("time", "")))
    return stamp, str(record.get("stream", "")), str(text)


def _log_line(stamp: str, stream: str, text: str) -> str:
    return " ".join(part for part in (stamp, stream, text.rstrip("\r")) if part)


def stale_run_conditions(now: datetime) -> dict[str, Q]:
    """The console's definitions of a stale run, shared by the run filter and the dashboard.

    owner_gone is what the reaper acts on; silent and queued_long are warnings only (a quiet
    agent may be thinking, a queued run may wait behind its agent's concurrency cap).
    """
    conf = heartbeat_conf()
    threshold = now - timedelta(seconds=conf.reap_stale_threshold_sec)
    running = Q(status=RunStatus.RUNNING)
    return {
        "owner_gone": running & (Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)),
        "detached": running
        & (Q(detached_at__isnull=False) | Q(error_code=RunErrorCode.PROCESS_DETACHED)),
        "silent": running
        & (
            Q(last_activity_at__lt=threshold)
            | Q(last_activity_at__isnull=True, started_at__lt=threshold)
        ),
        "queued_long": Q(status=RunStatus.QUEUED, created_at__lt=threshold),
    }


def run_retry_chain(run: HeartbeatRun, *, max_hops: int = 10) -> list[HeartbeatRun]:
    """The run's lineage, oldest first: the runs it retries, itself, and the runs retrying it."""
    older: list[HeartbeatRun] = []
    parent_id = run.retry_of_run_id
    while parent_id and len(older) < max_hops:
        parent = HeartbeatRun.objects.filter(pk=parent_id).first()
        if parent is None:
            break
        older.append(parent)
        parent_id = parent.retry_of_run_id
    newer: list[HeartbeatRun] = []
    current = run
    while len(newer) < max_hops:
        child = HeartbeatRun.objects.filter(retry_of_run=current).first()
        if child is None:
            break
        newer.append(child)
        current = child
    return [*reversed(older), run, *newer]


def detached_grace_ends_at(run: HeartbeatRun) -> datetime | None:
    """When a detached run's silence grace runs out (it is then terminated); None if attached."""
    if run.detached_at is None:
        return None
    last_sign = max(filter(None, (run.detached_at, run.last_activity_at)))
    return last_sign + timedelta(seconds=heartbeat_conf().detached_grace_sec)


def run_diagnosis(run: HeartbeatRun, now: datetime) -> str:
    """One sentence for the board: what the run is doing and what the system will do next."""
    conf = heartbeat_conf()
    if run.status == RunStatus.QUEUED:
        if run.agent.is_budget_paused:
            return (
                f"Queued, but agent {run.agent.name} is paused because its monthly budget is "
                "spent: it starts when the agent's budget is raised or the month ends."
            )
        company = run.agent.company
        if company.status == Company.Status.PAUSED:
            why = "its monthly budget is spent" if company.is_budget_paused else "paused"
            return (
                f"Queued, but company {company.name} is paused ({why}): it starts when the "
                "company is active again."
            )
        if not run.agent.is_invokable:
            return (
                f"Queued, but agent {run.agent.name} is {run.agent.status}: "
                "it starts only after the agent is resumed."
            )
        return (
            "Queued, waiting for a worker to launch it (or behind the agent's concurrency cap, "
            "or its host's cap on runs at once)."
        )
    if run.status == RunStatus.RUNNING:
        grace_end = detached_grace_ends_at(run)
        if grace_end is not None or run.error_code == RunErrorCode.PROCESS_DETACHED:
            ends = f" at {grace_end:%Y-%m-%d %H:%M:%S} UTC" if grace_end else ""
            return (
                "Detached: its agent is alive but nobody on its host watches it (its run "
                "supervisor is gone). A run supervisor starting on that host adopts it; it is "
                "finalized when the agent exits, and terminated and failed as process_lost if it "
                f"reports no activity before the grace ends{ends}."
            )
        remaining = run_lease_remaining(run, now)
        if remaining is None or remaining < 0:
            why = "no owner lease recorded" if remaining is None else "its owner's lease expired"
            return (
                f"Orphaned ({why}): the next reap sweep finalizes it from its exit report if the "
                "agent ended, fails it as process_lost and queues one retry if nobody knows how "
                "it ended, or marks it detached while the agent still lives."
            )
        return f"Running; watched by the {run_watcher(run)} (lease ends in {int(remaining)} s)."
    if run.status == RunStatus.SUCCEEDED:
        return "Succeeded."
    if run.status == RunStatus.CANCELLED:
        return f"{(run.error or 'Cancelled by the control plane').rstrip('.')}."
    if run.error_code == RunErrorCode.SESSION_UNKNOWN:
        retry = HeartbeatRun.objects.filter(retry_of_run=run).only("id", "status").first()
        if retry is not None:
            verb = "is" if retry.status in ACTIVE_RUN_STATUSES else "ended"
            return (
                "Failed: its CLI no longer had the session it was to resume; the retry in a "
                f"fresh session {str(retry.pk)[:8]} {verb} {retry.status}."
            )
        return "Failed: its CLI no longer had the session it was to resume; no retry was queued."
    if run.error_code == RunErrorCode.PROCESS_LOST:
        retry = HeartbeatRun.objects.filter(retry_of_run=run).only("id", "status").first()
        if retry is not None:
            verb = "is" if retry.status in ACTIVE_RUN_STATUSES else "ended"
            return f"Process lost; automatic retry {str(retry.pk)[:8]} {verb} {retry.status}."
        return (
            "Process lost; no automatic retry (the lineage used its "
            f"{conf.process_loss_retry_limit} retry). If its issue stays assigned with no live "
            "run, the reconciler re-dispatches it once, then escalates it to blocked."
        )
    return (
        f"{run.status.capitalize()} ({run.error_code or 'no error code'}). Only process losses are "
        "retried automatically; an issue left assigned with no live run is re-dispatched once by "
        "the reconciler, then escalated to blocked."
    )


# Counters whose name alone does not say what happened, and what happens next.
_SWEEP_COUNTER_LABELS = {"deferred": "deferred (issue busy, next sweep)"}


def run_usage_text(run: HeartbeatRun) -> str:
    """What the run used and cost, as its CLI reported it ("-" when it reported nothing)."""
    usage = run.usage_json if isinstance(run.usage_json, dict) else {}
    if not usage:
        return "-"
    parts = []
    if "inputTokens" in usage:
        parts.append(
            f"{usage.get('inputTokens', 0):,} input ({usage.get('cachedInputTokens', 0):,} "
            f"cached) and {usage.get('outputTokens', 0):,} output tokens"
        )
    if usage.get("usageBasis") == "session_cumulative" and "rawInputTokens" in usage:
        parts.append(f"session total {usage['rawInputTokens']:,} input tokens")
    cost = usage.get("costUsd")
    parts.append(
        f"${cost:.4f} ({usage.get('costCents', 0)} cents)"
        if cost is not None
        else "no cost reported"
    )
    if usage.get("model"):
        parts.append(str(usage["model"]))
    return "; ".join(parts)


def run_session_text(run: HeartbeatRun) -> str:
    """Which CLI session the run started from and ended in."""
    before, after = run.session_id_before, run.session_id_after
    if not before and not after:
        return "-"
    start = f"resumed {before}" if before else "fresh session"
    if after is None:
        return f"{start}; none kept"
    return f"{start} → {after}" if after != before else start


@dataclass(frozen=True)
class BudgetRow:
    """A company or an agent with a monthly budget, or paused for it."""

    scope: str
    subject: Company | Agent
    company_name: str
    spent: int
    budget: int
    paused: bool

    @property
    def used_percent(self) -> int | None:
        return round(self.spent * 100 / self.budget) if self.budget > 0 else None


BUDGET_ROWS_MAX = 50


def budgets_overview(*, company_ids, now: datetime) -> list[BudgetRow]:
    """Spend against budget this month, paused ones first, then the fullest (at most 50)."""
    month = spend_month_of(now)
    budgeted = Q(budget_monthly_cents__gt=0) | Q(status="paused", pause_reason=BUDGET_PAUSE_REASON)
    companies = _scoped(Company.objects.filter(budgeted), company_ids, "pk")[:BUDGET_ROWS_MAX]
    agents = _scoped(Agent.objects.filter(budgeted).select_related("company"), company_ids)[
        :BUDGET_ROWS_MAX
    ]
    rows = [
        BudgetRow(
            "company",
            company,
            company.name,
            company.monthly_spend_cents(month),
            company.budget_monthly_cents,
            company.is_budget_paused,
        )
        for company in companies
    ] + [
        BudgetRow(
            "agent",
            agent,
            agent.company.name,
            agent.monthly_spend_cents(month),
            agent.budget_monthly_cents,
            agent.is_budget_paused,
        )
        for agent in agents
    ]
    rows.sort(key=lambda row: (not row.paused, -(row.used_percent or 0), row.subject.pk))
    return rows[:BUDGET_ROWS_MAX]


def sweep_summary(result: dict | None) -> str:
    """A sweep's counters as text ("reaped 2", "dispatch_requeued 1, escalated 1")."""
    counters = [
        f"{_SWEEP_COUNTER_LABELS.get(key, key)} {value}"
        for key, value in (result or {}).items()
        if isinstance(value, int) and not isinstance(value, bool) and value
    ]
    return ", ".join(counters) or "nothing to do"


# --- The dashboard: "what is stuck", per company, in a fixed number of queries. -------------

# Rows per dashboard section: the sections are for attention, the admin lists have the rest.
DASHBOARD_ROWS = 50
LOST_WINDOW = timedelta(hours=24)
CHART_CACHE_SEC = 30


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "process_lost"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ACTIVE = "active"


@dataclass(frozen=True)
class ActiveRunRow:
    run: HeartbeatRun
    issue: Issue | None
    owner_liveness: Liveness | None
    lease_remaining: float | None

    @property
    def owner_lost(self) -> bool:
        """Lease gone or owner process confirmed dead: the reaper will act on this run."""
        if self.lease_remaining is None or self.lease_remaining < 0:
            return True
        return self.owner_liveness is not None and self.owner_liveness.is_dead


@dataclass(frozen=True)
class DetachedRunRow:
    run: HeartbeatRun
    issue: Issue | None
    silent_for: float
    grace_ends_at: datetime | None
    grace_left: float | None


@dataclass(frozen=True)
class LostRunRow:
    run: HeartbeatRun
    issue: Issue | None
    retry_id: uuid.UUID | None
    retry_status: str | None
    retry_error_code: str | None


@dataclass(frozen=True)
class IssueRow:
    issue: Issue
    latest_run_id: uuid.UUID | None
    latest_run_status: str | None
    latest_run_error_code: str | None
    escalation_comment: str | None


@dataclass(frozen=True)
class SweepRow:
    kind: str
    record: SweepRecord | None
    overdue: bool
    summary: str


@dataclass(frozen=True)
class ClusterHealth:
    """Whether a django-q2 cluster consumes the queue (cluster_health says how it is judged)."""

    # Clusters reporting through django-q2's stat cache (only visible with a shared cache).
    clusters: tuple[str, ...]
    # Tasks waiting for a worker to take them, and how long the oldest has waited.
    queued_tasks: int
    oldest_queued_task_age_sec: float
    # Repeating schedules that should have fired a stall period ago (the first ten).
    overdue_schedules: tuple[str, ...]
    # A task waited for a worker longer than the stall period.
    queue_stalled: bool
    # Every recovery sweep is overdue and no cluster reports its status.
    sweeps_silent: bool

    @property
    def down(self) -> bool:
        """Any one sign is enough: the queue stalled, a schedule did not fire, or the sweeps
        stopped finishing with no cluster reporting."""
        return self.queue_stalled or bool(self.overdue_schedules) or self.sweeps_silent


@dataclass(frozen=True)
class SupervisorRow:
    """A host's run supervisor as the dashboard shows it."""

    supervisor: RunSupervisor
    # Running runs launched on its host (the ones it should watch).
    runs_on_host: int
    renewed_ago: float
    # Probed on this host; OTHER_HOST elsewhere, where only the renewals tell.
    liveness: Liveness

    @property
    def state(self) -> str:
        """watching, stopped (cleanly), or gone (dead here, or silent past the lease expiry)."""
        if self.supervisor.stopped_at is not None:
            return "stopped"
        if self.liveness.is_dead or self.renewed_ago > heartbeat_conf().lease_expiry_sec:
            return "gone"
        return "watching"


@dataclass(frozen=True)
class ChartBucket:
    start: datetime
    counts: dict[str, int]


@dataclass(frozen=True)
class DashboardData:
    now: datetime
    company_ids: frozenset[uuid.UUID] | None
    active: list[ActiveRunRow]
    detached: list[DetachedRunRow]
    lost: list[LostRunRow]
    stranded: list[IssueRow]
    escalated: list[IssueRow]
    sweeps: list[SweepRow]
    cluster: ClusterHealth
    supervisors: list[SupervisorRow]
    # Hosts executing runs whose run supervisor is not watching (or none ever ran there).
    unwatched_hosts: list[tuple[str, int]]
    chart_24h: list[ChartBucket]
    chart_7d: list[ChartBucket]
    queued_count: int
    running_count: int
    budgets: list[BudgetRow]

    @property
    def budget_paused(self) -> int:
        return sum(1 for row in self.budgets if row.paused)


def _scoped(queryset, company_ids, field: str = "company_id"):
    return queryset if company_ids is None else queryset.filter(**{f"{field}__in": company_ids})


def _with_issues(runs: list[HeartbeatRun]) -> dict[str, Issue]:
    return issues_by_id(run.issue_id for run in runs)


def runs_active(*, company_ids, now: datetime) -> list[ActiveRunRow]:
    """Running runs (detached ones have their own section), oldest lease first."""
    runs = list(
        _scoped(HeartbeatRun.objects.filter(status=RunStatus.RUNNING), company_ids)
        .exclude(detached_at__isnull=False)
        .exclude(error_code=RunErrorCode.PROCESS_DETACHED)
        .select_related("agent", "company")
        .order_by(F("lease_expires_at").asc(nulls_first=True), "started_at")[:DASHBOARD_ROWS]
    )
    issues = _with_issues(runs)
    return [
        ActiveRunRow(
            run=run,
            issue=issues.get(str(run.issue_id)),
            owner_liveness=run_owner_liveness(run),
            lease_remaining=run_lease_remaining(run, now),
        )
        for run in runs
    ]


def runs_detached(*, company_ids, now: datetime) -> list[DetachedRunRow]:
    runs = list(
        _scoped(HeartbeatRun.objects.filter(stale_run_conditions(now)["detached"]), company_ids)
        .select_related("agent", "company")
        .order_by("detached_at")[:DASHBOARD_ROWS]
    )
    issues = _with_issues(runs)
    rows = []
    for run in runs:
        last_sign = max(filter(None, (run.last_activity_at, run.detached_at, run.started_at)))
        grace_end = detached_grace_ends_at(run)
        rows.append(
            DetachedRunRow(
                run=run,
                issue=issues.get(str(run.issue_id)),
                silent_for=(now - last_sign).total_seconds(),
                grace_ends_at=grace_end,
                grace_left=(grace_end - now).total_seconds() if grace_end else None,
            )
        )
    return rows


def runs_lost_recently(*, company_ids, now: datetime) -> list[LostRunRow]:
    """Runs failed as process_lost in the last 24 hours, with their retry and how it ended."""
    retry = HeartbeatRun.objects.filter(retry_of_run=OuterRef("pk"))
    runs = list(
        _scoped(
            HeartbeatRun.objects.filter(
                status=RunStatus.FAILED,
                error_code=RunErrorCode.PROCESS_LOST,
                finished_at__gte=now - LOST_WINDOW,
            ),
            company_ids,
        )
        .annotate(
            retry_id=Subquery(retry.values("pk")[:1]),
            retry_status=Subquery(retry.values("status")[:1]),
            retry_error_code=Subquery(retry.values("error_code")[:1]),
        )
        .select_related("agent", "company")
        .order_by("-finished_at")[:DASHBOARD_ROWS]
    )
    issues = _with_issues(runs)
    return [
        LostRunRow(
            run=run,
            issue=issues.get(str(run.issue_id)),
            retry_id=run.retry_id,
            retry_status=run.retry_status,
            retry_error_code=run.retry_error_code,
        )
        for run in runs
    ]


def _issue_rows(queryset) -> list[IssueRow]:
    latest_run = (
        HeartbeatRun.objects.alias(issue_key=KT("context_snapshot__issueId"))
        .filter(issue_key=Cast(OuterRef("pk"), TextField()))
        .order_by("-created_at")
    )
    escalation = IssueComment.objects.filter(
        issue=OuterRef("pk"), author_agent__isnull=True, author_user_id__isnull=True
    ).order_by("-created_at")
    issues = queryset.select_related("assignee_agent", "company").annotate(
        latest_run_id=Subquery(latest_run.values("pk")[:1]),
        latest_run_status=Subquery(latest_run.values("status")[:1]),
        latest_run_error_code=Subquery(latest_run.values("error_code")[:1]),
        escalation_comment=Subquery(escalation.values("body")[:1]),
    )
    return [
        IssueRow(
            issue=issue,
            latest_run_id=issue.latest_run_id,
            latest_run_status=issue.latest_run_status,
            latest_run_error_code=issue.latest_run_error_code,
            escalation_comment=issue.escalation_comment,
        )
        for issue in issues.order_by("updated_at")[:DASHBOARD_ROWS]
    ]


def issues_stranded(*, company_ids) -> list[IssueRow]:
    """Assigned issues with no live execution path: the reconciler's next candidates."""
    return _issue_rows(_scoped(Issue.objects.stranded(), company_ids))


def issues_escalated(*, company_ids) -> list[IssueRow]:
    """Issues the reconciler gave up on (blocked with its comment): they need a person."""
    return _issue_rows(_scoped(Issue.objects.escalated(), company_ids))


def sweeps_status(*, now: datetime) -> list[SweepRow]:
    return [
        SweepRow(
            kind=kind,
            record=latest.record,
            overdue=latest.overdue,
            summary=sweep_summary(latest.record.result) if latest.record else "never ran",
        )
        for kind, latest in sweeps_latest(now=now).items()
    ]


def cluster_health(*, now: datetime, sweeps_overdue: bool) -> ClusterHealth:
    """Whether the django-q2 cluster works, from what the database shows: the one judgement
    behind the dashboard's warning and /api/health.

    django-q2's own cluster stats live in Django's cache, which is per process unless a shared
    cache is configured: a reporting cluster is worth naming, an empty list proves nothing. So
    the broker table decides (a task waiting, a schedule not fired, past the stall period the
    cluster itself uses to call its queue stuck), and the sweeps (`sweeps_overdue`: every
    recovery sweep missed its intervals) where no cluster reports.
    """
    stall = timedelta(seconds=heartbeat_conf().cluster_stuck_after_sec)
    clusters = tuple(
        f"{stat.host} ({stat.status})" for stat in Stat.get_all() if getattr(stat, "host", None)
    )
    # A task's lock is its enqueue time until a worker pulls it (then it moves into the future).
    waiting = OrmQ.objects.filter(lock__lte=now)
    oldest_task = waiting.order_by("lock").values_list("lock", flat=True).first()
    oldest_age = (now - oldest_task).total_seconds() if oldest_task else 0.0
    overdue_schedules = tuple(
        Schedule.objects.filter(next_run__lt=now - stall)
        .exclude(repeats=0)
        .order_by("next_run")
        .values_list("name", flat=True)[:10]
    )
    return ClusterHealth(
        clusters=clusters,
        queued_tasks=waiting.count(),
        oldest_queued_task_age_sec=oldest_age,
        overdue_schedules=tuple(name or "(unnamed)" for name in overdue_schedules),
        queue_stalled=oldest_age >= stall.total_seconds(),
        sweeps_silent=sweeps_overdue and not clusters,
    )


def run_supervisors(*, now: datetime) -> tuple[list[SupervisorRow], list[tuple[str, int]]]:
    """Every host's run supervisor, and the hosts running runs that no supervisor watches.

    Two queries whatever the number of hosts and runs.
    """
    running = dict(
        HeartbeatRun.objects.filter(status=RunStatus.RUNNING, owner_host__isnull=False)
        .values_list("owner_host")
        .annotate(n=Count("pk"))
        .order_by()
    )
    rows = [
        SupervisorRow(
            supervisor=supervisor,
            runs_on_host=running.get(supervisor.host, 0),
            renewed_ago=(now - supervisor.renewed_at).total_seconds(),
            liveness=probe(
                ProcessIdentity(
                    pid=supervisor.pid,
                    pgid=None,
                    started_at=supervisor.process_started_at,
                    host=supervisor.host,
                    boot_id=supervisor.boot_id,
                )
            ),
        )
        for supervisor in RunSupervisor.objects.order_by("host")
    ]
    watched = {row.supervisor.host for row in rows if row.state == "watching"}
    unwatched = sorted((host, n) for host, n in running.items() if host not in watched)
    return rows, unwatched


def _outcome(status: str, error_code: str | None) -> str:
    if status in ACTIVE_RUN_STATUSES:
        return Outcome.ACTIVE
    if status == RunStatus.FAILED and error_code == RunErrorCode.PROCESS_LOST:
        return Outcome.LOST
    return Outcome(status)


def runs_by_outcome(
    *, company_ids, now: datetime, span: timedelta, bucket: str
) -> list[ChartBucket]:
    """Runs created in the span, counted per `bucket` ("hour" or "day") and current outcome."""
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    end = _truncate(now, bucket)
    start = end - span + step
    rows = (
        _scoped(HeartbeatRun.objects.filter(created_at__gte=start), company_ids)
        .annotate(bucket=Trunc("created_at", bucket, tzinfo=UTC))
        .values("bucket", "status", "error_code")
        .annotate(n=Count("pk"))
        .order_by()
    )
    buckets = {start + i * step: dict.fromkeys(Outcome, 0) for i in range(int(span / step))}
    for row in rows:
        counts = buckets.get(row["bucket"])
        if counts is not None:
            counts[_outcome(row["status"], row["error_code"])] += row["n"]
    return [ChartBucket(start=moment, counts=counts) for moment, counts in buckets.items()]


def _runs_by_outcome_cached(
    *, company_ids, now: datetime, span: timedelta, bucket: str
) -> list[ChartBucket]:
    """The chart changes slowly, but the dashboard refreshes every few seconds in every open
    browser: the aggregate over a week of runs is computed once per CHART_CACHE_SEC."""
    scope = "all" if company_ids is None else ",".join(sorted(map(str, company_ids)))
    digest = hashlib.sha256(scope.encode()).hexdigest()[:16]
    return cache.get_or_set(
        f"console:runs-by-outcome:{bucket}:{span.total_seconds():.0f}:{digest}",
        lambda: runs_by_outcome(company_ids=company_ids, now=now, span=span, bucket=bucket),
        CHART_CACHE_SEC,
    )


def _truncate(moment: datetime, bucket: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if bucket == "day" else moment


def dashboard_data(*, company_ids: frozenset[uuid.UUID] | None, now: datetime) -> DashboardData:
    """Everything the dashboard shows for these companies (None: all), in a fixed query count."""
    counts = dict(
        _scoped(HeartbeatRun.objects.active(), company_ids)
        .values_list("status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    sweeps = sweeps_status(now=now)
    supervisors, unwatched_hosts = run_supervisors(now=now)
    return DashboardData(
        now=now,
        company_ids=company_ids,
        active=runs_active(company_ids=company_ids, now=now),
        detached=runs_detached(company_ids=company_ids, now=now),
        lost=runs_lost_recently(company_ids=company_ids, now=now),
        stranded=issues_stranded(company_ids=company_ids),
        escalated=issues_escalated(company_ids=company_ids),
        sweeps=sweeps,
        cluster=cluster_health(now=now, sweeps_overdue=all(sweep.overdue for sweep in sweeps)),
        supervisors=supervisors,
        unwatched_hosts=unwatched_hosts,
        chart_24h=_runs_by_outcome_cached(
            company_ids=company_ids, now=now, span=timedelta(hours=24), bucket="hour"
        ),
        chart_7d=_runs_by_outcome_cached(
            company_ids=company_ids, now=now, span=timedelta(days=7), bucket="day"
        ),
        queued_count=counts.get(RunStatus.QUEUED, 0),
        running_count=counts.get(RunStatus.RUNNING, 0),
        budgets=budgets_overview(company_ids=company_ids, now=now),
    )


# Days of run activity in the company summary (Paperclip's DASHBOARD_RUN_ACTIVITY_DAYS).
SUMMARY_RUN_ACTIVITY_DAYS = 14
# A retry chain longer than this is not followed further when finding recovered runs.
_RECOVERY_CHAIN_MAX_HOPS = 10


def company_summary(*, company: Company, now: datetime) -> dict:
    """Paperclip's dashboard summary of one company: agents and issues by state, spend against
    budget, and 14 days of runs (a failed run whose retry later succeeded counts as recovered).

    This product has no approvals table or budget policies: pending approvals are the agents
    waiting for board approval, and a budget incident is an agent or the company paused for its
    monthly budget.
    """
    agents = dict(
        Agent.objects.filter(company=company)
        .values_list("status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    issues = dict(
        Issue.objects.filter(company=company, hidden_at__isnull=True)
        .values_list("status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    budget = company.budget_monthly_cents
    spent = company.monthly_spend_cents(spend_month_of(now))
    budget_paused_agents = Agent.objects.filter(
        company=company, status=AgentStatus.PAUSED, pause_reason=BUDGET_PAUSE_REASON
    ).count()
    return {
        "companyId": company.id,
        "agents": {
            "active": agents.get(AgentStatus.ACTIVE, 0) + agents.get(AgentStatus.IDLE, 0),
            "running": agents.get(AgentStatus.RUNNING, 0),
            "paused": agents.get(AgentStatus.PAUSED, 0),
            "error": agents.get(AgentStatus.ERROR, 0),
        },
        "tasks": {
            "open": sum(n for status, n in issues.items() if status not in CLOSED_ISSUE_STATUSES),
            "inProgress": issues.get(Issue.Status.IN_PROGRESS, 0),
            "blocked": issues.get(Issue.Status.BLOCKED, 0),
            "done": issues.get(Issue.Status.DONE, 0),
        },
        "costs": {
            "monthSpendCents": spent,
            "monthBudgetCents": budget,
            "monthUtilizationPercent": round(spent / budget * 100, 2) if budget > 0 else 0,
        },
        "pendingApprovals": agents.get(AgentStatus.PENDING_APPROVAL, 0),
        "budgets": {
            "activeIncidents": budget_paused_agents + int(company.is_budget_paused),
            "pendingApprovals": 0,
            "pausedAgents": budget_paused_agents,
            "pausedProjects": 0,
        },
        "runActivity": _run_activity(company=company, now=now),
    }


def _run_activity(*, company: Company, now: datetime) -> list[dict]:
    today = now.astimezone(UTC).date()
    days = [today - timedelta(days=back) for back in range(SUMMARY_RUN_ACTIVITY_DAYS - 1, -1, -1)]
    start = datetime.combine(days[0], datetime.min.time(), tzinfo=UTC)
    runs = HeartbeatRun.objects.filter(company=company, created_at__gte=start)
    recovered = _recovered_run_ids(runs)
    activity = {
        day: {
            "date": day.isoformat(),
            "succeeded": 0,
            "failed": 0,
            "recovered": 0,
            "other": 0,
            "total": 0,
            "failedByErrorCode": {},
        }
        for day in days
    }
    for run_id, created_at, status, error_code in runs.values_list(
        "id", "created_at", "status", "error_code"
    ):
        bucket = activity.get(created_at.astimezone(UTC).date())
        if bucket is None:
            continue
        bucket["total"] += 1
        if status == RunStatus.SUCCEEDED:
            bucket["succeeded"] += 1
        elif status not in (RunStatus.FAILED, RunStatus.TIMED_OUT):
            bucket["other"] += 1
        elif run_id in recovered:
            bucket["recovered"] += 1
        else:
            bucket["failed"] += 1
            code = error_code or "unknown"
            bucket["failedByErrorCode"][code] = bucket["failedByErrorCode"].get(code, 0) + 1
    return list(activity.values())


def _recovered_run_ids(runs) -> set[uuid.UUID]:
    """The runs of `runs` that a later retry in the same window made good."""
    recovered: set[uuid.UUID] = set()
    frontier = set(
        runs.filter(status=RunStatus.SUCCEEDED, retry_of_run__isnull=False).values_list(
            "retry_of_run_id", flat=True
        )
    )
    for _ in range(_RECOVERY_CHAIN_MAX_HOPS):
        frontier -= recovered
        if not frontier:
            break
        recovered |= frontier
        frontier = set(
            runs.filter(pk__in=frontier, retry_of_run__isnull=False).values_list(
                "retry_of_run_id", flat=True
            )
        )
    return recovered
