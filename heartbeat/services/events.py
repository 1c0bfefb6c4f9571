"""Run events: the audit trail of a run, numbered without gaps per run."""

from __future__ import annotations

import uuid

from django.db import connection, transaction

from heartbeat.models import HeartbeatRun, HeartbeatRunEvent
from heartbeat.shim.run_shim import redact_document, redact_text

_NEXT_SEQ_SQL = (
    f"UPDATE {HeartbeatRun._meta.db_table} SET event_seq = event_seq + 1 "
    "WHERE id = %s RETURNING event_seq"
)


def run_event_append(
    *,
    run_id: uuid.UUID | str,
    company_id: uuid.UUID | str,
    agent_id: uuid.UUID | str,
    event_type: str,
    message: str,
    level: str = HeartbeatRunEvent.Level.INFO,
    payload: dict | None = None,
    stream: str = "system",
) -> HeartbeatRunEvent:
    """Append one event to a run in the caller's transaction.

    The sequence number comes from the run row's counter (UPDATE ... RETURNING): the row lock
    serialises concurrent writers and a rolled-back event rolls its number back, so numbers are
    unique and gapless, unlike the reference's read-max-then-insert. No savepoint of its own:
    a failure here fails the caller's transaction, which is what a lost audit event should do.

    Every agent of the company may read a run's events: credential-shaped text in the message
    or the payload (an error quoting a command line, say) is redacted on the way in.
    """
    with transaction.atomic(savepoint=False):
        with connection.cursor() as cursor:
            cursor.execute(_NEXT_SEQ_SQL, [str(run_id)])
            row = cursor.fetchone()
        if row is None:
            raise HeartbeatRun.DoesNotExist(f"heartbeat run {run_id} not found")
        return HeartbeatRunEvent.objects.create(
            run_id=run_id,
            company_id=company_id,
            agent_id=agent_id,
            seq=row[0],
            event_type=event_type,
            stream=stream,
            level=level,
            message=redact_text(message),
            payload=redact_document(payload),
        )
