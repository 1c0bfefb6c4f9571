"""The issues services that the run engine and the sweeps call for their writes on issues and
comments: each a compare-and-set under the row lock its caller holds, with its own updated_at
rule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from issues.models import Issue, IssueComment
from issues.services import SystemComment, issue_system_comments_create
from tests.factories import make_company, make_issue

pytestmark = pytest.mark.django_db

LONG_AGO = timezone.now() - timedelta(days=3)


def _aged(issue: Issue, **fields) -> Issue:
    """The issue with an old updated_at (and the given fields), as stored."""
    Issue.objects.filter(pk=issue.pk).update(updated_at=LONG_AGO, **fields)
    issue.refresh_from_db()
    return issue


def test_system_comments_are_written_in_one_statement_with_no_author(
    django_assert_num_queries,
):
    company = make_company()
    first, second = _aged(make_issue(company)), _aged(make_issue(company))
    now = timezone.now()

    with django_assert_num_queries(1):
        issue_system_comments_create(
            comments=[
                SystemComment(company_id=company.id, issue_id=first.id, body="blocked: one"),
                SystemComment(company_id=company.id, issue_id=second.id, body="blocked: two"),
            ],
            now=now,
        )

    comments = IssueComment.objects.order_by("body")
    assert [(c.issue_id, c.body) for c in comments] == [
        (first.id, "blocked: one"),
        (second.id, "blocked: two"),
    ]
    assert all(
        c.author_agent_id is None and c.author_user_id is None and c.created_by_run_id is None
        for c in comments
    )
    assert {(c.created_at, c.updated_at) for c in comments} == {(now, now)}
    # The change the comment explains stamps the issue, not the comment.
    first.refresh_from_db()
    assert first.updated_at == LONG_AGO


def test_no_system_comments_writes_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        issue_system_comments_create(comments=[], now=timezone.now())
