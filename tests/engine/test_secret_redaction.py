"""A run's secrets (every env value its adapter config sets, its credential, and text shaped
like a credential) stay out of everything another agent of the company can read: the run log,
the excerpts, the run's events and the activity log."""

from __future__ import annotations

import sys

import pytest

from heartbeat.models import HeartbeatRunEvent
from heartbeat.run_log import REDACTED, run_log_path
from heartbeat.services import run_execute, wake_agent
from heartbeat.services.events import run_event_append
from paperclip.models import ActivityLog
from paperclip.services import activity_log_record
from tests.factories import make_agent, make_run

GITHUB_TOKEN = "ghp_" + "Q7w8E9r0T1" * 4
PRINT_SECRETS = (
    "import os\n"
    "print('key', os.environ['OPENAI_KEY'])\n"
    "print('cred', os.environ['PAPERCLIP_API_KEY'])\n"
    f"print('found {GITHUB_TOKEN} in a file')\n"
)


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_run_log_excerpt_and_events_redact_env_values_credential_and_patterns(
    run_logs, dispatched, supervisor
):
    agent = make_agent(
        adapter_type="process",
        adapter_config={
            "command": sys.executable,
            "args": ["-c", PRINT_SECRETS, "--key=innocent-looking-1"],
            "env": {"OPENAI_KEY": "innocent-looking-1"},
        },
    )
    run = wake_agent(agent_id=agent.id, reason="manual").run

    run_execute(run_id=run.id)
    supervisor.settle(run.id)

    run.refresh_from_db()
    assert run.status == "succeeded"
    log = run_log_path(run.log_ref).read_text()
    events = " ".join(
        f"{event.message} {event.payload}" for event in HeartbeatRunEvent.objects.filter(run=run)
    )
    for readable in (log, run.stdout_excerpt, events):
        assert "innocent-looking-1" not in readable
        assert "pcr_" not in readable
        assert GITHUB_TOKEN not in readable
    assert run.stdout_excerpt == f"key {REDACTED}\ncred {REDACTED}\nfound {REDACTED} in a file\n"


@pytest.mark.django_db
def test_run_event_redacts_credential_shaped_text_in_message_and_payload():
    run = make_run(make_agent())
    event = run_event_append(
        run_id=run.id,
        company_id=run.company_id,
        agent_id=run.agent_id,
        event_type="error",
        message=f"spawn failed: git push https://x:{GITHUB_TOKEN}@host",
        payload={"argv": ["tool", "--token", GITHUB_TOKEN]},
    )
    event.refresh_from_db()
    assert GITHUB_TOKEN not in event.message
    assert event.payload == {"argv": ["tool", "--token", REDACTED]}


@pytest.mark.django_db
def test_activity_details_redact_credential_shaped_text():
    agent = make_agent()
    activity_log_record(
        company_id=agent.company_id,
        action="issue.created",
        entity_type="issue",
        entity_id=agent.id,
        details={"title": f"rotate {GITHUB_TOKEN}", "nested": [{"note": "sk-" + "a" * 30}]},
    )
    details = ActivityLog.objects.get(action="issue.created").details
    assert details == {"title": f"rotate {REDACTED}", "nested": [{"note": REDACTED}]}
