"""CLI sessions per task: which session a run resumes, what a finished run leaves for the next
one, and resets by the board (reference 1.11 agent_task_sessions, 2.2 step 3, 7).

A coding CLI keeps its conversation in a session; resuming it spares the agent re-reading its
task from nothing on every heartbeat. Sessions are kept per agent and task: the next run of the
agent on the same task (the issue it works on) resumes the task's session, a run on another task
starts a session of its own, unless the agent's runtime_config says `"sessionScope": "agent"`
(one session for all its work).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from heartbeat.adapters import adapter_resumes_sessions
from heartbeat.models import Agent, AgentRuntimeState, AgentTaskSession, HeartbeatRun
from paperclip.services import activity_log_record

# The task key of runs without one (timer and other task-less wakes share this session), as the
# reference names it.
TASK_KEY_NONE = "__heartbeat__"
# Wake reasons that start a fresh session though the task has one: a new assignment starts the
# work over. (The reference also reset on timer and manual wakes; its own measurements showed
# that only threw reusable sessions away, and later versions resume them.)
_FRESH_SESSION_WAKE_REASONS = frozenset({"issue_assigned"})


class SessionScope(StrEnum):
    TASK = "task"
    AGENT = "agent"


def session_scope(runtime_config: Mapping[str, Any] | None) -> SessionScope:
    """`runtime_config.sessionScope`: "task" (the default) or "agent"."""
    value = (runtime_config or {}).get("sessionScope")
    return SessionScope.AGENT if value == SessionScope.AGENT else SessionScope.TASK


def run_task_key(context: Mapping[str, Any] | None) -> str:
    """The task a run works on, as its sessions are keyed: taskKey, taskId or issueId."""
    for key in ("taskKey", "taskId", "issueId"):
        value = (context or {}).get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return TASK_KEY_NONE


def run_session_to_resume(*, agent: Agent, context: Mapping[str, Any] | None) -> str | None:
    """The session a run of this agent resumes, or None to start a fresh one. Decided when the
    run is claimed, so it follows the run before it on the task, whenever that one ended."""
    context = context or {}
    if not adapter_resumes_sessions(agent.adapter_type):
        return None
    if context.get("forceFreshSession") is True:
        return None
    if context.get("wakeReason") in _FRESH_SESSION_WAKE_REASONS:
        return None
    if session_scope(agent.runtime_config) == SessionScope.AGENT:
        return (
            AgentRuntimeState.objects.filter(pk=agent.pk, adapter_type=agent.adapter_type)
            .values_list("session_id", flat=True)
            .first()
        )
    return (
        AgentTaskSession.objects.filter(
            agent_id=agent.pk, adapter_type=agent.adapter_type, task_key=run_task_key(context)
        )
        .values_list("session_id", flat=True)
        .first()
    )


_TASK_SESSION_UPSERT = f"""
INSERT INTO {AgentTaskSession._meta.db_table} AS s (
    id, company_id, agent_id, adapter_type, task_key, session_id, last_run_id, created_at,
    updated_at)
VALUES (%(id)s, %(company_id)s, %(agent_id)s, %(adapter_type)s, %(task_key)s, %(session_id)s,
    %(run_id)s, %(now)s, %(now)s)
ON CONFLICT (agent_id, adapter_type, task_key) DO UPDATE SET
    session_id = EXCLUDED.session_id,
    last_run_id = EXCLUDED.last_run_id,
    updated_at = EXCLUDED.updated_at
"""


def run_session_record(
    *, run: HeartbeatRun, adapter_type: str, session_id: str | None, now: datetime
) -> None:
    """After a run: its task's session is the one it ended in (one upsert, so two runs of one
    task finishing together cannot race on the insert)."""
    if not session_id:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _TASK_SESSION_UPSERT,
            {
                "id": uuid.uuid4(),
                "company_id": run.company_id,
                "agent_id": run.agent_id,
                "adapter_type": adapter_type,
                "task_key": run_task_key(run.context_snapshot),
                "session_id": session_id,
                "run_id": run.id,
                "now": now,
            },
        )


def agent_session_forget(*, agent_id: uuid.UUID | str, session_id: str) -> int:
    """A session the CLI no longer has is resumed by no later run: removed from every task that
    named it and from the agent's runtime state. Returns how many tasks named it."""
    forgotten, _ = AgentTaskSession.objects.filter(
        agent_id=agent_id, session_id=session_id
    ).delete()
    AgentRuntimeState.objects.filter(pk=agent_id, session_id=session_id).update(session_id=None)
    return forgotten


@dataclass(frozen=True)
class SessionReset:
    state: AgentRuntimeState | None
    sessions_cleared: int


def agent_session_reset(
    *,
    agent_id: uuid.UUID | str,
    task_key: str | None = None,
    actor_type: str = "system",
    actor_id: str = "system",
) -> SessionReset:
    """The board's reset: the task's session (task_key), or every session of the agent, is
    dropped, so the next run starts fresh (reference POST .../runtime-state/reset-session)."""
    with transaction.atomic():
        agent = Agent.objects.select_for_update(no_key=True).get(pk=agent_id)
        sessions = AgentTaskSession.objects.filter(agent=agent)
        if task_key is not None:
            sessions = sessions.filter(task_key=task_key)
        else:
            AgentRuntimeState.objects.filter(pk=agent.pk).update(
                session_id=None, updated_at=timezone.now()
            )
        cleared, _ = sessions.delete()
        activity_log_record(
            company_id=agent.company_id,
            action="agent.runtime_session_reset",
            entity_type="agent",
            entity_id=agent.id,
            actor_type=actor_type,
            actor_id=actor_id,
            agent_id=agent.id,
            details={"taskKey": task_key, "sessionsCleared": cleared},
        )
    return SessionReset(
        state=AgentRuntimeState.objects.filter(pk=agent.pk).first(), sessions_cleared=cleared
    )
