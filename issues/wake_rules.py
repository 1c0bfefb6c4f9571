"""Which issue change wakes which agent, and with what (docs/wake-rules.md, one row a rule).

The rules are Paperclip 2026.916.1's issue routes (create, PATCH, comments, checkout), as pure
decisions: the services gather the facts inside their transaction and send the wakes this module
returns after commit. Nothing here reads the database.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from issues.models import IssueStatus

CLOSED_STATUSES = (IssueStatus.DONE, IssueStatus.CANCELLED)
# A structured mention, as Paperclip's editor and its agents write one: [@Name](agent://<id>).
# Plain "@Name" text wakes nobody in 916.1 (mentions cost a run, so they must be explicit).
_AGENT_MENTION = re.compile(r"\[[^\]]*\]\(agent://([^)\s]+)\)", re.IGNORECASE)


@dataclass(frozen=True)
class IssueWake:
    """One wake to request: the fields of `heartbeat.services.wake_agent`."""

    agent_id: uuid.UUID
    source: str
    reason: str
    payload: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CommentFacts:
    """A comment posted by the change, as the wake rules need it."""

    comment_id: uuid.UUID
    # The status the comment reopened the issue from (to todo), None when it did not.
    reopened_from: str | None
    # Agents linked in the body, already limited to the issue's company.
    mentioned_agent_ids: tuple[uuid.UUID, ...] = ()


def mentioned_agent_ids(body: str | None) -> list[uuid.UUID]:
    """The agent ids of the body's `[label](agent://<id>)` links, in order, without repeats."""
    found: list[uuid.UUID] = []
    for href in _AGENT_MENTION.findall(body or ""):
        raw = re.split(r"[?#]", href, maxsplit=1)[0].strip("/")
        try:
            agent_id = uuid.UUID(raw)
        except ValueError:
            continue
        if agent_id not in found:
            found.append(agent_id)
    return found


def comment_reopens(
    *,
    status: str,
    assignee_agent_id: uuid.UUID | None,
    reopen_requested: bool,
    actor_type: str,
    actor_agent_id: uuid.UUID | None,
) -> bool:
    """Whether a comment moves a done, cancelled or blocked issue back to todo.

    `reopen: true` does it for anyone but the assignee itself (whose comment on its own finished
    issue is a log line, not a request); a person's comment does it without asking when an agent
    owns the issue, because a person writing on finished work wants it looked at again.
    """
    if status not in (*CLOSED_STATUSES, IssueStatus.BLOCKED):
        return False
    if actor_agent_id is not None and actor_agent_id == assignee_agent_id:
        return reopen_requested and status == IssueStatus.BLOCKED
    if reopen_requested:
        return True
    return actor_type == "user" and assignee_agent_id is not None


def wakes_for_create(*, issue_id: uuid.UUID, status: str, assignee_agent_id) -> list[IssueWake]:
    """A new issue wakes its agent assignee unless it is parked in backlog."""
    if assignee_agent_id is None or status == IssueStatus.BACKLOG:
        return []
    return [
        IssueWake(
            agent_id=assignee_agent_id,
            source="assignment",
            reason="issue_assigned",
            payload={"issueId": str(issue_id), "mutation": "create"},
            context={"issueId": str(issue_id), "source": "issue.create"},
        )
    ]


def wake_for_checkout(*, issue_id: uuid.UUID, agent_id: uuid.UUID) -> IssueWake:
    """A person checking an issue out for an agent starts that agent on it."""
    return IssueWake(
        agent_id=agent_id,
        source="assignment",
        reason="issue_checked_out",
        payload={"issueId": str(issue_id), "mutation": "checkout"},
        context={"issueId": str(issue_id), "source": "issue.checkout"},
    )


def wakes_for_update(
    *,
    issue_id: uuid.UUID,
    status_before: str,
    status_after: str,
    assignee_before: tuple[uuid.UUID | None, str | None],
    assignee_after: tuple[uuid.UUID | None, str | None],
    actor_type: str,
    actor_agent_id: uuid.UUID | None,
    comment: CommentFacts | None,
) -> list[IssueWake]:
    """The wakes of a PATCH: assignment, status change, comment, mentions.

    One wake per agent; as in Paperclip's PATCH route, a later rule replaces an earlier one for
    the same agent (the comment's wake carries more than the status change's).
    """
    agent_after = assignee_after[0]
    assignee_changed = assignee_before != assignee_after
    wakes: dict[uuid.UUID, IssueWake] = {}
    if assignee_changed and agent_after is not None and status_after != IssueStatus.BACKLOG:
        wakes[agent_after] = _assignment_wake(issue_id, agent_after, comment)
    status_hands_back = _status_change_wakes(status_before, status_after, actor_type)
    if not assignee_changed and agent_after is not None and status_hands_back:
        wakes[agent_after] = IssueWake(
            agent_id=agent_after,
            source="automation",
            reason="issue_status_changed",
            payload={"issueId": str(issue_id), "mutation": "update"},
            context={"issueId": str(issue_id), "source": "issue.status_change"},
        )
    if comment is not None:
        if not assignee_changed:
            comment_wake = _comment_wake(
                issue_id, agent_after, actor_agent_id, comment, status_after
            )
            if comment_wake is not None:
                wakes[comment_wake.agent_id] = comment_wake
        for wake in _mention_wakes(issue_id, actor_agent_id, comment):
            wakes[wake.agent_id] = wake
    return list(wakes.values())


def wakes_for_comment(
    *,
    issue_id: uuid.UUID,
    status_after: str,
    assignee_agent_id: uuid.UUID | None,
    actor_agent_id: uuid.UUID | None,
    comment: CommentFacts,
) -> list[IssueWake]:
    """The wakes of a posted comment: the assignee's first, then the mentioned agents'.

    As in Paperclip's comment route, the first wake of an agent stays: an assignee who is also
    mentioned is woken as the assignee.
    """
    wakes: dict[uuid.UUID, IssueWake] = {}
    comment_wake = _comment_wake(issue_id, assignee_agent_id, actor_agent_id, comment, status_after)
    if comment_wake is not None:
        wakes[comment_wake.agent_id] = comment_wake
    for wake in _mention_wakes(issue_id, actor_agent_id, comment):
        wakes.setdefault(wake.agent_id, wake)
    return list(wakes.values())


def _status_change_wakes(before: str, after: str, actor_type: str) -> bool:
    """Status moves that hand the issue back to its agent (Paperclip's four)."""
    if before == after:
        return False
    return (
        before == IssueStatus.BACKLOG
        or (before == IssueStatus.BLOCKED and after == IssueStatus.TODO)
        or (before in CLOSED_STATUSES and after == IssueStatus.TODO)
        or (before == IssueStatus.IN_REVIEW and after == IssueStatus.TODO and actor_type == "user")
    )


def _assignment_wake(
    issue_id: uuid.UUID, agent_id: uuid.UUID, comment: CommentFacts | None
) -> IssueWake:
    payload: dict[str, Any] = {"issueId": str(issue_id), "mutation": "update"}
    context: dict[str, Any] = {"issueId": str(issue_id), "source": "issue.update"}
    if comment is not None:
        comment_id = str(comment.comment_id)
        payload["commentId"] = comment_id
        context.update(taskId=str(issue_id), commentId=comment_id, wakeCommentId=comment_id)
    return IssueWake(
        agent_id=agent_id,
        source="assignment",
        reason="issue_assigned",
        payload=payload,
        context=context,
    )


def _comment_wake(
    issue_id: uuid.UUID,
    assignee_agent_id: uuid.UUID | None,
    actor_agent_id: uuid.UUID | None,
    comment: CommentFacts,
    status_after: str,
) -> IssueWake | None:
    """The assignee hears of a comment unless it wrote it or the issue is (still) finished."""
    if assignee_agent_id is None or actor_agent_id == assignee_agent_id:
        return None
    reopened = comment.reopened_from is not None
    if not reopened and status_after in CLOSED_STATUSES:
        return None
    comment_id = str(comment.comment_id)
    reason = "issue_reopened_via_comment" if reopened else "issue_commented"
    payload: dict[str, Any] = {
        "issueId": str(issue_id),
        "commentId": comment_id,
        "mutation": "comment",
    }
    context: dict[str, Any] = {
        "issueId": str(issue_id),
        "taskId": str(issue_id),
        "commentId": comment_id,
        "wakeCommentId": comment_id,
        "source": "issue.comment.reopen" if reopened else "issue.comment",
        "wakeReason": reason,
    }
    if reopened:
        payload["reopenedFrom"] = comment.reopened_from
        context["reopenedFrom"] = comment.reopened_from
    return IssueWake(
        agent_id=assignee_agent_id,
        source="automation",
        reason=reason,
        payload=payload,
        context=context,
    )


def _mention_wakes(
    issue_id: uuid.UUID, actor_agent_id: uuid.UUID | None, comment: CommentFacts
) -> Iterable[IssueWake]:
    """Each linked agent but the author is asked to read the comment."""
    comment_id = str(comment.comment_id)
    for agent_id in comment.mentioned_agent_ids:
        if agent_id == actor_agent_id:
            continue
        yield IssueWake(
            agent_id=agent_id,
            source="automation",
            reason="issue_comment_mentioned",
            payload={"issueId": str(issue_id), "commentId": comment_id},
            context={
                "issueId": str(issue_id),
                "taskId": str(issue_id),
                "commentId": comment_id,
                "wakeCommentId": comment_id,
                "wakeReason": "issue_comment_mentioned",
                "source": "comment.mention",
            },
        )
