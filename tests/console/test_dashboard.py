"""The "what is stuck" dashboard: every section, the scoping, and a fixed query count."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from heartbeat.models import RunSupervisor, SweepRecord
from issues.models import IssueComment
from tests.console.conftest import seed_console_rows
from tests.factories import make_agent, make_issue, make_run

DASHBOARD = reverse("heartbeat-dashboard")
FRAGMENT = reverse("heartbeat-dashboard-fragment")


@pytest.mark.django_db
def test_admin_index_links_the_dashboard(admin_client_):
    assert DASHBOARD in admin_client_.get(reverse("admin:index")).content.decode()


@pytest.mark.django_db
def test_console_header_names_the_product(admin_client_):
    page = admin_client_.get(reverse("admin:index")).content.decode()
    assert "<title>Control plane | Paperclip</title>" in page
    assert "Django administration" not in page


@pytest.mark.django_db
def test_dashboard_lists_lost_run_with_its_retry_and_outcome(admin_client_, agent_a):
    lost = make_run(agent_a, status="failed", error_code="process_lost", error="pid 7 is gone")
    retry = make_run(agent_a, status="failed", error_code="adapter_failed", retry_of_run=lost)
    page = admin_client_.get(DASHBOARD).content.decode()
    lost_section = page.split('id="pc-lost"')[1].split('id="pc-stranded"')[0]
    assert reverse("admin:heartbeat_heartbeatrun_change", args=[lost.pk]) in lost_section
    assert reverse("admin:heartbeat_heartbeatrun_change", args=[retry.pk]) in lost_section
    assert "adapter_failed" in lost_section
    assert "pid 7 is gone" in lost_section


@pytest.mark.django_db
def test_dashboard_says_when_no_retry_was_queued(admin_client_, agent_a):
    make_run(agent_a, status="failed", error_code="process_lost")
    assert "no retry queued" in admin_client_.get(FRAGMENT).content.decode()


@pytest.mark.django_db
def test_dashboard_shows_active_run_owner_and_expired_lease(admin_client_, agent_a):
    run = make_run(
        agent_a,
        status="running",
        owner_host="other-host",
        owner_pid=321,
        lease_expires_at=timezone.now() - timedelta(minutes=2),
    )
    active = admin_client_.get(FRAGMENT).content.decode().split('id="pc-active"')[1]
    active = active.split('id="pc-detached"')[0]
    assert str(run.pk)[:8] in active
    assert "321@other-host" in active
    assert "other_host" in active
    assert "expired 2m" in active


@pytest.mark.django_db
def test_dashboard_shows_detached_run_grace_end(admin_client_, agent_a, settings):
    settings.PAPERCLIP_HEARTBEAT = {"detached_grace_sec": 900}
    detached_at = timezone.now() - timedelta(minutes=5)
    make_run(
        agent_a,
        status="running",
        error_code="process_detached",
        started_at=detached_at - timedelta(minutes=1),
        detached_at=detached_at,
    )
    section = admin_client_.get(FRAGMENT).content.decode().split('id="pc-detached"')[1]
    section = section.split('id="pc-lost"')[0]
    grace_end = detached_at + timedelta(seconds=900)
    assert f"{grace_end:%H:%M:%S} UTC (in 9m" in section
    assert "<td>5m00s</td>" in section or "<td>5m01s</td>" in section


@pytest.mark.django_db
def test_dashboard_lists_stranded_and_escalated_issues(admin_client_, company_a, agent_a):
    stranded = make_issue(
        company_a, title="Nobody works on me", status="todo", assignee_agent_id=agent_a.id
    )
    escalated = make_issue(
        company_a, title="Gave up", status="blocked", assignee_agent_id=agent_a.id
    )
    IssueComment.objects.create(
        company=company_a,
        issue=escalated,
        body="Paperclip automatically retried dispatch ... Moving it to `blocked`",
    )
    page = admin_client_.get(FRAGMENT).content.decode()
    stranded_section = page.split('id="pc-stranded"')[1].split('id="pc-escalated"')[0]
    escalated_section = page.split('id="pc-escalated"')[1].split('id="pc-sweeps"')[0]
    assert stranded.identifier in stranded_section
    assert escalated.identifier not in stranded_section
    assert escalated.identifier in escalated_section
    assert "automatically retried dispatch" in escalated_section


@pytest.mark.django_db
def test_issue_with_a_queued_run_is_not_stranded(admin_client_, company_a, agent_a):
    issue = make_issue(company_a, status="todo", assignee_agent_id=agent_a.id)
    make_run(agent_a, status="queued", context_snapshot={"issueId": str(issue.id)})
    page = admin_client_.get(FRAGMENT).content.decode()
    assert issue.identifier not in page.split('id="pc-stranded"')[1]


@pytest.mark.django_db
def test_dashboard_warns_when_sweeps_are_overdue_and_cluster_down(admin_client_):
    old = timezone.now() - timedelta(minutes=30)
    SweepRecord.objects.create(
        kind="reap", host="h1", started_at=old, finished_at=old, duration_ms=3, result={}
    )
    page = admin_client_.get(FRAGMENT).content.decode()
    assert 'id="pc-cluster-down"' in page
    assert "never ran" in page


@pytest.mark.django_db
def test_recent_sweeps_show_what_they_did_and_no_warning(admin_client_):
    now = timezone.now()
    for kind, result in [("reap", {"reaped": 2, "run_ids": []}), ("reconcile", {"escalated": 1})]:
        SweepRecord.objects.create(
            kind=kind, host="h1", started_at=now, finished_at=now, duration_ms=12, result=result
        )
    page = admin_client_.get(FRAGMENT).content.decode()
    assert "pc-cluster-down" not in page
    assert "reaped 2" in page and "escalated 1" in page
    assert "overdue" not in page.split('id="pc-sweeps"')[1].split("</tbody>")[0]


@pytest.mark.django_db
def test_reap_sweep_shows_runs_deferred_because_their_issue_was_busy(admin_client_):
    now = timezone.now()
    result = {"reaped": 0, "deferred": 2, "deferred_run_ids": []}
    SweepRecord.objects.create(
        kind="reap", host="h1", started_at=now, finished_at=now, duration_ms=5, result=result
    )
    sweeps = admin_client_.get(FRAGMENT).content.decode().split('id="pc-sweeps"')[1]
    assert "deferred (issue busy, next sweep) 2" in sweeps


@pytest.mark.django_db
def test_chart_counts_runs_by_outcome(admin_client_, agent_a):
    make_run(agent_a, status="succeeded")
    make_run(agent_a, status="succeeded")
    make_run(agent_a, status="failed", error_code="process_lost")
    page = admin_client_.get(FRAGMENT).content.decode()
    assert "<svg" in page
    assert page.count("succeeded 2") == 2  # the 24 h and the 7 day legends
    assert page.count("process_lost 1") == 2


@pytest.mark.django_db
def test_board_user_dashboard_shows_only_own_company(
    board_client, company_a, company_b, agent_a, agent_b
):
    mine = make_run(agent_a, status="failed", error_code="process_lost")
    theirs = make_run(agent_b, status="failed", error_code="process_lost")
    page = board_client.get(DASHBOARD).content.decode()
    assert str(mine.pk)[:8] in page
    assert str(theirs.pk)[:8] not in page
    assert "Globex" not in page


@pytest.mark.django_db
def test_board_user_cannot_select_another_company(board_client, company_b):
    response = board_client.get(FRAGMENT, {"company": str(company_b.pk)})
    assert response.status_code == 404


@pytest.mark.django_db
def test_instance_admin_can_narrow_to_one_company(admin_client_, agent_a, agent_b, company_a):
    mine = make_run(agent_a, status="failed", error_code="process_lost")
    theirs = make_run(agent_b, status="failed", error_code="process_lost")
    page = admin_client_.get(FRAGMENT, {"company": str(company_a.pk)}).content.decode()
    assert str(mine.pk)[:8] in page
    assert str(theirs.pk)[:8] not in page


@pytest.mark.django_db
def test_staff_without_membership_is_refused(client, django_user_model):
    user = django_user_model.objects.create_user("eve", password="pw-eve-1234", is_staff=True)
    client.force_login(user)
    assert client.get(DASHBOARD).status_code == 403


@pytest.mark.django_db
def test_anonymous_user_is_sent_to_login(client):
    response = client.get(FRAGMENT)
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


@pytest.mark.django_db
def test_dashboard_query_count_is_constant_in_rows(admin_client_, company_a):
    def seed(n):
        for _ in range(n):
            agent = make_agent(company_a)
            rows = seed_console_rows(company_a, agent)
            make_run(agent, status="running", detached_at=timezone.now())
            make_issue(company_a, status="todo", assignee_agent_id=agent.id)
            IssueComment.objects.create(company=company_a, issue=rows["issue"], body="x")
            rows["issue"].status = "blocked"
            rows["issue"].save()

    def count():
        cache.clear()
        with CaptureQueriesContext(connection) as queries:
            assert admin_client_.get(FRAGMENT).status_code == 200
        return len(queries)

    seed(1)
    one = count()
    seed(19)
    assert count() == one


@pytest.mark.django_db
def test_chart_is_cached_between_refreshes(admin_client_, agent_a):
    make_run(agent_a, status="succeeded")
    admin_client_.get(FRAGMENT)
    make_run(agent_a, status="succeeded")
    page = admin_client_.get(FRAGMENT).content.decode()
    assert "succeeded 1" in page
    cache.clear()
    assert "succeeded 2" in admin_client_.get(FRAGMENT).content.decode()


@pytest.mark.django_db
def test_dashboard_shows_which_supervisor_watches_a_run_and_since_when(admin_client_, agent_a):
    make_run(
        agent_a,
        status="running",
        owner_host="other-host",
        owner_pid=321,
        owner_since=timezone.now() - timedelta(minutes=3),
        lease_expires_at=timezone.now() + timedelta(seconds=60),
    )
    active = admin_client_.get(FRAGMENT).content.decode().split('id="pc-active"')[1]
    assert "supervisor 321@other-host since 3m" in active.split("</table>")[0]


@pytest.mark.django_db
def test_dashboard_lists_run_supervisors_with_their_last_renewal(admin_client_, agent_a):
    now = timezone.now()
    RunSupervisor.objects.create(
        host="h1",
        boot_id="b",
        pid=4242,
        started_at=now - timedelta(hours=1),
        renewed_at=now - timedelta(seconds=5),
        renewing_since=now - timedelta(hours=1),
    )
    make_run(agent_a, status="running", owner_host="h1", owner_pid=4242)
    section = admin_client_.get(FRAGMENT).content.decode().split('id="pc-supervisors"')[1]
    row = section.split("<tbody>")[1].split("</tr>")[0]
    assert "<td>h1</td>" in row and "<td>4242</td>" in row
    assert "5s ago" in row and "<td>1</td>" in row
    assert "pc-supervisor-watching" in row


@pytest.mark.django_db
def test_dashboard_warns_of_a_host_whose_runs_no_supervisor_watches(admin_client_, agent_a):
    now = timezone.now()
    RunSupervisor.objects.create(
        host="h2",
        boot_id="b",
        pid=4243,
        started_at=now - timedelta(hours=1),
        renewed_at=now - timedelta(minutes=10),
        renewing_since=now - timedelta(hours=1),
    )
    make_run(agent_a, status="running", owner_host="h2", owner_pid=4243)
    page = admin_client_.get(FRAGMENT).content.decode()
    assert "No run supervisor watches host h2, where 1 run executes" in page
    assert "pc-supervisor-gone" in page.split('id="pc-supervisors"')[1]
