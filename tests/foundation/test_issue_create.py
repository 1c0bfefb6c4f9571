"""issue_create refuses an impossible issue before writing anything, whoever calls it."""

import pytest

from issues.models import Issue
from issues.services import IssueInvalidInput, IssueTransitionInvalid, issue_create
from paperclip.models import ActivityLog, Company
from tests.factories import make_agent, make_company, make_issue

pytestmark = pytest.mark.django_db


def _nothing_written(company) -> bool:
    company.refresh_from_db()
    return (
        not Issue.objects.filter(company=company).exists()
        and not ActivityLog.objects.filter(company=company).exists()
        and company.issue_counter == Company._meta.get_field("issue_counter").default
    )


def test_issue_with_two_assignees_is_refused():
    company = make_company()
    agent = make_agent(company)
    with pytest.raises(IssueTransitionInvalid, match="Issue can only have one assignee"):
        issue_create(
            company_id=company.id, title="t", assignee_agent_id=agent.id, assignee_user_id="u1"
        )
    assert _nothing_written(company)


def test_in_progress_issue_without_an_assignee_is_refused():
    company = make_company()
    with pytest.raises(IssueTransitionInvalid, match="An in_progress issue needs an assignee"):
        issue_create(company_id=company.id, title="t", status=Issue.Status.IN_PROGRESS)
    assert _nothing_written(company)


def test_assignee_agent_of_another_company_is_refused():
    company = make_company()
    stranger = make_agent(make_company())
    with pytest.raises(IssueInvalidInput, match="assigneeAgentId: no such agent in this company"):
        issue_create(company_id=company.id, title="t", assignee_agent_id=stranger.id)
    assert _nothing_written(company)


def test_parent_of_another_company_is_refused():
    company = make_company()
    foreign_parent = make_issue(make_company())
    with pytest.raises(IssueInvalidInput, match="parentId: no such issue in this company"):
        issue_create(company_id=company.id, title="t", parent_id=foreign_parent.id)
    assert _nothing_written(company)
