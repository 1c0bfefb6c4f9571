"""Admin edits go through the services: activity is recorded, locks released, agents woken, and a
domain error comes back on the form instead of a server error."""

import pytest
from django.urls import reverse
from django.utils import timezone

from heartbeat.models import Agent, AgentWakeupRequest
from issues.models import Issue
from paperclip.models import ActivityLog, Company, spend_month_of
from tests.factories import make_issue, make_run


def _issue_form(issue: Issue, **changes) -> dict:
    data = {
        "title": issue.title,
        "description": issue.description or "",
        "status": issue.status,
        "priority": issue.priority,
        "assignee_agent": str(issue.assignee_agent_id or ""),
        "assignee_user_id": issue.assignee_user_id or "",
        "parent": "",
        "comments-TOTAL_FORMS": "0",
        "comments-INITIAL_FORMS": "0",
    }
    data.update(changes)
    return data


@pytest.mark.django_db
def test_blocking_an_issue_in_the_admin_releases_its_run_locks(
    admin_client_, company_a, agent_a, instance_admin
):
    issue = make_issue(company_a, status="in_progress", assignee_agent_id=agent_a.id)
    run = make_run(agent_a, status="failed", error_code="process_lost")
    Issue.objects.filter(pk=issue.pk).update(checkout_run=run, execution_run=run)
    url = reverse("admin:issues_issue_change", args=[issue.pk])
    response = admin_client_.post(url, _issue_form(issue, status="blocked"))
    assert response.status_code == 302, response.content.decode()[:3000]
    issue.refresh_from_db()
    assert issue.status == "blocked"
    assert issue.checkout_run_id is None and issue.execution_run_id is None
    activity = ActivityLog.objects.get(action="issue.updated", entity_id=str(issue.pk))
    assert activity.actor_type == "user" and activity.actor_id == str(instance_admin.pk)


@pytest.mark.django_db
def test_assigning_an_issue_in_the_admin_wakes_the_agent(
    admin_client_, company_a, agent_a, django_capture_on_commit_callbacks
):
    issue = make_issue(company_a, status="todo")
    url = reverse("admin:issues_issue_change", args=[issue.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(url, _issue_form(issue, assignee_agent=str(agent_a.pk)))
    assert response.status_code == 302
    issue.refresh_from_db()
    assert issue.assignee_agent_id == agent_a.pk
    wake = AgentWakeupRequest.objects.get(agent=agent_a)
    assert wake.payload["issueId"] == str(issue.pk)


@pytest.mark.django_db
def test_assigning_an_agent_of_another_company_is_a_form_error(admin_client_, company_a, agent_b):
    issue = make_issue(company_a, status="todo")
    url = reverse("admin:issues_issue_change", args=[issue.pk])
    response = admin_client_.post(url, _issue_form(issue, assignee_agent=str(agent_b.pk)))
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors()
    issue.refresh_from_db()
    assert issue.assignee_agent_id is None


@pytest.mark.django_db
def test_board_user_creates_an_agent_through_the_service(board_client, company_a, board_user_a):
    response = board_client.post(
        reverse("admin:heartbeat_agent_add"),
        {
            "company": str(company_a.pk),
            "name": "new-hire",
            "role": "engineer",
            "adapter_type": "process",
            "adapter_config": "{}",
            "runtime_config": "{}",
            "budget_monthly_cents": "0",
            "metadata": "null",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    agent = Agent.objects.get(name="new-hire")
    assert agent.company_id == company_a.pk and agent.role == "engineer"
    created = ActivityLog.objects.get(action="agent.created", entity_id=str(agent.pk))
    assert created.actor_id == str(board_user_a.pk)


@pytest.mark.django_db
def test_pausing_a_company_in_the_admin_stamps_paused_at(admin_client_, company_a):
    url = reverse("admin:paperclip_company_change", args=[company_a.pk])
    response = admin_client_.post(
        url,
        {
            "name": company_a.name,
            "description": "",
            "status": "paused",
            "pause_reason": "budget review",
            "issue_prefix": company_a.issue_prefix,
            "budget_monthly_cents": "0",
            "require_board_approval_for_new_agents": "on",
            "brand_color": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    company = Company.objects.get(pk=company_a.pk)
    assert company.status == "paused" and company.paused_at is not None
    assert ActivityLog.objects.filter(action="company.updated", entity_id=str(company.pk)).exists()


@pytest.mark.django_db
def test_activating_a_company_whose_budget_is_spent_is_a_form_error(admin_client_, company_a):
    Company.objects.filter(pk=company_a.pk).update(
        status="paused",
        pause_reason="budget",
        budget_monthly_cents=100,
        spent_monthly_cents=100,
        spend_month=spend_month_of(timezone.now()),
    )
    url = reverse("admin:paperclip_company_change", args=[company_a.pk])
    response = admin_client_.post(
        url,
        {
            "name": company_a.name,
            "description": "",
            "status": "active",
            "pause_reason": "",
            "issue_prefix": company_a.issue_prefix,
            "budget_monthly_cents": "100",
            "require_board_approval_for_new_agents": "on",
            "brand_color": "",
        },
    )

    assert response.status_code == 200
    assert "monthly budget is spent" in response.content.decode()
    assert Company.objects.get(pk=company_a.pk).status == "paused"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("admin:heartbeat_agent_add", "name"),
        ("admin:heartbeat_agent_add", "title"),
        ("admin:issues_issue_add", "title"),
        ("admin:paperclip_company_add", "name"),
    ],
)
def test_name_and_title_are_single_line_inputs(admin_client_, url, field):
    page = admin_client_.get(reverse(url)).content.decode()
    assert f'<input type="text" name="{field}"' in page
    assert f'<textarea name="{field}"' not in page


@pytest.mark.django_db
def test_deleting_an_issue_in_the_admin_records_it_as_the_api_does(
    admin_client_, company_a, instance_admin
):
    issue = make_issue(company_a, status="todo")

    response = admin_client_.post(
        reverse("admin:issues_issue_delete", args=[issue.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Issue.objects.filter(pk=issue.pk).exists()
    activity = ActivityLog.objects.get(action="issue.deleted", entity_id=str(issue.pk))
    assert activity.actor_type == "user" and activity.actor_id == str(instance_admin.pk)


@pytest.mark.django_db
def test_an_issue_a_run_is_executing_is_not_deleted_in_the_admin(admin_client_, company_a, agent_a):
    issue = make_issue(company_a, status="in_progress", assignee_agent_id=agent_a.id)
    run = make_run(agent_a, status="running")
    Issue.objects.filter(pk=issue.pk).update(checkout_run=run, execution_run=run)

    response = admin_client_.post(
        reverse("admin:issues_issue_delete", args=[issue.pk]), {"post": "yes"}, follow=True
    )

    assert Issue.objects.filter(pk=issue.pk).exists()
    assert "Issue has an active run; cancel the run first" in response.content.decode()
    assert not ActivityLog.objects.filter(action="issue.deleted").exists()
