"""Builders for recovery tests: running runs with a process and an owner identity."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from heartbeat import process_control
from heartbeat.models import Agent, AgentWakeupRequest, HeartbeatRun
from issues.models import Issue
from tests.factories import make_run, make_wakeup

DEAD_PID = 999_999_999


def make_running_run(
    agent: Agent,
    *,
    pid: int | None = DEAD_PID,
    pgid: int | None = None,
    process_started_at: datetime | None = None,
    process_host: str | None = None,
    owner: str = "none",
    owner_host: str | None = None,
    lease_expires_at: datetime | None = None,
    issue: Issue | None = None,
    lock_issue: bool = True,
    updated_ago: timedelta | None = None,
    **fields,
) -> HeartbeatRun:
    """A running run with a claimed wakeup.

    owner: "none" (never recorded), "dead" (a local worker pid that does not exist), or "self"
    (this test process, alive, with a fresh lease unless lease_expires_at says otherwise).
    """
    host = process_control.current_host()
    boot_id = process_control.current_boot_id()
    wakeup = make_wakeup(agent, status=AgentWakeupRequest.Status.CLAIMED)
    context = dict(fields.pop("context_snapshot", None) or {})
    if issue is not None:
        context.setdefault("issueId", str(issue.id))
    owner_fields = {}
    if owner != "none":
        me = process_control.self_identity()
        owner_fields = {
            "owner_host": owner_host or host,
            "owner_boot_id": boot_id,
            "owner_pid": me.pid if owner == "self" else DEAD_PID,
            "owner_started_at": me.started_at,
            "lease_expires_at": lease_expires_at or timezone.now() + timedelta(seconds=90),
        }
    elif owner_host is not None or lease_expires_at is not None:
        owner_fields = {"owner_host": owner_host, "lease_expires_at": lease_expires_at}
    run = make_run(
        agent,
        status=HeartbeatRun.Status.RUNNING,
        wakeup_request=wakeup,
        context_snapshot=context or None,
        process_pid=pid,
        process_group_id=pgid,
        process_started_at=process_started_at,
        process_host=process_host or (host if pid is not None or pgid is not None else None),
        process_boot_id=boot_id if pid is not None or pgid is not None else None,
        **owner_fields,
        **fields,
    )
    wakeup.run = run
    wakeup.save(update_fields=["run"])
    if issue is not None and lock_issue:
        Issue.objects.filter(pk=issue.pk).update(
            status=Issue.Status.IN_PROGRESS,
            assignee_agent=agent,
            checkout_run=run,
            execution_run=run,
            execution_agent_name_key=agent.name.lower(),
            execution_locked_at=timezone.now(),
        )
    if updated_ago is not None:
        HeartbeatRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - updated_ago)
    run.refresh_from_db()
    return run
