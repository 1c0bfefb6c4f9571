"""Who sees what in the console: instance admins see every company, a board member only theirs."""

import pytest
from django.urls import reverse

from heartbeat.models import Agent, AgentRuntimeState, HeartbeatRun
from issues.models import Issue
from paperclip.models import Company, CompanyMembership
from tests.console.conftest import seed_console_rows
from tests.factories import make_company

CHANGELISTS = [
    "paperclip_company",
    "paperclip_companymembership",
    "paperclip_activitylog",
    "paperclip_companyskill",
    "heartbeat_agent",
    "heartbeat_agentapikey",
    "heartbeat_agentruntimestate",
    "heartbeat_agentwakeuprequest",
    "heartbeat_heartbeatrun",
    "heartbeat_heartbeatrunevent",
    "issues_issue",
    "issues_issuecomment",
]


@pytest.fixture
def two_companies(company_a, company_b, agent_a, agent_b):
    return seed_console_rows(company_a, agent_a), seed_console_rows(company_b, agent_b)


def _change_urls(rows: dict, agent: Agent, company: Company) -> list[str]:
    return [
        reverse("admin:paperclip_company_change", args=[company.pk]),
        reverse("admin:heartbeat_agent_change", args=[agent.pk]),
        reverse("admin:heartbeat_agentruntimestate_change", args=[agent.pk]),
        reverse("admin:heartbeat_agentwakeuprequest_change", args=[rows["wake"].pk]),
        reverse("admin:heartbeat_heartbeatrun_change", args=[rows["running"].pk]),
        reverse("admin:heartbeat_heartbeatrun_change", args=[rows["lost"].pk]),
        reverse("admin:issues_issue_change", args=[rows["issue"].pk]),
        reverse("admin:issues_issuecomment_change", args=[rows["comment"].pk]),
        reverse("admin:paperclip_activitylog_change", args=[rows["activity"].pk]),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("name", CHANGELISTS)
def test_instance_admin_changelist_lists_every_company(admin_client_, two_companies, name):
    response = admin_client_.get(reverse(f"admin:{name}_changelist"))
    assert response.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("name", CHANGELISTS)
def test_board_user_changelist_shows_only_own_company(board_client, two_companies, name):
    rows_a, _ = two_companies
    response = board_client.get(reverse(f"admin:{name}_changelist"))
    assert response.status_code == 200
    shown = {obj.pk for obj in response.context["cl"].result_list}
    model = response.context["cl"].model
    field = "pk" if model is Company else "company"
    visible_companies = set(model.objects.filter(pk__in=shown).values_list(field, flat=True))
    assert visible_companies <= {rows_a["issue"].company_id}
    assert "Globex" not in response.content.decode()


@pytest.mark.django_db
def test_board_user_run_list_has_own_runs_and_not_others(board_client, two_companies):
    rows_a, rows_b = two_companies
    response = board_client.get(reverse("admin:heartbeat_heartbeatrun_changelist"))
    shown = {run.pk for run in response.context["cl"].result_list}
    assert {rows_a["running"].pk, rows_a["lost"].pk, rows_a["retry"].pk} <= shown
    assert not shown & {rows_b["running"].pk, rows_b["lost"].pk, rows_b["retry"].pk}


@pytest.mark.django_db
def test_change_pages_render_for_instance_admin(admin_client_, two_companies, agent_a, company_a):
    rows_a, _ = two_companies
    for url in _change_urls(rows_a, agent_a, company_a):
        assert admin_client_.get(url).status_code == 200, url


@pytest.mark.django_db
def test_change_pages_render_for_board_user_of_the_company(
    board_client, two_companies, agent_a, company_a
):
    rows_a, _ = two_companies
    for url in _change_urls(rows_a, agent_a, company_a):
        assert board_client.get(url).status_code == 200, url


@pytest.mark.django_db
def test_board_user_gets_404_on_other_company_objects(
    board_client, two_companies, agent_b, company_b
):
    _, rows_b = two_companies
    for url in _change_urls(rows_b, agent_b, company_b):
        assert board_client.get(url).status_code == 404, url


@pytest.mark.django_db
def test_board_user_cannot_change_other_company_issue_by_post(board_client, two_companies):
    _, rows_b = two_companies
    issue = rows_b["issue"]
    url = reverse("admin:issues_issue_change", args=[issue.pk])
    response = board_client.post(url, {"title": "hijacked", "priority": "low"})
    assert response.status_code == 404
    issue.refresh_from_db()
    assert issue.title != "hijacked"


@pytest.mark.django_db
def test_board_user_company_choices_are_own_companies_only(board_client, company_a, company_b):
    response = board_client.get(reverse("admin:issues_issue_add"))
    assert response.status_code == 200
    choices = {
        str(pk) for pk, _ in response.context["adminform"].form.fields["company"].choices if pk
    }
    assert choices == {str(company_a.pk)}


@pytest.mark.django_db
def test_board_user_cannot_create_issue_in_other_company(board_client, company_a, company_b):
    response = board_client.post(
        reverse("admin:issues_issue_add"),
        {"company": str(company_b.pk), "title": "sneaky", "status": "backlog", "priority": "low"},
    )
    assert response.status_code == 200  # the form comes back with an error
    assert not Issue.objects.filter(title="sneaky").exists()


@pytest.mark.django_db
def test_board_user_creates_issue_with_company_number(board_client, company_a):
    response = board_client.post(
        reverse("admin:issues_issue_add"),
        {
            "company": str(company_a.pk),
            "title": "From the console",
            "status": "backlog",
            "priority": "high",
            "comments-TOTAL_FORMS": "0",
            "comments-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    issue = Issue.objects.get(title="From the console")
    assert issue.company_id == company_a.pk
    assert issue.identifier == f"{company_a.issue_prefix}-{issue.issue_number}"


@pytest.mark.django_db
def test_company_filter_lists_only_own_companies(board_client, board_user_a, two_companies):
    # The filter shows only with two choices: a second membership makes it appear.
    initech = make_company(name="Initech")
    CompanyMembership.objects.create(company=initech, user=board_user_a)
    response = board_client.get(reverse("admin:heartbeat_heartbeatrun_changelist"))
    content = response.content.decode()
    assert "Acme" in content and "Initech" in content
    assert "Globex" not in content


@pytest.mark.django_db
def test_staff_user_without_membership_sees_no_console(django_user_model, client, two_companies):
    user = django_user_model.objects.create_user("mallory", password="pw-123456", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:heartbeat_heartbeatrun_changelist")).status_code == 403
    index = client.get(reverse("admin:index"))
    assert index.context["app_list"] == []


@pytest.mark.django_db
def test_machine_owned_models_cannot_be_added(admin_client_):
    for name in [
        "heartbeat_heartbeatrun",
        "heartbeat_heartbeatrunevent",
        "heartbeat_agentwakeuprequest",
        "heartbeat_agentruntimestate",
        "paperclip_activitylog",
    ]:
        assert admin_client_.get(reverse(f"admin:{name}_add")).status_code == 403, name


@pytest.mark.django_db
def test_run_page_is_read_only_for_instance_admin(admin_client_, two_companies):
    rows_a, _ = two_companies
    run = rows_a["running"]
    url = reverse("admin:heartbeat_heartbeatrun_change", args=[run.pk])
    response = admin_client_.post(url, {"status": "succeeded"})
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == HeartbeatRun.Status.RUNNING


@pytest.mark.django_db
def test_agent_status_is_read_only_on_the_agent_page(admin_client_, agent_a):
    response = admin_client_.get(reverse("admin:heartbeat_agent_change", args=[agent_a.pk]))
    assert "status" not in response.context["adminform"].form.fields
    assert AgentRuntimeState.objects.count() == 0


@pytest.mark.django_db
def test_activity_list_links_each_entity_to_its_page(admin_client_, two_companies):
    rows_a, _ = two_companies
    page = admin_client_.get(reverse("admin:paperclip_activitylog_changelist")).content.decode()
    assert reverse("admin:issues_issue_change", args=[rows_a["issue"].pk]) in page
