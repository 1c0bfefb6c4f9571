"""State changes of issues and comments."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from issues.models import Issue, IssueComment
from issues.services.run_engine import _ACTIVE_RUN_STATUSES, _run_model
from issues.signals import issue_wake_requested
from issues.wake_rules import (
    CommentFacts,
    IssueWake,
    comment_reopens,
    mentioned_agent_ids,
    wake_for_checkout,
    wakes_for_comment,
    wakes_for_create,
    wakes_for_update,
)
from paperclip.rows import ModelRows
from paperclip.services import activity_log_record, company_issue_number_next


def issue_create(
    *,
    company_id: uuid.UUID | str,
    title: str,
    description: str | None = None,
    status: str = Issue.Status.BACKLOG,
    priority: str = Issue.Priority.MEDIUM,
    assignee_agent_id: uuid.UUID | str | None = None,
    assignee_user_id: str | None = None,
    parent_id: uuid.UUID | str | None = None,
    created_by_agent_id: uuid.UUID | str | None = None,
    created_by_user_id: str | None = None,
    wake_assignee: bool = False,
    actor_type: str = "system",
    actor_id: str = "system",
) -> Issue:
    """A new issue with the company's next number. With `wake_assignee` (the API, the admin), an
    agent assignee is woken after commit unless the issue is in backlog (docs/wake-rules.md).

    Raises IssueTransitionInvalid (two assignees, in_progress without one) and IssueInvalidInput
    (an assignee agent or a parent that is not in the company) before anything is written.
    """
    issue = Issue(
        company_id=company_id,
        title=title,
        description=description,
        status=status,
        priority=priority,
        assignee_agent_id=assignee_agent_id,
        assignee_user_id=assignee_user_id,
        parent_id=parent_id,
        created_by_agent_id=created_by_agent_id,
        created_by_user_id=created_by_user_id,
    )
    _check_new_issue(issue)
    with transaction.atomic():
        issue.issue_number, prefix = company_issue_number_next(company_id=company_id)
        issue.identifier = f"{prefix}-{issue.issue_number}"
        issue.save(force_insert=True)
        activity_log_record(
            company_id=company_id,
            action="issue.created",
            entity_type="issue",
            entity_id=issue.id,
            actor_type=actor_type,
            actor_id=actor_id,
            agent_id=created_by_agent_id,
            details={"identifier": issue.identifier, "title": title},
        )
        if wake_assignee:
            _request_wakes(
                issue=issue,
                wakes=wakes_for_create(
                    issue_id=issue.id, status=status, assignee_agent_id=issue.assignee_agent_id
                ),
                actor_type=actor_type,
                actor_id=actor_id,
            )
        return issue


def _check_new_issue(issue: Issue) -> None:
    _check_assignment(issue)
    if issue.assignee_agent_id:
        _check_agent_in_company(issue.assignee_agent_id, issue.company_id, "assigneeAgentId")
    parent_id, company_id = issue.parent_id, issue.company_id
    if parent_id and not Issue.objects.filter(id=parent_id, company_id=company_id).exists():
        raise IssueInvalidInput(
            "parentId: no such issue in this company",
            {"parentId": ["No such issue in this company."]},
        )


def issue_comment_create(
    *,
    issue: Issue,
    body: str,
    author_agent_id: uuid.UUID | str | None = None,
    author_user_id: str | None = None,
    created_by_run_id: uuid.UUID | str | None = None,
) -> IssueComment:
    """Add a comment; bumps the issue's updated_at as the reference does."""
    # Inside a caller's transaction a savepoint would only add two round trips: a failure here
    # must roll the caller's whole change back anyway.
    # One statement writes the comment and bumps the issue (comments are the API's busiest
    # write): fixed SQL, see paperclip.rows.
    comment = _COMMENT_ROWS.insert(
        IssueComment(
            company_id=issue.company_id,
            issue=issue,
            body=body,
            author_agent_id=author_agent_id,
            author_user_id=author_user_id,
            created_by_run_id=created_by_run_id,
        ),
        with_clause=(
            f'WITH bumped AS (UPDATE "{Issue._meta.db_table}" SET updated_at = %s WHERE id = %s)'
        ),
        with_params=lambda comment: [comment.created_at, issue.pk],
    )
    issue.updated_at = comment.created_at
    return comment


_COMMENT_ROWS = ModelRows(IssueComment)
_ISSUE_ROWS = ModelRows(Issue)


def issue_run_summary_comment(
    *,
    issue_id: uuid.UUID | str,
    company_id: uuid.UUID | str,
    agent_id: uuid.UUID | str,
    run_id: uuid.UUID | str,
    body: str,
) -> IssueComment | None:
    """A run's summary (its CLI's final result text) as the comment of its agent, when the run
    left the issue none of its own (reference 2.4 finalize). In the caller's transaction; None
    when the run already commented or the issue is gone. It wakes nobody: the agent reports
    what it did, it asks nothing of anyone."""
    with transaction.atomic(savepoint=False):
        try:
            issue = Issue.objects.filter(pk=issue_id, company_id=company_id).first()
        except (ValueError, ValidationError):
            return None
        if issue is None or IssueComment.objects.filter(created_by_run_id=run_id).exists():
            return None
        comment = issue_comment_create(
            issue=issue, body=body, author_agent_id=agent_id, created_by_run_id=run_id
        )
        activity_log_record(
            company_id=issue.company_id,
            action="issue.comment_added",
            entity_type="issue",
            entity_id=issue.id,
            actor_type="agent",
            actor_id=str(agent_id),
            agent_id=agent_id,
            run_id=run_id,
            details={
                "identifier": issue.identifier,
                "commentId": str(comment.id),
                "source": "run_summary",
            },
        )
    return comment


# Updates, checkout and release. The lock semantics follow the reference (sections 1.7 and 7):
# a status other than in_progress, or a new assignee, releases the issue's run locks; an agent
# working on its own in_progress issue must do so from the run that checked it out (or adopt that
# run's lock once the run has ended), so two runs never interleave writes on one issue.

_LOCK_FIELDS = ("checkout_run", "execution_run", "execution_agent_name_key", "execution_locked_at")
UPDATABLE_FIELDS = frozenset(
    {
        "title",
        "description",
        "status",
        "priority",
        "assignee_agent_id",
        "assignee_user_id",
        "parent_id",
    }
)


class IssueError(Exception):
    """Base of the issue domain errors; `details` says what the caller needs to act."""

    def __init__(self, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.details = details


class IssueInvalidInput(IssueError):
    """An argument names something that does not exist in the issue's company."""


class IssueTransitionInvalid(IssueError):
    """The requested state is impossible (two assignees, in_progress without one)."""


class IssueConflict(IssueError):
    """The issue is held by another agent or run."""


class IssueActionForbidden(IssueError):
    """The caller may see the issue but not do this to it (delete another's comment)."""


@dataclass(frozen=True)
class IssueUpdateResult:
    issue: Issue
    comment: IssueComment | None
    changed_fields: tuple[str, ...]


def _agent_model():
    return Issue._meta.get_field("assignee_agent").related_model


def _request_wakes(*, issue: Issue, wakes: list[IssueWake], actor_type: str, actor_id: str) -> None:
    """Ask (after commit) for each wake; heartbeat does the waking."""
    for wake in wakes:
        signal_kwargs = {
            "issue_id": issue.id,
            "company_id": issue.company_id,
            "agent_id": wake.agent_id,
            "source": wake.source,
            "reason": wake.reason,
            "payload": wake.payload,
            "context": wake.context,
            "requested_by_actor_type": actor_type,
            "requested_by_actor_id": actor_id,
        }
        transaction.on_commit(
            lambda kwargs=signal_kwargs: issue_wake_requested.send_robust(sender=Issue, **kwargs)
        )


def _mentioned_agents(issue: Issue, body: str) -> tuple[uuid.UUID, ...]:
    """The agents of the issue's company that the body links to (others are ignored)."""
    linked = mentioned_agent_ids(body)
    if not linked:
        return ()
    known = set(
        _agent_model()
        .objects.filter(company_id=issue.company_id, pk__in=linked)
        .values_list("pk", flat=True)
    )
    return tuple(agent_id for agent_id in linked if agent_id in known)


def _uuid_or_none(value: uuid.UUID | str | None) -> uuid.UUID | None:
    return uuid.UUID(str(value)) if value else None


def _issue_locked(issue_id: uuid.UUID | str, company_id: uuid.UUID | str) -> Issue:
    """The issue, row-locked for the caller's transaction; DoesNotExist (404) when missing."""
    issue = _ISSUE_ROWS.first(
        "id = %s AND company_id = %s", [issue_id, company_id], for_update=True
    )
    if issue is None:
        raise Issue.DoesNotExist("Issue not found")
    return issue


def _agent_name_key(agent_id) -> str | None:
    name = _agent_model().objects.filter(pk=agent_id).values_list("name", flat=True).first()
    return name.strip().lower() if name is not None else None


def _check_agent_in_company(agent_id, company_id, field: str) -> None:
    if not _agent_model().objects.filter(pk=agent_id, company_id=company_id).exists():
        raise IssueInvalidInput(
            f"{field}: no such agent in this company", {field: ["No such agent in this company."]}
        )


def _check_assignment(issue: Issue) -> None:
    if issue.assignee_agent_id is not None and issue.assignee_user_id is not None:
        raise IssueTransitionInvalid(
            "Issue can only have one assignee",
            {
                "assigneeAgentId": str(issue.assignee_agent_id),
                "assigneeUserId": issue.assignee_user_id,
            },
        )
    if (
        issue.status == Issue.Status.IN_PROGRESS
        and issue.assignee_agent_id is None
        and issue.assignee_user_id is None
    ):
        raise IssueTransitionInvalid(
            "An in_progress issue needs an assignee", {"status": issue.status}
        )


def _has_locks(issue: Issue) -> bool:
    return bool(
        issue.checkout_run_id
        or issue.execution_run_id
        or issue.execution_agent_name_key
        or issue.execution_locked_at
    )


def _clear_locks(issue: Issue) -> None:
    issue.checkout_run = None
    issue.execution_run = None
    issue.execution_agent_name_key = None
    issue.execution_locked_at = None


def _run_is_active(run_id) -> bool:
    if run_id is None:
        return False
    return _run_model().objects.active().filter(pk=run_id).exists()


def _assert_run_ownership(
    issue: Issue, *, actor_agent_id, actor_run_id, adopt: bool = True
) -> list[str]:
    """An agent writing to its own in_progress issue must hold the checkout with its run.

    A checkout held by a run that has ended is adopted (the reference only does this for
    in_progress issues; a crashed run must not lock its agent out of the issue forever).
    Returns the fields it changed.
    """
    if (
        actor_agent_id is None
        or issue.status != Issue.Status.IN_PROGRESS
        or issue.assignee_agent_id != actor_agent_id
    ):
        return []
    if actor_run_id is None:
        raise IssueConflict(
            "Agent run id required to write to an in_progress issue (X-Paperclip-Run-Id)",
            _conflict_details(issue),
        )
    if issue.checkout_run_id == actor_run_id:
        return []
    if issue.checkout_run_id is None or not _run_is_active(issue.checkout_run_id):
        if adopt:
            issue.checkout_run_id = actor_run_id
            return ["checkout_run"]
        return []
    raise IssueConflict("Issue run ownership conflict", _conflict_details(issue))


def _conflict_details(issue: Issue) -> dict:
    """Who holds the issue and whether the holding runs are still alive (queued or running)."""
    run_ids = [rid for rid in (issue.checkout_run_id, issue.execution_run_id) if rid is not None]
    statuses = dict(_run_model().objects.filter(pk__in=run_ids).values_list("id", "status"))

    def run_state(run_id) -> dict:
        run_status = statuses.get(run_id)
        return {"status": run_status, "active": run_status in _ACTIVE_RUN_STATUSES}

    checkout = run_state(issue.checkout_run_id)
    execution = run_state(issue.execution_run_id)
    return {
        "issueId": str(issue.id),
        "status": issue.status,
        "assigneeAgentId": str(issue.assignee_agent_id) if issue.assignee_agent_id else None,
        "assigneeUserId": issue.assignee_user_id,
        "checkoutRunId": str(issue.checkout_run_id) if issue.checkout_run_id else None,
        "checkoutRunStatus": checkout["status"],
        "checkoutRunActive": checkout["active"],
        "executionRunId": str(issue.execution_run_id) if issue.execution_run_id else None,
        "executionRunStatus": execution["status"],
        "executionRunActive": execution["active"],
    }


def _apply_status_timestamps(issue: Issue, now) -> None:
    if issue.status == Issue.Status.IN_PROGRESS and issue.started_at is None:
        issue.started_at = now
    issue.completed_at = (issue.completed_at or now) if issue.status == Issue.Status.DONE else None
    issue.cancelled_at = (
        (issue.cancelled_at or now) if issue.status == Issue.Status.CANCELLED else None
    )


@dataclass(frozen=True)
class _Actor:
    """Who writes: a person (type "user"), an agent from one of its runs, or the system."""

    type: str
    id: str
    agent_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None

    @property
    def user_id(self) -> str | None:
        return self.id if self.type == "user" else None


def _actor_comment_create(issue: Issue, *, body: str, actor: _Actor) -> IssueComment:
    return issue_comment_create(
        issue=issue,
        body=body,
        author_agent_id=actor.agent_id,
        author_user_id=actor.user_id,
        created_by_run_id=actor.run_id,
    )


def _actor_activity_record(issue: Issue, *, action: str, actor: _Actor, details: dict) -> None:
    activity_log_record(
        company_id=issue.company_id,
        action=action,
        entity_type="issue",
        entity_id=issue.id,
        actor_type=actor.type,
        actor_id=actor.id,
        agent_id=actor.agent_id,
        run_id=actor.run_id,
        details={"identifier": issue.identifier, **details},
    )


def issue_update(
    *,
    issue_id: uuid.UUID | str,
    company_id: uuid.UUID | str,
    changes: dict[str, Any],
    comment_body: str | None = None,
    reopen: bool = False,
    actor_type: str = "system",
    actor_id: str = "system",
    actor_agent_id: uuid.UUID | str | None = None,
    actor_run_id: uuid.UUID | str | None = None,
) -> IssueUpdateResult:
    """Apply `changes` (keys from UPDATABLE_FIELDS) and optionally post a comment, atomically.

    Side effects (reference 1.7): leaving in_progress or changing the assignee releases the run
    locks; started/completed/cancelled timestamps follow the status. A comment that names no
    status may reopen a finished or blocked issue (`reopen`, or a person writing on an agent's
    issue). The agents the change concerns are woken after commit (docs/wake-rules.md).
    """
    unknown = set(changes) - UPDATABLE_FIELDS
    if unknown:
        raise IssueInvalidInput(f"Unknown issue fields: {sorted(unknown)}")
    actor = _Actor(actor_type, actor_id, _uuid_or_none(actor_agent_id), _uuid_or_none(actor_run_id))
    with transaction.atomic():
        issue = _issue_locked(issue_id, company_id)
        before = {field: getattr(issue, field) for field in UPDATABLE_FIELDS}
        changed = _assert_run_ownership(
            issue, actor_agent_id=actor.agent_id, actor_run_id=actor.run_id
        )
        reopens = _changes_apply(
            issue, changes, comment_sent=comment_body is not None, reopen=reopen, actor=actor
        )
        changed += _changed_fields_releasing_locks(issue, before)
        now = timezone.now()
        _apply_status_timestamps(issue, now)
        issue.updated_at = now
        issue.save()
        comment = None
        if comment_body is not None:
            comment = _actor_comment_create(issue, body=comment_body, actor=actor)
        _actor_activity_record(
            issue,
            action="issue.updated",
            actor=actor,
            details={
                "changes": sorted(set(changed)),
                "status": issue.status,
                "previousStatus": before["status"],
                "commentId": str(comment.id) if comment else None,
            },
        )
        _request_wakes(
            issue=issue,
            wakes=_update_wakes(
                issue, before=before, comment=comment, reopens=reopens, actor=actor
            ),
            actor_type=actor.type,
            actor_id=actor.id,
        )
    return IssueUpdateResult(
        issue=issue, comment=comment, changed_fields=tuple(sorted(set(changed)))
    )


def _changes_apply(
    issue: Issue, changes: dict[str, Any], *, comment_sent: bool, reopen: bool, actor: _Actor
) -> bool:
    """Set the changed fields once what they name is checked. Returns whether the comment sent
    with them reopens the issue, which then goes back to todo unless the change names a status."""
    if changes.get("assignee_agent_id") is not None:
        _check_agent_in_company(changes["assignee_agent_id"], issue.company_id, "assigneeAgentId")
    if changes.get("parent_id") is not None:
        _check_parent(issue, changes["parent_id"])
    status_before = issue.status
    for field, value in changes.items():
        setattr(issue, field, value)
    reopens = comment_sent and comment_reopens(
        status=status_before,
        assignee_agent_id=issue.assignee_agent_id,
        reopen_requested=reopen,
        actor_type=actor.type,
        actor_agent_id=actor.agent_id,
    )
    if reopens and "status" not in changes:
        issue.status = Issue.Status.TODO
    _check_assignment(issue)
    return reopens


def _changed_fields_releasing_locks(issue: Issue, before: dict[str, Any]) -> list[str]:
    """The fields that differ from `before`; a status other than in_progress or a new assignee
    also releases the run locks (reference 1.7)."""
    changed = [f for f in UPDATABLE_FIELDS if getattr(issue, f) != before[f]]
    assignee_changed = (
        issue.assignee_agent_id != before["assignee_agent_id"]
        or issue.assignee_user_id != before["assignee_user_id"]
    )
    if (assignee_changed or issue.status != Issue.Status.IN_PROGRESS) and _has_locks(issue):
        _clear_locks(issue)
        changed += list(_LOCK_FIELDS)
    return changed


def _update_wakes(
    issue: Issue,
    *,
    before: dict[str, Any],
    comment: IssueComment | None,
    reopens: bool,
    actor: _Actor,
) -> list[IssueWake]:
    comment_facts = None
    if comment is not None:
        reopened = reopens and issue.status == Issue.Status.TODO != before["status"]
        comment_facts = CommentFacts(
            comment_id=comment.id,
            reopened_from=before["status"] if reopened else None,
            mentioned_agent_ids=_mentioned_agents(issue, comment.body),
        )
    return wakes_for_update(
        issue_id=issue.id,
        status_before=before["status"],
        status_after=issue.status,
        assignee_before=(before["assignee_agent_id"], before["assignee_user_id"]),
        assignee_after=(issue.assignee_agent_id, issue.assignee_user_id),
        actor_type=actor.type,
        actor_agent_id=actor.agent_id,
        comment=comment_facts,
    )


def _check_parent(issue: Issue, parent_id) -> None:
    """The parent must be another issue of the company, and not one of the issue's descendants."""
    if str(parent_id) == str(issue.id):
        raise IssueInvalidInput(
            "parentId: an issue cannot be its own parent",
            {"parentId": ["Cannot be the issue itself."]},
        )
    ancestor_id = parent_id
    for _ in range(100):
        row = Issue.objects.filter(pk=ancestor_id, company_id=issue.company_id).values_list(
            "parent_id", flat=True
        )
        if not row:
            raise IssueInvalidInput(
                "parentId: no such issue in this company",
                {"parentId": ["No such issue in this company."]},
            )
        ancestor_id = row[0]
        if ancestor_id is None:
            return
        if str(ancestor_id) == str(issue.id):
            raise IssueTransitionInvalid(
                "parentId would create a cycle", {"parentId": str(parent_id)}
            )
    raise IssueTransitionInvalid("parentId: issue hierarchy too deep", {"parentId": str(parent_id)})


def issue_checkout(
    *,
    issue_id: uuid.UUID | str,
    company_id: uuid.UUID | str,
    agent_id: uuid.UUID | str,
    run_id: uuid.UUID | str | None,
    expected_statuses: list[str],
    actor_type: str = "system",
    actor_id: str = "system",
) -> Issue:
    """Give the issue to `agent_id` (and lock it to `run_id`): in_progress, assigned, checked out.

    Succeeds when the status is expected, the issue is unassigned or already the agent's, and no
    other live run holds it. Checking out again with the same run is a no-op. Locks of runs that
    have ended are cleared first, so a crashed run never holds an issue (reference 7, and 9.8).
    Raises IssueConflict with who holds it otherwise.
    """
    agent_id = uuid.UUID(str(agent_id))
    run_id = _uuid_or_none(run_id)
    with transaction.atomic():
        issue = _issue_locked(issue_id, company_id)
        _check_agent_in_company(agent_id, issue.company_id, "agentId")
        _clear_ended_execution_lock(issue)
        if _checked_out_by(issue, agent_id=agent_id, run_id=run_id):
            issue.save()
            return issue
        _assert_checkout_free(
            issue, agent_id=agent_id, run_id=run_id, expected_statuses=expected_statuses
        )
        previous_status = issue.status
        _checkout_apply(issue, agent_id=agent_id, run_id=run_id, now=timezone.now())
        issue.save()
        _actor_activity_record(
            issue,
            action="issue.checked_out",
            actor=_Actor(actor_type, actor_id, agent_id, run_id),
            details={"previousStatus": previous_status},
        )
        if run_id is None:
            # A board member handing the issue to an agent: the agent should start on it.
            _request_wakes(
                issue=issue,
                wakes=[wake_for_checkout(issue_id=issue.id, agent_id=agent_id)],
                actor_type=actor_type,
                actor_id=actor_id,
            )
    return issue


def _clear_ended_execution_lock(issue: Issue) -> None:
    if issue.execution_run_id is not None and not _run_is_active(issue.execution_run_id):
        issue.execution_run = None
        issue.execution_agent_name_key = None
        issue.execution_locked_at = None


def _checked_out_by(issue: Issue, *, agent_id: uuid.UUID, run_id: uuid.UUID | None) -> bool:
    return (
        issue.assignee_agent_id == agent_id
        and issue.status == Issue.Status.IN_PROGRESS
        and issue.checkout_run_id == run_id
        and issue.execution_run_id in (None, run_id)
    )


def _assert_checkout_free(
    issue: Issue, *, agent_id: uuid.UUID, run_id: uuid.UUID | None, expected_statuses: list[str]
) -> None:
    """The agent may take an issue in an expected status that is unassigned or its own, or its
    own in_progress issue, when no other live run holds the checkout or the execution."""
    same_agent = issue.assignee_agent_id == agent_id
    checkout_free = issue.checkout_run_id in (None, run_id) or (
        same_agent and not _run_is_active(issue.checkout_run_id)
    )
    takeable = (
        issue.status in expected_statuses and issue.assignee_agent_id in (None, agent_id)
    ) or (same_agent and issue.status == Issue.Status.IN_PROGRESS)
    if not (takeable and checkout_free and issue.execution_run_id in (None, run_id)):
        raise IssueConflict("Issue checkout conflict", _conflict_details(issue))


def _checkout_apply(
    issue: Issue, *, agent_id: uuid.UUID, run_id: uuid.UUID | None, now: datetime
) -> None:
    issue.assignee_agent_id = agent_id
    issue.assignee_user_id = None
    issue.status = Issue.Status.IN_PROGRESS
    issue.checkout_run_id = run_id
    if run_id is not None:
        issue.execution_run_id = run_id
        issue.execution_agent_name_key = _agent_name_key(agent_id)
        issue.execution_locked_at = now
    _apply_status_timestamps(issue, now)
    issue.updated_at = now


def issue_release(
    *,
    issue_id: uuid.UUID | str,
    company_id: uuid.UUID | str,
    actor_type: str = "system",
    actor_id: str = "system",
    actor_agent_id: uuid.UUID | str | None = None,
    actor_run_id: uuid.UUID | str | None = None,
) -> Issue:
    """Give the issue back: todo, unassigned, not checked out.

    The execution lock stays with its run (as in the reference): that run may still be working
    and releases it when it finishes, so a new run cannot start on the issue beside it.
    """
    actor_agent_id = _uuid_or_none(actor_agent_id)
    actor_run_id = _uuid_or_none(actor_run_id)
    with transaction.atomic():
        issue = _issue_locked(issue_id, company_id)
        _assert_run_ownership(
            issue, actor_agent_id=actor_agent_id, actor_run_id=actor_run_id, adopt=False
        )
        previous_status = issue.status
        issue.status = Issue.Status.TODO
        issue.assignee_agent = None
        issue.assignee_user_id = None
        issue.checkout_run = None
        _apply_status_timestamps(issue, timezone.now())
        issue.save()
        _actor_activity_record(
            issue,
            action="issue.released",
            actor=_Actor(actor_type, actor_id, actor_agent_id, actor_run_id),
            details={"previousStatus": previous_status},
        )
    return issue


def issue_delete(
    *, issue_id: uuid.UUID | str, company_id: uuid.UUID | str, actor_type: str, actor_id: str
) -> None:
    """Delete an issue and its comments; refused while a run is executing it."""
    with transaction.atomic():
        issue = _issue_locked(issue_id, company_id)
        if _run_is_active(issue.execution_run_id):
            raise IssueConflict(
                "Issue has an active run; cancel the run first", _conflict_details(issue)
            )
        activity_log_record(
            company_id=issue.company_id,
            action="issue.deleted",
            entity_type="issue",
            entity_id=issue.id,
            actor_type=actor_type,
            actor_id=actor_id,
            details={"identifier": issue.identifier, "title": issue.title},
        )
        issue.delete()


def issue_comment_post(
    *,
    issue_id: uuid.UUID | str,
    company_id: uuid.UUID | str,
    body: str,
    reopen: bool = False,
    actor_type: str = "system",
    actor_id: str = "system",
    actor_agent_id: uuid.UUID | str | None = None,
    actor_run_id: uuid.UUID | str | None = None,
) -> IssueComment:
    """A comment from a person or an agent (the API's POST comments).

    An agent commenting on its own in_progress issue must hold it with its run. The comment may
    reopen a finished or blocked issue (`reopen`, or a person writing on an agent's issue), and
    wakes the assignee and the agents it mentions after commit (docs/wake-rules.md).
    """
    actor = _Actor(actor_type, actor_id, _uuid_or_none(actor_agent_id), _uuid_or_none(actor_run_id))
    with transaction.atomic():
        issue = _issue_locked(issue_id, company_id)
        changed = _assert_run_ownership(
            issue, actor_agent_id=actor.agent_id, actor_run_id=actor.run_id
        )
        reopened_from = _comment_reopen(issue, reopen=reopen, actor=actor)
        if changed or reopened_from:
            issue.save()
        comment = _actor_comment_create(issue, body=body, actor=actor)
        _actor_activity_record(
            issue,
            action="issue.comment_added",
            actor=actor,
            details={
                "commentId": str(comment.id),
                "reopened": reopened_from is not None,
                "reopenedFrom": reopened_from,
            },
        )
        _request_wakes(
            issue=issue,
            wakes=wakes_for_comment(
                issue_id=issue.id,
                status_after=issue.status,
                assignee_agent_id=issue.assignee_agent_id,
                actor_agent_id=actor.agent_id,
                comment=CommentFacts(
                    comment_id=comment.id,
                    reopened_from=reopened_from,
                    mentioned_agent_ids=_mentioned_agents(issue, body),
                ),
            ),
            actor_type=actor.type,
            actor_id=actor.id,
        )
    return comment


def _comment_reopen(issue: Issue, *, reopen: bool, actor: _Actor) -> str | None:
    """Move the issue back to todo, its run locks released, when the comment reopens it;
    returns the status it left (None: it stays as it is)."""
    if not comment_reopens(
        status=issue.status,
        assignee_agent_id=issue.assignee_agent_id,
        reopen_requested=reopen,
        actor_type=actor.type,
        actor_agent_id=actor.agent_id,
    ):
        return None
    reopened_from = issue.status
    issue.status = Issue.Status.TODO
    _clear_locks(issue)
    _apply_status_timestamps(issue, timezone.now())
    return reopened_from


def issue_comment_delete(
    *,
    issue_id: uuid.UUID | str,
    company_id: uuid.UUID | str,
    comment_id: uuid.UUID | str,
    actor_type: str = "system",
    actor_id: str = "system",
    actor_agent_id: uuid.UUID | str | None = None,
    actor_run_id: uuid.UUID | str | None = None,
) -> IssueComment:
    """Delete a comment as Paperclip does: only its author may, and it stays as a tombstone.

    The body is emptied and who deleted it is recorded; deleting a deleted comment changes
    nothing. An agent on its own in_progress issue must hold the issue with its run.
    """
    actor_agent_id = _uuid_or_none(actor_agent_id)
    actor_run_id = _uuid_or_none(actor_run_id)
    with transaction.atomic():
        issue = _issue_locked(issue_id, company_id)
        comment = IssueComment.objects.filter(pk=comment_id, issue=issue).first()
        if comment is None:
            raise IssueComment.DoesNotExist("Comment not found")
        if comment.deleted_at is not None:
            return comment
        if actor_type == "agent":
            is_author = comment.author_agent_id == actor_agent_id
        else:
            is_author = comment.author_user_id == actor_id
        if not is_author:
            raise IssueActionForbidden("Only the comment author can delete comments")
        if _assert_run_ownership(issue, actor_agent_id=actor_agent_id, actor_run_id=actor_run_id):
            issue.save(update_fields=["checkout_run"])
        now = timezone.now()
        comment.body = ""
        comment.deleted_at = now
        comment.deleted_by_agent_id = actor_agent_id
        comment.deleted_by_user_id = actor_id if actor_type == "user" else None
        comment.deleted_by_run_id = actor_run_id
        comment.updated_at = now
        comment.save()
        Issue.objects.filter(pk=issue.pk).update(updated_at=now)
        _actor_activity_record(
            issue,
            action="issue.comment_deleted",
            actor=_Actor(actor_type, actor_id, actor_agent_id, actor_run_id),
            details={"commentId": str(comment.id)},
        )
    return comment
