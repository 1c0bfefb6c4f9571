"""Deletes in the console go through the services: a company or an agent with a queued or
running run (a live agent process, issue locks) or any run history is refused with the reason
shown and nothing deleted; a delete that goes through is recorded. Comments are read-only."""

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.urls import reverse

from heartbeat.models import Agent, AgentApiKey, HeartbeatRun
from heartbeat.services.agents import agent_key_create
from issues.models import Issue, IssueComment
from issues.services import issue_comment_create
from paperclip.models import ActivityLog, Company, CompanyMembership
from tests.factories import make_agent, make_issue, make_run


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.mark.django_db
def test_deleting_an_agent_with_a_running_run_is_refused_with_the_reason(admin_client_, agent_a):
    run = make_run(agent_a, status="running")

    response = admin_client_.post(
        reverse("admin:heartbeat_agent_delete", args=[agent_a.pk]), {"post": "yes"}, follow=True
    )

    assert Agent.objects.filter(pk=agent_a.pk).exists()
    assert HeartbeatRun.objects.get(pk=run.pk).status == "running"
    assert (
        f"Agent {agent_a.name} has 1 queued or running run(s): pause it (which cancels them) "
        "before deleting it" in _messages(response)
    )
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()
    assert not ActivityLog.objects.filter(action="agent.deleted").exists()


@pytest.mark.django_db
def test_deleting_an_agent_that_ran_is_refused_and_terminating_is_suggested(admin_client_, agent_a):
    make_run(agent_a, status="succeeded")

    response = admin_client_.post(
        reverse("admin:heartbeat_agent_delete", args=[agent_a.pk]), {"post": "yes"}, follow=True
    )

    assert Agent.objects.filter(pk=agent_a.pk).exists()
    assert (
        f"Agent {agent_a.name} cannot be deleted: it has 1 heartbeat run, kept as the record of "
        "its work. Terminate the agent instead." in _messages(response)
    )


@pytest.mark.django_db
def test_deleting_an_agent_that_never_ran_takes_its_keys_and_is_recorded(
    admin_client_, company_a, agent_a, instance_admin
):
    agent_key_create(agent_id=agent_a.pk, name="ci", actor_type="system", actor_id="test")

    response = admin_client_.post(
        reverse("admin:heartbeat_agent_delete", args=[agent_a.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Agent.objects.filter(pk=agent_a.pk).exists()
    assert not AgentApiKey.objects.filter(agent_id=agent_a.pk).exists()
    deleted = ActivityLog.objects.get(action="agent.deleted")
    assert (deleted.company_id, deleted.entity_id) == (company_a.pk, str(agent_a.pk))
    assert deleted.actor_id == str(instance_admin.pk)
    assert LogEntry.objects.get(action_flag=DELETION).object_id == str(agent_a.pk)


@pytest.mark.django_db
def test_bulk_deleting_agents_deletes_those_without_runs_names_the_refused_and_counts_right(
    admin_client_, company_a, agent_a
):
    idle = make_agent(company_a, name="idle")
    make_run(agent_a, status="queued")

    response = admin_client_.post(
        reverse("admin:heartbeat_agent_changelist"),
        {"action": "delete_selected", "_selected_action": [agent_a.pk, idle.pk], "post": "yes"},
        follow=True,
    )

    assert list(Agent.objects.values_list("name", flat=True)) == [agent_a.name]
    assert any(
        message.startswith(f"{agent_a} was not deleted: Agent {agent_a.name} has 1 queued")
        for message in _messages(response)
    )
    logged = LogEntry.objects.filter(action_flag=DELETION)
    assert list(logged.values_list("object_id", flat=True)) == [str(idle.pk)]
    assert "Deleted 1 of 2 selected agents." in _messages(response)
    assert not any(message.startswith("Successfully") for message in _messages(response))


@pytest.mark.django_db
def test_deleting_a_company_with_an_active_run_is_refused_with_the_reason(
    admin_client_, company_a, agent_a
):
    issue = make_issue(company_a, status="in_progress", assignee_agent_id=agent_a.id)
    run = make_run(agent_a, status="running")
    Issue.objects.filter(pk=issue.pk).update(execution_run=run, checkout_run=run)

    response = admin_client_.post(
        reverse("admin:paperclip_company_delete", args=[company_a.pk]),
        {"post": "yes"},
        follow=True,
    )

    assert Company.objects.filter(pk=company_a.pk).exists()
    assert Issue.objects.get(pk=issue.pk).execution_run_id == run.pk
    assert Agent.objects.filter(pk=agent_a.pk).exists()
    assert (
        f"Company {company_a.name} cannot be deleted: it has 1 heartbeat run, 1 issue, kept as "
        "the record of its agents' work. Pause the company instead." in _messages(response)
    )


@pytest.mark.django_db
def test_deleting_a_company_that_never_ran_takes_its_rows(admin_client_, company_a, agent_a):
    make_issue(company_a, status="todo")

    response = admin_client_.post(
        reverse("admin:paperclip_company_delete", args=[company_a.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Company.objects.filter(pk=company_a.pk).exists()
    assert not Agent.objects.exists() and not Issue.objects.exists()
    assert LogEntry.objects.get(action_flag=DELETION).object_id == str(company_a.pk)


@pytest.mark.django_db
def test_comments_are_read_only_in_the_console(admin_client_, company_a):
    issue = make_issue(company_a, status="todo")
    comment = issue_comment_create(issue=issue, body="keep me", author_user_id="someone")

    change = admin_client_.post(
        reverse("admin:issues_issuecomment_change", args=[comment.pk]), {"body": "edited"}
    )
    delete = admin_client_.post(
        reverse("admin:issues_issuecomment_delete", args=[comment.pk]), {"post": "yes"}
    )
    add = admin_client_.get(reverse("admin:issues_issuecomment_add"))

    assert (change.status_code, delete.status_code, add.status_code) == (403, 403, 403)
    assert IssueComment.objects.get(pk=comment.pk).body == "keep me"


@pytest.mark.django_db
def test_adding_a_board_member_in_the_console_is_recorded(
    admin_client_, company_a, django_user_model, instance_admin
):
    user = django_user_model.objects.create_user("carol", password="pw-carol-123")

    response = admin_client_.post(
        reverse("admin:paperclip_companymembership_add"),
        {"company": str(company_a.pk), "user": str(user.pk), "role": "member"},
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    assert CompanyMembership.objects.get(user=user).company_id == company_a.pk
    added = ActivityLog.objects.get(action="company.member_added")
    assert added.details == {"userId": str(user.pk), "role": "member"}
    assert added.actor_id == str(instance_admin.pk)


@pytest.mark.django_db
def test_changing_a_members_role_in_the_console_changes_only_the_role(
    admin_client_, company_a, company_b, board_user_a
):
    membership = CompanyMembership.objects.get(user=board_user_a)

    response = admin_client_.post(
        reverse("admin:paperclip_companymembership_change", args=[membership.pk]),
        {"company": str(company_b.pk), "role": "owner"},
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    membership.refresh_from_db()
    assert (membership.company_id, membership.role) == (company_a.pk, "owner")
    assert ActivityLog.objects.filter(action="company.member_role_changed").count() == 1


@pytest.mark.django_db
def test_removing_a_board_member_in_the_console_is_recorded(admin_client_, board_user_a):
    membership = CompanyMembership.objects.get(user=board_user_a)

    response = admin_client_.post(
        reverse("admin:paperclip_companymembership_delete", args=[membership.pk]),
        {"post": "yes"},
    )

    assert response.status_code == 302
    assert not CompanyMembership.objects.exists()
    removed = ActivityLog.objects.get(action="company.member_removed")
    assert removed.details["userId"] == str(board_user_a.pk)


def _skill_form(company, **changes) -> dict:
    data = {
        "company": str(company.pk),
        "key": "deploy",
        "slug": "deploy",
        "name": "Deploy",
        "description": "",
        "markdown": "# Deploy\nRun the pipeline.",
        "source_type": "local_path",
        "source_locator": "",
        "source_ref": "",
        "trust_level": "markdown_only",
        "compatibility": "compatible",
        "file_inventory": "[]",
        "metadata": "null",
    }
    data.update(changes)
    return data


@pytest.mark.django_db
def test_board_member_adds_a_skill_through_the_service(board_client, company_a, board_user_a):
    response = board_client.post(
        reverse("admin:paperclip_companyskill_add"), _skill_form(company_a)
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    created = ActivityLog.objects.get(action="company.skill_created")
    assert created.details["key"] == "deploy"
    assert created.actor_id == str(board_user_a.pk)


@pytest.mark.django_db
def test_a_skill_whose_file_inventory_is_not_a_list_is_a_form_error(admin_client_, company_a):
    response = admin_client_.post(
        reverse("admin:paperclip_companyskill_add"),
        _skill_form(company_a, file_inventory='{"a": 1}'),
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == ["fileInventory must be a list"]
    assert not company_a.skills.exists()


@pytest.mark.django_db
def test_changing_a_skill_in_the_console_is_recorded(admin_client_, company_a):
    admin_client_.post(reverse("admin:paperclip_companyskill_add"), _skill_form(company_a))
    skill = company_a.skills.get()

    response = admin_client_.post(
        reverse("admin:paperclip_companyskill_change", args=[skill.pk]),
        _skill_form(company_a, name="Deploy to staging"),
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    skill.refresh_from_db()
    assert skill.name == "Deploy to staging"
    assert ActivityLog.objects.filter(action="company.skill_updated").count() == 1
