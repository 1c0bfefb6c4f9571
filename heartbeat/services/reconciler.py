"""reconcile_stranded_assigned_issues: re-dispatch agent-assigned issues nobody is working on.

A `todo` or `in_progress` issue assigned to an invokable agent, with no queued or running run,
no deferred or queued wake, is stranded. It is re-dispatched (todo) or continued (in_progress)
once; when the latest run already was that recovery, the issue is escalated to `blocked` with
one system comment saying what was tried, what failed last, and who should act.

Issues are locked FOR UPDATE SKIP LOCKED a batch at a time and each batch is written with a
fixed number of statements: a wake racing us either holds the issue (we skip it) or is
refused by run_one_active_per_issue, and an escalation is a compare-and-set on the status it
was decided from, so a concurrent change is never overwritten and no second comment is
written.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum

from django.db import IntegrityError, transaction

from heartbeat import process_control
from heartbeat.conf import HeartbeatConf, heartbeat_conf
from heartbeat.models import (
    ACTIVE_RUN_STATUSES,
    WAITING_WAKEUP_STATUSES,
    Agent,
    AgentStatus,
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunStatus,
    SweepKind,
    WakeSource,
)
from heartbeat.services.policy import heartbeat_policy
from heartbeat.services.sweeps import (
    EventRow,
    QueuedRunRow,
    SweepLock,
    SweepPage,
    json_rows,
    run_events_insert,
    runs_dispatch_within_slots,
    runs_queue_with_wakes,
    sql_execute,
    sweep_ids_shown,
    sweep_pages,
    sweep_run,
)
from issues.models import Issue
from issues.services.run_engine import (
    SystemComment,
    issue_system_comments_create,
    issues_block,
    issues_execution_lock_clear,
)
from paperclip.models import Company
from paperclip.services import ActivityRow, activity_log_record_many

logger = logging.getLogger(__name__)

DISPATCH_RETRY_REASON = "assignment_recovery"
DISPATCH_WAKE_REASON = "issue_assignment_recovery"
CONTINUATION_REASON = "issue_continuation_needed"
RECOVERY_ATTEMPT_KEY = "strandedRecoveryAttempt"
_NOT_INVOKABLE = (AgentStatus.PAUSED, AgentStatus.TERMINATED, AgentStatus.PENDING_APPROVAL)
_SUMMARY_MAX = 240
_MESSAGE_FIELD = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"')


# --- Decisions (pure) ---------------------------------------------------------------------------


class StrandedAction(StrEnum):
    SKIP = "skip"
    REQUEUE_DISPATCH = "requeue_dispatch"
    REQUEUE_CONTINUATION = "requeue_continuation"
    ESCALATE_DISPATCH = "escalate_dispatch"
    ESCALATE_CONTINUATION = "escalate_continuation"

    @property
    def requeues(self) -> bool:
        return self in (StrandedAction.REQUEUE_DISPATCH, StrandedAction.REQUEUE_CONTINUATION)

    @property
    def escalates(self) -> bool:
        return self in (StrandedAction.ESCALATE_DISPATCH, StrandedAction.ESCALATE_CONTINUATION)


@dataclass(frozen=True)
class LatestRun:
    """The facts the decision needs about the issue's newest run."""

    status: str
    context: dict

    def recovery_attempts(self, reason: str) -> int:
        """How many recoveries with this reason the lineage already used (0 if not one)."""
        reasons = self.context.get("retryReasons") or []
        carries = self.context.get("retryReason") == reason or (
            isinstance(reasons, list) and reason in reasons
        )
        if not carries:
            return 0
        attempt = self.context.get(RECOVERY_ATTEMPT_KEY)
        return attempt if isinstance(attempt, int) and attempt > 0 else 1


def stranded_decide(
    *,
    issue_status: str,
    agent_invokable: bool,
    agent_wakes_on_demand: bool,
    latest: LatestRun | None,
    recovery_limit: int,
) -> StrandedAction:
    """What to do with a stranded issue (reference 5, with the limit from the settings).

    The latest run "carries" a recovery when its retryReason, or an earlier reason kept in
    retryReasons by a process-loss retry, is that recovery: so the reaper's retry of a
    recovery run does not restart the count (reference 9.5).
    """
    if not agent_invokable or not agent_wakes_on_demand:
        return StrandedAction.SKIP
    if issue_status == Issue.Status.TODO:
        if latest is None or latest.status == RunStatus.SUCCEEDED:
            return StrandedAction.SKIP
        if latest.recovery_attempts(DISPATCH_RETRY_REASON) >= recovery_limit:
            return StrandedAction.ESCALATE_DISPATCH
        return StrandedAction.REQUEUE_DISPATCH
    if issue_status == Issue.Status.IN_PROGRESS:
        # An in_progress issue that never had a run has no execution to continue (later
        # reference versions skip it too).
        if latest is None:
            return StrandedAction.SKIP
        if latest.recovery_attempts(CONTINUATION_REASON) >= recovery_limit:
            return StrandedAction.ESCALATE_CONTINUATION
        return StrandedAction.REQUEUE_CONTINUATION
    return StrandedAction.SKIP


def failure_summary(*, error_code: str | None, error: str | None) -> str:
    """The " Latest retry failure: ..." sentence of the escalation comment (reference 5.2)."""
    code = (error_code or "").strip()
    summary = ""
    if error:
        match = _MESSAGE_FIELD.search(error)
        if match:
            summary = match.group(1).strip()
        else:
            summary = next((line.strip() for line in error.splitlines() if line.strip()), "")
    if len(summary) > _SUMMARY_MAX:
        summary = summary[: _SUMMARY_MAX - 3] + "..."
    if code and summary:
        return f" Latest retry failure: `{code}` - {summary}."
    if code:
        return f" Latest retry failure: `{code}`."
    if summary:
        return f" Latest retry failure: {summary}."
    return ""


def escalation_comment(
    *, action: StrandedAction, agent_name: str, error_code: str | None, error: str | None
) -> str:
    """The one system comment written when an issue is escalated to blocked."""
    failure = failure_summary(error_code=error_code, error=error)
    if action is StrandedAction.ESCALATE_DISPATCH:
        head = (
            "Paperclip automatically retried dispatch for this assigned `todo` issue after a "
            "lost wake/run, but it still has no live execution path."
        )
    else:
        head = (
            "Paperclip automatically retried continuation for this assigned `in_progress` issue "
            "after its live execution disappeared, but it still has no live execution path."
        )
    return (
        f"{head}{failure} Moving it to `blocked` so it is visible for intervention. "
        f"Next step: a board member checks why runs of {agent_name} keep failing, then moves "
        "the issue back to `todo` (or reassigns it) to try again."
    )


# --- Result -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcileResult:
    """Counts per outcome; issue_ids lists requeued and escalated issues in processing order.

    skipped counts stranded candidates that needed or allowed no action this time (agent not
    invokable, nothing failed, a race lost). sweep_skipped is True when another reconcile
    sweep held the lock and this one did nothing.
    """

    dispatch_requeued: int = 0
    continuation_requeued: int = 0
    escalated: int = 0
    skipped: int = 0
    issue_ids: list[uuid.UUID] = field(default_factory=list)
    errors: int = 0
    sweep_skipped: bool = False
    dry_run: bool = False

    @property
    def noteworthy(self) -> bool:
        """Whether the sweep requeued, escalated or failed anything."""
        return bool(self.issue_ids or self.errors)

    def as_dict(self, *, max_ids: int | None = None) -> dict:
        """The JSON shape (commands' --json; sweep records and logs keep max_ids ids)."""
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        return sweep_ids_shown(data, ("issue_ids",), max_ids)


# --- Selector -----------------------------------------------------------------------------------

# Issue.objects.stranded() defines a stranded issue; these statements select the same rows a
# locked page at a time, so the statuses come from the same constants.
_ACTIVE_SQL = "(" + ", ".join(f"'{status}'" for status in ACTIVE_RUN_STATUSES) + ")"
_WAITING_SQL = "(" + ", ".join(f"'{status}'" for status in WAITING_WAKEUP_STATUSES) + ")"

# The page: agent-assigned todo/in_progress issues in creation order, locked. Locked first and
# checked after: a wake creates a run for an issue under that issue's row lock, so no run can
# appear for a locked issue until this batch commits.
_PAGE_SQL = f"""
SELECT i.id, i.company_id, i.status, i.identifier, i.created_at,
       a.id, a.name, a.status, a.runtime_config, a.company_id, er.status
FROM {Issue._meta.db_table} AS i
JOIN {Agent._meta.db_table} AS a ON a.id = i.assignee_agent_id
JOIN {Company._meta.db_table} AS c ON c.id = i.company_id
LEFT JOIN {HeartbeatRun._meta.db_table} AS er ON er.id = i.execution_run_id
WHERE i.status IN ('todo', 'in_progress')
  -- A paused company starts no run: its issues wait for it, nothing is stranded.
  AND c.status <> 'paused'
  AND i.assignee_agent_id IS NOT NULL
  AND i.assignee_user_id IS NULL
  AND (i.created_at, i.id) > (%(after_created)s, %(after_id)s)
  {{only_issue}}
ORDER BY i.created_at, i.id
LIMIT %(limit)s
{{lock}}
"""
# The page's issues that still have a live execution path: an active run, or a wake waiting.
# Set-based over the page (not correlated per issue): the plan cannot degrade into scanning
# every active run once per issue when the statistics are stale.
_ACTIVE_PATH_SQL = f"""
SELECT context_snapshot ->> 'issueId' FROM {HeartbeatRun._meta.db_table}
WHERE (context_snapshot ->> 'issueId') = ANY(%(ids)s) AND status IN {_ACTIVE_SQL}
UNION
SELECT payload ->> 'issueId' FROM {AgentWakeupRequest._meta.db_table}
WHERE (payload ->> 'issueId') = ANY(%(ids)s) AND status IN {_WAITING_SQL}
"""
# The newest run of each issue in its company (any agent, any status).
_LATEST_RUNS_SQL = f"""
SELECT v.issue_key, lr.id, lr.status, lr.context_snapshot, lr.error_code, lr.error,
       lr.process_loss_retry_count
FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(issue_key text, company_id uuid)
JOIN LATERAL (
    SELECT r.id, r.status, r.context_snapshot, r.error_code, r.error, r.process_loss_retry_count
    FROM {HeartbeatRun._meta.db_table} AS r
    WHERE (r.context_snapshot ->> 'issueId') = v.issue_key AND r.company_id = v.company_id
    ORDER BY r.created_at DESC, r.id DESC
    LIMIT 1
) AS lr ON TRUE
"""


@dataclass(frozen=True)
class StrandedIssue:
    issue_id: uuid.UUID
    company_id: uuid.UUID
    status: str
    identifier: str
    created_at: datetime
    agent_id: uuid.UUID
    agent_name: str
    agent_status: str
    agent_runtime_config: dict
    agent_company_id: uuid.UUID
    latest_run_id: uuid.UUID | None
    latest_run_status: str | None
    latest_context: dict
    latest_error_code: str | None
    latest_error: str | None
    latest_process_loss_retry_count: int

    @property
    def latest(self) -> LatestRun | None:
        if self.latest_run_id is None:
            return None
        return LatestRun(status=self.latest_run_status or "", context=self.latest_context)


@dataclass(frozen=True)
class StrandedPage:
    """One page of candidates: the stranded ones, and where the next page starts."""

    issues: list[StrandedIssue]
    scanned: int
    last_key: tuple[datetime, uuid.UUID] | None


def issues_stranded(
    *,
    after: tuple[datetime, uuid.UUID] | None = None,
    limit: int = 500,
    lock: bool = False,
    issue_id: uuid.UUID | None = None,
) -> StrandedPage:
    """The next page of agent-assigned open issues (creation order), reduced to the stranded
    ones (the rows of Issue.objects.stranded(), checked after locking and set-based over the
    page). Optionally locked (SKIP LOCKED).
    """
    sql = _PAGE_SQL.replace(
        "{only_issue}", "AND i.id = %(issue_id)s" if issue_id is not None else ""
    ).replace("{lock}", "FOR UPDATE OF i SKIP LOCKED" if lock else "")
    after_created, after_id = after or (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))
    page = sql_execute(
        sql,
        {
            "after_created": after_created,
            "after_id": after_id,
            "limit": limit,
            "issue_id": issue_id,
        },
    )
    if not page:
        return StrandedPage(issues=[], scanned=0, last_key=None)
    last_key = (page[-1][4], page[-1][0])
    # An execution lock on an active run is a live path too.
    open_rows = [row for row in page if row[10] not in ACTIVE_RUN_STATUSES]
    keys = [str(row[0]) for row in open_rows]
    busy = {row[0] for row in sql_execute(_ACTIVE_PATH_SQL, {"ids": keys})} if keys else set()
    open_rows = [row for row in open_rows if str(row[0]) not in busy]
    latest = {}
    if open_rows:
        latest = {
            row[0]: row[1:]
            for row in sql_execute(
                _LATEST_RUNS_SQL,
                {
                    "rows": json_rows(
                        {"issue_key": str(r[0]), "company_id": r[1]} for r in open_rows
                    )
                },
            )
        }
    issues = []
    for row in open_rows:
        run = latest.get(str(row[0]))
        issues.append(
            StrandedIssue(
                issue_id=row[0],
                company_id=row[1],
                status=row[2],
                identifier=row[3],
                created_at=row[4],
                agent_id=row[5],
                agent_name=row[6],
                agent_status=row[7],
                agent_runtime_config=_json(row[8]),
                agent_company_id=row[9],
                latest_run_id=run[0] if run else None,
                latest_run_status=run[1] if run else None,
                latest_context=_json(run[2]) if run else {},
                latest_error_code=run[3] if run else None,
                latest_error=run[4] if run else None,
                latest_process_loss_retry_count=(run[5] or 0) if run else 0,
            )
        )
    return StrandedPage(issues=issues, scanned=len(page), last_key=last_key)


def _json(value) -> dict:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


# --- Service ------------------------------------------------------------------------------------


def reconcile_stranded_assigned_issues(
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    batch_size: int | None = None,
    single_flight: bool = True,
) -> ReconcileResult:
    """Re-dispatch or continue stranded agent-assigned issues once, then escalate to blocked.

    dry_run reports what would change and changes nothing. single_flight=False lets
    concurrent sweeps race (tests of the row-level guards).
    """
    conf = heartbeat_conf()
    return sweep_run(
        kind=SweepKind.RECONCILE,
        lock=SweepLock.RECONCILE,
        host=process_control.current_host(),
        single_flight=single_flight,
        dry_run=dry_run,
        skipped=ReconcileResult(sweep_skipped=True, dry_run=dry_run),
        sweep_start=lambda started_at: _Reconcile(
            conf=conf,
            now=now or started_at,
            dry_run=dry_run,
            batch_size=batch_size or conf.sweep_batch_size,
        ),
    )


@dataclass
class _Planned:
    issue: StrandedIssue
    action: StrandedAction
    run_id: uuid.UUID | None = None
    wakeup_id: uuid.UUID | None = None


@dataclass(frozen=True)
class _Requeue:
    """One issue's recovery run: the wake that asks for it and the context it runs with."""

    planned: _Planned
    wake_reason: str
    payload: dict
    context: dict
    attempt: int


def _requeue_plan(p: _Planned) -> _Requeue:
    """A dispatch (todo) or a continuation (in_progress) recovery of the issue, counted in its
    lineage; gives the planned issue the ids of its run and wake."""
    issue = p.issue
    continuing = p.action is StrandedAction.REQUEUE_CONTINUATION
    retry_reason = CONTINUATION_REASON if continuing else DISPATCH_RETRY_REASON
    wake_reason = CONTINUATION_REASON if continuing else DISPATCH_WAKE_REASON
    source = "issue.continuation_recovery" if continuing else "issue.assignment_recovery"
    attempt = (issue.latest.recovery_attempts(retry_reason) if issue.latest else 0) + 1
    p.run_id, p.wakeup_id = uuid.uuid4(), uuid.uuid4()
    payload = {"issueId": str(issue.issue_id)}
    context = {
        "issueId": str(issue.issue_id),
        "taskId": str(issue.issue_id),
        "taskKey": str(issue.issue_id),
        "wakeReason": wake_reason,
        "retryReason": retry_reason,
        "source": source,
        "wakeSource": WakeSource.AUTOMATION.value,
        "wakeTriggerDetail": "system",
        RECOVERY_ATTEMPT_KEY: attempt,
    }
    if issue.latest_run_id is not None:
        payload["retryOfRunId"] = context["retryOfRunId"] = str(issue.latest_run_id)
    return _Requeue(p, wake_reason, payload, context, attempt)


def _requeue_run_row(r: _Requeue, lease: datetime | None) -> QueuedRunRow:
    p = r.planned
    return QueuedRunRow(
        run_id=p.run_id,
        wakeup_id=p.wakeup_id,
        company_id=p.issue.company_id,
        agent_id=p.issue.agent_id,
        wake_reason=r.wake_reason,
        wake_payload=r.payload,
        context=r.context,
        retry_of_run_id=p.issue.latest_run_id,
        # The lineage keeps its process-loss budget: recovery must not reset it.
        process_loss_retry_count=p.issue.latest_process_loss_retry_count,
        lease=lease,
    )


def _requeue_event(r: _Requeue, *, limit: int) -> EventRow:
    p = r.planned
    return EventRow(
        run_id=p.run_id,
        company_id=p.issue.company_id,
        agent_id=p.issue.agent_id,
        seq=1,
        level=HeartbeatRunEvent.Level.WARN,
        message=f"run queued: {r.wake_reason} for stranded issue {p.issue.identifier} "
        f"(recovery {r.attempt} of {limit})",
        payload={
            "wakeupRequestId": str(p.wakeup_id),
            "issueId": str(p.issue.issue_id),
            "retryOfRunId": r.payload.get("retryOfRunId"),
        },
    )


def _requeue_activity(r: _Requeue) -> ActivityRow:
    p = r.planned
    return _activity(
        p.issue,
        action="issue.recovery_requeued",
        run_id=p.run_id,
        agent_id=p.issue.agent_id,
        details={
            "identifier": p.issue.identifier,
            "status": p.issue.status,
            "reason": r.wake_reason,
            "runId": str(p.run_id),
            "latestRunId": _str_or_none(p.issue.latest_run_id),
            "latestRunStatus": p.issue.latest_run_status,
            "source": "heartbeat.reconcile_stranded_assigned_issue",
        },
    )


@dataclass
class _Reconcile:
    conf: HeartbeatConf
    now: datetime
    dry_run: bool
    batch_size: int
    counts: dict[StrandedAction, int] = field(default_factory=dict)
    issue_ids: list[uuid.UUID] = field(default_factory=list)
    errors: int = 0

    def result(self) -> ReconcileResult:
        return ReconcileResult(
            dispatch_requeued=self.counts.get(StrandedAction.REQUEUE_DISPATCH, 0),
            continuation_requeued=self.counts.get(StrandedAction.REQUEUE_CONTINUATION, 0),
            escalated=self.counts.get(StrandedAction.ESCALATE_DISPATCH, 0)
            + self.counts.get(StrandedAction.ESCALATE_CONTINUATION, 0),
            skipped=self.counts.get(StrandedAction.SKIP, 0),
            issue_ids=list(self.issue_ids),
            errors=self.errors,
            dry_run=self.dry_run,
        )

    def _count(self, action: StrandedAction, issue_ids=()) -> None:
        self.counts[action] = self.counts.get(action, 0) + 1
        if action is not StrandedAction.SKIP:
            self.issue_ids.extend(issue_ids)

    def run(self) -> None:
        sweep_pages(
            what="reconcile",
            page_lock=self._page_lock,
            page_write=self._decide_and_write,
            committed=self._count_all,
            item_redo=self._run_one,
        )

    def _page_lock(
        self, after: tuple[datetime, uuid.UUID] | None
    ) -> SweepPage[tuple[datetime, uuid.UUID], list[StrandedIssue]] | None:
        page = issues_stranded(after=after, limit=self.batch_size, lock=not self.dry_run)
        if page.last_key is None:
            return None
        return SweepPage(
            locked=page.issues,
            item_ids=[issue.issue_id for issue in page.issues],
            last_key=page.last_key,
            more=page.scanned >= self.batch_size,
        )

    def _run_one(self, issue_id: uuid.UUID) -> None:
        try:
            with transaction.atomic():
                page = issues_stranded(limit=1, lock=not self.dry_run, issue_id=issue_id)
                outcomes = self._decide_and_write(page.issues)
            self._count_all(outcomes)
        except IntegrityError as exc:
            # A wake queued a run for the issue meanwhile: it is no longer stranded.
            logger.info("recovery of issue %s refused (%s); it has a run now", issue_id, exc)
            self._count(StrandedAction.SKIP)
        except Exception:
            self.errors += 1
            logger.exception("reconciler could not process issue %s", issue_id)

    def _count_all(self, outcomes: list[_Planned]) -> None:
        """Count a batch once its transaction committed (a rolled-back one is redone)."""
        for p in outcomes:
            self._count(p.action, [p.issue.issue_id])

    def _decide_and_write(self, batch: list[StrandedIssue]) -> list[_Planned]:
        """Decide each issue and write the batch; returns the outcomes to count."""
        planned = []
        for issue in batch:
            action = stranded_decide(
                issue_status=issue.status,
                agent_invokable=issue.agent_status not in _NOT_INVOKABLE
                and issue.agent_company_id == issue.company_id,
                agent_wakes_on_demand=heartbeat_policy(issue.agent_runtime_config).wake_on_demand,
                latest=issue.latest,
                recovery_limit=self.conf.stranded_recovery_limit,
            )
            planned.append(_Planned(issue=issue, action=action))
        if self.dry_run:
            return planned
        requeue = [p for p in planned if p.action.requeues]
        escalate = [p for p in planned if p.action.escalates]
        if requeue:
            self._write_requeues(requeue)
        escalated = self._write_escalations(escalate) if escalate else set()
        for p in planned:
            if p.action.escalates and p.issue.issue_id not in escalated:
                # The issue changed under us (the CAS on its status lost): not ours to block.
                p.action = StrandedAction.SKIP
        return planned

    def _write_requeues(self, planned: list[_Planned]) -> None:
        """Queue one recovery run per issue (reference 5.1), in this transaction.

        The wake and the run point at each other; the foreign keys are checked at commit.
        """
        requeues = [_requeue_plan(p) for p in planned]
        # A lock left on a finished run would keep the recovery run from stamping its own at
        # claim; the candidate query proved that run inactive, and the issue row is ours.
        issues_execution_lock_clear(issue_ids=[p.issue.issue_id for p in planned])
        leases = runs_dispatch_within_slots(
            [(p.run_id, p.issue.agent_id) for p in planned],
            runtime_configs={p.issue.agent_id: p.issue.agent_runtime_config for p in planned},
            now=self.now,
        )
        runs_queue_with_wakes(
            [_requeue_run_row(r, lease) for r, lease in zip(requeues, leases, strict=True)],
            now=self.now,
        )
        run_events_insert(
            [_requeue_event(r, limit=self.conf.stranded_recovery_limit) for r in requeues],
            now=self.now,
        )
        activity_log_record_many(rows=[_requeue_activity(r) for r in requeues], now=self.now)

    def _write_escalations(self, planned: list[_Planned]) -> set[uuid.UUID]:
        """Block the issues, one system comment and one activity row each; returns the won ids."""
        # Compare-and-set on the status the decision was made from, under the row lock.
        won = issues_block(
            expected_statuses={p.issue.issue_id: p.issue.status for p in planned}, now=self.now
        )
        planned = [p for p in planned if p.issue.issue_id in won]
        if not planned:
            return won
        issue_system_comments_create(
            comments=[
                SystemComment(
                    company_id=p.issue.company_id,
                    issue_id=p.issue.issue_id,
                    body=escalation_comment(
                        action=p.action,
                        agent_name=p.issue.agent_name,
                        error_code=p.issue.latest_error_code,
                        error=p.issue.latest_error,
                    ),
                )
                for p in planned
            ],
            now=self.now,
        )
        activity_log_record_many(
            rows=[
                _activity(
                    p.issue,
                    action="issue.updated",
                    run_id=None,
                    agent_id=None,
                    details={
                        "identifier": p.issue.identifier,
                        "status": Issue.Status.BLOCKED.value,
                        "previousStatus": p.issue.status,
                        "source": "heartbeat.reconcile_stranded_assigned_issue",
                        "latestRunId": _str_or_none(p.issue.latest_run_id),
                        "latestRunStatus": p.issue.latest_run_status,
                        "latestRunErrorCode": p.issue.latest_error_code,
                    },
                )
                for p in planned
            ],
            now=self.now,
        )
        return won


def _str_or_none(value) -> str | None:
    return None if value is None else str(value)


def _activity(
    issue: StrandedIssue,
    *,
    action: str,
    run_id: uuid.UUID | None,
    agent_id: uuid.UUID | None,
    details: dict,
) -> ActivityRow:
    return ActivityRow(
        company_id=issue.company_id,
        action=action,
        entity_type="issue",
        entity_id=issue.issue_id,
        agent_id=agent_id,
        run_id=run_id,
        details=details,
    )
