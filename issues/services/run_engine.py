"""The writes the heartbeat app's run engine and sweeps make on issues.

heartbeat may not write issues' tables itself, and issues may not import heartbeat: these
functions take plain ids and keep each write's compare-and-set and `updated_at` rule here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import F, Q
from django.db.models.functions import Coalesce

from issues.models import Issue, IssueComment
from paperclip.rows import json_rows, sql_execute
from paperclip.services import activity_log_record

_ACTIVE_RUN_STATUSES = ("queued", "running")


def _run_model():
    return Issue._meta.get_field("checkout_run").related_model


# The execution lock and recovery writes the heartbeat app's sweeps make: batch-first (one
# statement per batch, its per-item values one JSON document read with jsonb_to_recordset);
# a single-item caller passes one item.


@dataclass(frozen=True)
class ExecutionLockMove:
    """Move an issue's execution lock from one run to another (a retry of it)."""

    from_run_id: uuid.UUID
    to_run_id: uuid.UUID
    agent_name_key: str | None
    issue_id: uuid.UUID | None = None  # None: whichever issue the from-run locks


def issues_execution_lock_move(*, moves: list[ExecutionLockMove], now: datetime) -> None:
    """Compare-and-set: the lock moves only where it still names the from-run; the checkout
    stays where it is (the reference's tests require it)."""
    if not moves:
        return
    sql_execute(
        f"""
        UPDATE {Issue._meta.db_table} AS i SET execution_run_id = v.to_id,
            execution_agent_name_key = v.name_key, execution_locked_at = %(now)s,
            updated_at = %(now)s
        FROM jsonb_to_recordset(%(rows)s::jsonb)
            AS v(from_id uuid, to_id uuid, name_key text, issue_id uuid)
        WHERE i.execution_run_id = v.from_id AND (v.issue_id IS NULL OR i.id = v.issue_id)
        """,
        {
            "now": now,
            "rows": json_rows(
                [
                    {
                        "from_id": m.from_run_id,
                        "to_id": m.to_run_id,
                        "name_key": m.agent_name_key,
                        "issue_id": m.issue_id,
                    }
                    for m in moves
                ]
            ),
        },
    )


def issues_execution_lock_release(*, run_ids: list[uuid.UUID], now: datetime) -> None:
    """Release every issue lock the given (finished) runs hold."""
    if not run_ids:
        return
    sql_execute(
        f"""
        UPDATE {Issue._meta.db_table} SET execution_run_id = NULL,
            execution_agent_name_key = NULL, execution_locked_at = NULL, updated_at = %(now)s
        WHERE execution_run_id = ANY(%(runs)s::uuid[])
        """,
        {"now": now, "runs": list(run_ids)},
    )


def issues_execution_lock_clear(*, issue_ids: list[uuid.UUID]) -> None:
    """Clear locks the caller proved stale (left on finished runs); updated_at is kept, the
    issue itself did not change."""
    if not issue_ids:
        return
    sql_execute(
        f"""
        UPDATE {Issue._meta.db_table} SET execution_run_id = NULL,
            execution_agent_name_key = NULL, execution_locked_at = NULL
        WHERE id = ANY(%(ids)s::uuid[]) AND execution_run_id IS NOT NULL
        """,
        {"ids": list(issue_ids)},
    )


def issues_block(*, expected_statuses: dict[uuid.UUID, str], now: datetime) -> set[uuid.UUID]:
    """Block issues, compare-and-set on the status each was decided from; returns the won ids.

    Checkout and execution lock are dropped, completion and cancellation times cleared.
    """
    if not expected_statuses:
        return set()
    rows = sql_execute(
        f"""
        UPDATE {Issue._meta.db_table} AS i SET status = %(blocked)s,
            checkout_run_id = NULL, execution_run_id = NULL,
            execution_agent_name_key = NULL, execution_locked_at = NULL,
            completed_at = NULL, cancelled_at = NULL, updated_at = %(now)s
        FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(id uuid, expected text)
        WHERE i.id = v.id AND i.status = v.expected
        RETURNING i.id
        """,
        {
            "blocked": Issue.Status.BLOCKED,
            "now": now,
            "rows": json_rows(
                [{"id": i, "expected": status} for i, status in expected_statuses.items()]
            ),
        },
    )
    return {row[0] for row in rows}


@dataclass(frozen=True)
class SystemComment:
    """A comment with no author and no run: the product's own note on an issue."""

    company_id: uuid.UUID
    issue_id: uuid.UUID
    body: str


def issue_system_comments_create(*, comments: list[SystemComment], now: datetime) -> None:
    """Write the comments in one statement (the reconciler's escalation notes, reference 5.2).

    The issues' updated_at is the caller's: the change the comment explains stamps it.
    """
    if not comments:
        return
    sql_execute(
        f"""
        INSERT INTO {IssueComment._meta.db_table} (
            id, company_id, issue_id, body, created_at, updated_at)
        SELECT gen_random_uuid(), v.company_id, v.issue_id, v.body, %(now)s, %(now)s
        FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(company_id uuid, issue_id uuid, body text)
        """,
        {"now": now, "rows": json_rows(vars(comment) for comment in comments)},
    )


# The execution lock and checkout writes of a run's own life (claim, finish, a wake finding an
# older run), each on one issue whose row the caller holds locked.


def issue_execution_lock_take(
    *,
    issue_id: uuid.UUID | str,
    company_id: uuid.UUID | str,
    run_id: uuid.UUID,
    agent_name_key: str,
    now: datetime,
    touch_updated_at: bool = True,
) -> bool:
    """Point the issue's execution lock at the run; returns whether it did.

    Compare-and-set: the lock is taken only where it is free or already the run's, never from
    another run. touch_updated_at=False for a lock adopted for a run that already worked on
    the issue: the issue itself did not change.
    """
    changes: dict[str, Any] = {
        "execution_run_id": run_id,
        "execution_agent_name_key": agent_name_key,
        "execution_locked_at": now,
    }
    if touch_updated_at:
        changes["updated_at"] = now
    free = Q(execution_run__isnull=True) | Q(execution_run_id=run_id)
    return bool(Issue.objects.filter(free, pk=issue_id, company_id=company_id).update(**changes))


# Issues a run checks out for its agent when it starts (reference 2.4 "harness checkout").
_RUN_CHECKOUT_FROM_STATUSES = (
    Issue.Status.TODO,
    Issue.Status.BACKLOG,
    Issue.Status.BLOCKED,
    Issue.Status.IN_PROGRESS,
)


def issue_checkout_for_run(
    *,
    issue_id: uuid.UUID | str,
    company_id: uuid.UUID | str,
    agent_id: uuid.UUID,
    run_id: uuid.UUID,
    now: datetime,
) -> bool:
    """Check the agent's issue out to its starting run: in_progress, checkout_run the run.

    Compare-and-set: only an issue assigned to the agent, in a status a run starts from, whose
    checkout is free, the run's, or held by a run that has ended (adopted, reference 9.8).
    Returns whether the run checked the issue out.
    """
    ended_run_statuses = [
        status for status in _run_model().Status.values if status not in _ACTIVE_RUN_STATUSES
    ]
    free = (
        Q(checkout_run__isnull=True)
        | Q(checkout_run_id=run_id)
        | Q(checkout_run__status__in=ended_run_statuses)
    )
    return bool(
        Issue.objects.filter(
            free,
            pk=issue_id,
            company_id=company_id,
            assignee_agent_id=agent_id,
            status__in=_RUN_CHECKOUT_FROM_STATUSES,
        ).update(
            status=Issue.Status.IN_PROGRESS,
            checkout_run_id=run_id,
            started_at=Coalesce(F("started_at"), now),
            updated_at=now,
        )
    )


def issue_execution_lock_end(
    *, issue_id: uuid.UUID | str, run_id: uuid.UUID, now: datetime
) -> bool:
    """The run ended: release the issue's execution lock if the run still holds it.

    Only this issue (the one the caller holds locked), unlike issues_execution_lock_release
    which frees every issue of the given runs. The checkout stays (the reference's tests
    require it to keep naming the finished run).
    """
    return bool(
        Issue.objects.filter(pk=issue_id, execution_run_id=run_id).update(
            execution_run=None,
            execution_agent_name_key=None,
            execution_locked_at=None,
            updated_at=now,
        )
    )


_REOPEN_FOR_COMMENT_STATUSES = (Issue.Status.DONE, Issue.Status.CANCELLED)


def issue_reopen_for_comment_wake(*, issue: Issue, agent_id: uuid.UUID, now: datetime) -> bool:
    """A comment wake promoted on a done or cancelled issue reopens it (status todo) for the
    woken agent, with its `issue.reopened` activity. `issue` is the caller's locked row and
    follows the change; returns whether it reopened."""
    previous = issue.status
    if previous not in _REOPEN_FOR_COMMENT_STATUSES:
        return False
    reopened = Issue.objects.filter(pk=issue.pk, status=previous).update(
        status=Issue.Status.TODO, completed_at=None, cancelled_at=None, updated_at=now
    )
    if not reopened:
        return False
    issue.status = Issue.Status.TODO
    activity_log_record(
        company_id=issue.company_id,
        action="issue.reopened",
        entity_type="issue",
        entity_id=issue.id,
        agent_id=agent_id,
        details={"from": previous, "to": Issue.Status.TODO, "reason": "deferred_comment_wake"},
    )
    return True
