"""What the sweeps write a batch at a time (run events, activity rows) is redacted exactly as the
single writers (run_event_append, activity_log_record) redact one row: the reaper, the
reconciler and the run supervisor write through the batch writers."""

from __future__ import annotations

import pytest
from django.utils import timezone

from heartbeat.models import HeartbeatRunEvent
from heartbeat.run_log import REDACTED
from heartbeat.services.events import run_event_append
from heartbeat.services.sweeps import EventRow, run_events_insert
from paperclip.models import ActivityLog
from paperclip.services import ActivityRow, activity_log_record, activity_log_record_many
from tests.factories import make_agent, make_run

pytestmark = pytest.mark.django_db

GITHUB_TOKEN = "ghp_" + "Q7w8E9r0T1" * 4
MESSAGE = f"Process lost -- git push https://x:{GITHUB_TOKEN}@host failed"
PAYLOAD = {"argv": ["tool", "--token", GITHUB_TOKEN], "processPid": 42}
DETAILS = {"error": MESSAGE, "apiKey": "plain-value", "nested": [{"note": "sk-" + "a" * 30}]}


def test_batch_run_event_is_redacted_as_a_single_event_is():
    agent = make_agent()
    single_run, batch_run = make_run(agent), make_run(agent)
    single = run_event_append(
        run_id=single_run.id,
        company_id=agent.company_id,
        agent_id=agent.id,
        event_type=HeartbeatRunEvent.EventType.LIFECYCLE,
        message=MESSAGE,
        payload=PAYLOAD,
    )

    run_events_insert(
        [
            EventRow(
                run_id=batch_run.id,
                company_id=agent.company_id,
                agent_id=agent.id,
                seq=1,
                level=HeartbeatRunEvent.Level.INFO,
                message=MESSAGE,
                payload=PAYLOAD,
            )
        ],
        now=timezone.now(),
    )

    single.refresh_from_db()
    batch = HeartbeatRunEvent.objects.get(run=batch_run)
    assert (batch.message, batch.payload) == (single.message, single.payload)
    assert GITHUB_TOKEN not in batch.message
    assert batch.payload == {"argv": ["tool", "--token", REDACTED], "processPid": 42}


def test_batch_activity_row_is_redacted_as_a_single_row_is():
    agent = make_agent()
    single = activity_log_record(
        company_id=agent.company_id,
        action="heartbeat.single",
        entity_type="heartbeat_run",
        entity_id=agent.id,
        details=DETAILS,
    )

    activity_log_record_many(
        rows=[
            ActivityRow(
                company_id=agent.company_id,
                action="heartbeat.batch",
                entity_type="heartbeat_run",
                entity_id=agent.id,
                agent_id=agent.id,
                run_id=None,
                details=DETAILS,
            )
        ],
        now=timezone.now(),
    )

    single.refresh_from_db()
    batch = ActivityLog.objects.get(action="heartbeat.batch")
    assert batch.details == single.details
    assert batch.details["apiKey"] == "***REDACTED***"
    assert GITHUB_TOKEN not in batch.details["error"]
    assert batch.details["nested"] == [{"note": REDACTED}]
