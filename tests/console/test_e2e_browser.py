"""End to end in a real headless Chromium (Debian's package, driven by Playwright): log in, find
a lost run on the dashboard, follow it to its retry, cancel a running run with the admin action.

Screenshots of the dashboard and of a run page go to test-artifacts/ (git-ignored).
"""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from heartbeat.models import HeartbeatRun
from tests.factories import make_agent, make_company, make_issue, make_run

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
# Generous: two shared cores, several suites side by side.
STEP_TIMEOUT_MS = 20_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@pytest.fixture
def console_world(django_user_model):
    """A company with a lost run and its finished retry, and a running run to cancel."""
    django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    company = make_company(name="Acme Robotics")
    agent = make_agent(company, name="ada-engineer")
    issue = make_issue(
        company, title="Ship the release notes", status="in_progress", assignee_agent_id=agent.id
    )
    lost = make_run(
        agent,
        status="failed",
        error_code="process_lost",
        error="Process lost -- child pid 4243 is no longer running",
        context_snapshot={"issueId": str(issue.id)},
        process_pid=4243,
        process_host="worker-1",
    )
    retry = make_run(
        agent,
        status="succeeded",
        retry_of_run=lost,
        process_loss_retry_count=1,
        context_snapshot={"issueId": str(issue.id), "retryOfRunId": str(lost.pk)},
    )
    running = make_run(agent, status="running", process_pid=5150, process_host="worker-1")
    for outcome in ["succeeded"] * 5 + ["failed", "cancelled"]:
        make_run(agent, status=outcome)
    return {"lost": lost, "retry": retry, "running": running}


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(240)
def test_operator_finds_lost_run_follows_retry_and_cancels_a_run(live_server, console_world):
    from playwright.sync_api import expect, sync_playwright

    lost, retry, running = console_world["lost"], console_world["retry"], console_world["running"]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(STEP_TIMEOUT_MS)

            page.goto(f"{live_server.url}{reverse('admin:login')}?next={reverse('admin:index')}")
            page.fill("#id_username", "root")
            page.fill("#id_password", "pw-root-123")
            page.click("input[type=submit]")
            page.click("text=What is stuck")
            expect(page.locator("h1")).to_have_text("What is stuck")

            lost_section = page.locator("#pc-lost")
            expect(lost_section).to_contain_text("child pid 4243")
            expect(lost_section).to_contain_text("succeeded")
            # The fragment refresh swaps in fresh data without a reload.
            expect(page.locator("#pc-refresh-status")).to_contain_text("updated", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            lost_section.locator(f"a.pc-lost-run:has-text('{str(lost.pk)[:8]}')").click()
            expect(page.locator("body")).to_contain_text("automatic retry")
            page.screenshot(path=str(ARTIFACTS / "run-lost.png"), full_page=True)

            page.locator(".field-retry_chain a", has_text=str(retry.pk)[:8]).click()
            assert page.url.endswith(
                reverse("admin:heartbeat_heartbeatrun_change", args=[retry.pk])
            )
            expect(page.locator(".field-status")).to_contain_text(re.compile("succeeded", re.I))

            page.goto(
                f"{live_server.url}{reverse('admin:heartbeat_heartbeatrun_changelist')}"
                "?status__exact=running"
            )
            page.check(f"input[name=_selected_action][value='{running.pk}']")
            page.select_option("select[name=action]", "cancel_runs")
            page.click("button[name=index]")
            expect(page.locator("ul.messagelist")).to_contain_text("Cancelled 1 run(s)")
            page.goto(f"{live_server.url}{reverse('admin:heartbeat_heartbeatrun_changelist')}")
            page.screenshot(path=str(ARTIFACTS / "run-list.png"), full_page=True)

            page.goto(
                live_server.url + reverse("admin:heartbeat_heartbeatrun_change", args=[running.pk])
            )
            expect(page.locator(".field-status")).to_contain_text(re.compile("cancelled", re.I))
            expect(page.locator(".field-diagnosis")).to_contain_text("Cancelled by board user")
            page.screenshot(path=str(ARTIFACTS / "run-cancelled.png"), full_page=True)
        finally:
            browser.close()

    running.refresh_from_db()
    assert running.status == HeartbeatRun.Status.CANCELLED
    assert running.error_code == "cancelled"
