"""The example agent, end to end: seed_demo, a real run executing the agent as a real process
under its run shim, the agent calling a live server with its run credential, and what it leaves
behind."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from heartbeat.models import Agent, HeartbeatRun
from heartbeat.run_log import run_log_read
from heartbeat.services import lifecycle, run_execute
from issues.models import Issue, IssueComment
from paperclip.models import Company, CompanyMembership

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo_env(live_server, settings, tmp_path, monkeypatch):
    """The server URL agents call back on is the live server; runs are executed by the test."""
    settings.PAPERCLIP_API_URL = live_server.url
    settings.PAPERCLIP_HEARTBEAT = {"run_log_dir": str(tmp_path / "run-logs")}
    monkeypatch.setenv("PAPERCLIP_ADMIN_USER", "demo-admin")
    dispatched: list[str] = []
    monkeypatch.setattr(lifecycle, "_run_dispatch", dispatched.append)
    get_user_model().objects.create_superuser(username="demo-admin", email="", password=None)
    return dispatched


@pytest.mark.timeout(120)
def test_example_agent_checks_out_comments_and_finishes_its_issue(demo_env, supervisor):
    call_command("seed_demo")
    assert len(demo_env) == 1
    run_execute(run_id=demo_env[0])
    supervisor.settle(demo_env[0])
    run = HeartbeatRun.objects.get(pk=demo_env[0])
    log = "".join(line.get("chunk", "") for line in run_log_read(run.log_ref))
    assert (run.status, run.exit_code) == ("succeeded", 0), log
    issue = Issue.objects.get(company__issue_prefix="DEMO")
    assert issue.status == "done"
    assert issue.completed_at is not None
    comment = IssueComment.objects.get(issue=issue)
    assert comment.author_agent_id == run.agent_id
    assert comment.created_by_run_id == run.id
    assert comment.body.startswith("Hello from Demo engineer")
    assert f"checked out {issue.identifier}" in log
    assert f"{issue.identifier} is done" in log


@pytest.mark.timeout(60)
def test_seed_demo_twice_creates_nothing_new(demo_env):
    call_command("seed_demo")
    call_command("seed_demo")
    company = Company.objects.get(issue_prefix="DEMO")
    assert Agent.objects.filter(company=company).count() == 1
    assert Issue.objects.filter(company=company).count() == 1
    assert CompanyMembership.objects.filter(company=company).count() == 1
    assert HeartbeatRun.objects.filter(company_id=company.id).count() == 1
