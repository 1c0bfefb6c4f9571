"""State changes of issues and comments."""

from __future__ import annotations

import uuid

from django.db import connection, transaction

from issues.models import Issue, IssueComment
from paperclip.models import Company


def _next_issue_number(company_id: uuid.UUID | str) -> tuple[int, str]:
    """Take the company's next number inside the caller's transaction.

    The row lock taken by UPDATE serialises concurrent creators, and a rolled-back creation
    rolls its increment back too, so numbers are unique and gapless.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE paperclip_company SET issue_counter = issue_counter + 1 "
            "WHERE id = %s RETURNING issue_counter, issue_prefix",
            [company_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise Company.DoesNotExist(f"company {company_id} not found")
    return row[0], row[1]


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
) -> Issue:
    with transaction.atomic():
        number, prefix = _next_issue_number(company_id)
        return Issue.objects.create(
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
            issue_number=number,
            identifier=f"{prefix}-{number}",
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
    with transaction.atomic():
        comment = IssueComment.objects.create(
            company_id=issue.company_id,
            issue=issue,
            body=body,
            author_agent_id=author_agent_id,
            author_user_id=author_user_id,
            created_by_run_id=created_by_run_id,
        )
        Issue.objects.filter(pk=issue.pk).update(updated_at=comment.created_at)
    return comment
