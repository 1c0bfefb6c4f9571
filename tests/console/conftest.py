import pytest
from django.test import Client

from paperclip.models import CompanyMembership
from tests.factories import make_agent, make_company


@pytest.fixture
def company_a(db):
    return make_company(name="Acme")


@pytest.fixture
def company_b(db):
    return make_company(name="Globex")


@pytest.fixture
def agent_a(company_a):
    return make_agent(company_a, name="ada")


@pytest.fixture
def agent_b(company_b):
    return make_agent(company_b, name="bob")


@pytest.fixture
def instance_admin(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")


@pytest.fixture
def board_user_a(django_user_model, company_a):
    """A staff user with no Django model permissions: board membership alone is the role."""
    user = django_user_model.objects.create_user("alice", password="pw-alice-123", is_staff=True)
    CompanyMembership.objects.create(company=company_a, user=user)
    return user


@pytest.fixture
def admin_client_(instance_admin):
    client = Client()
    client.force_login(instance_admin)
    return client


@pytest.fixture
def board_client(board_user_a):
    client = Client()
    client.force_login(board_user_a)
    return client


def seed_console_rows(company, agent) -> dict:
    """One row of every console model for a company: a running run on an issue, a lost run and
    its retry, events, a wake, runtime state, a comment, an activity row, a sweep record."""
    from datetime import timedelta

    from django.utils import timezone

    from heartbeat.models import AgentRuntimeState, HeartbeatRunEvent
    from issues.models import IssueComment
    from paperclip.services import activity_log_record
    from tests.factories import make_issue, make_run, make_wakeup

    now = timezone.now()
    issue = make_issue(company, title=f"Fix the {company.name} build", assignee_agent_id=agent.id)
    wake = make_wakeup(agent, payload={"issueId": str(issue.id)})
    running = make_run(
        agent,
        status="running",
        wakeup_request=wake,
        context_snapshot={"issueId": str(issue.id)},
        process_pid=4242,
        process_host="elsewhere",
        owner_host="elsewhere",
        owner_pid=99,
        lease_expires_at=now + timedelta(seconds=60),
    )
    lost = make_run(
        agent,
        status="failed",
        error_code="process_lost",
        error="Process lost -- child pid 4243 is no longer running",
    )
    retry = make_run(agent, status="queued", retry_of_run=lost, process_loss_retry_count=1)
    HeartbeatRunEvent.objects.create(
        company=company, run=running, agent=agent, seq=1, event_type="lifecycle", message="started"
    )
    AgentRuntimeState.objects.create(
        agent=agent, company=company, adapter_type="process", last_run_id=running.id
    )
    comment = IssueComment.objects.create(company=company, issue=issue, body="escalated")
    activity = activity_log_record(
        company_id=company.id, action="issue.updated", entity_type="issue", entity_id=issue.id
    )
    return {
        "issue": issue,
        "wake": wake,
        "running": running,
        "lost": lost,
        "retry": retry,
        "comment": comment,
        "activity": activity,
    }


@pytest.fixture(autouse=True)
def _fresh_console_cache():
    """The dashboard caches its chart for a few seconds; each test starts without it."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
