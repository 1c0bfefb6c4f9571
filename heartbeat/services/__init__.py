"""The heartbeat services: every state change of agents, wakes and runs.

Callers (API, admin, commands, django-q2 tasks) import from here, never from the submodules.
"""

from heartbeat.services.agents import (
    AgentError,
    AgentInvalidInput,
    AgentKeyCreated,
    AgentStateChange,
    AgentStateConflict,
    agent_create,
    agent_key_create,
    agent_key_revoke,
    agent_pause,
    agent_resume,
    agent_terminate,
    agent_update,
)
from heartbeat.services.claim import ClaimRefusal, ClaimResult, run_claim
from heartbeat.services.events import run_event_append
from heartbeat.services.execution import (
    ExecuteResult,
    RunOutcome,
    run_execute,
    run_finalize,
    run_finalize_from_report,
    run_outcome_from_report,
)
from heartbeat.services.lifecycle import (
    agent_finalize_status,
    agent_name_key,
    agent_start_next_queued,
    heartbeat_policy_max_concurrent_runs,
    issue_release_and_promote,
    run_create_queued,
    run_dispatch_on_commit,
    run_scope_lock,
    runs_of_issue,
    runtime_state_record,
    wakeups_of_issue,
)
from heartbeat.services.policy import HeartbeatPolicy, heartbeat_policy
from heartbeat.services.reaper import ReapResult, reap_orphaned_runs
from heartbeat.services.reconciler import ReconcileResult, reconcile_stranded_assigned_issues
from heartbeat.services.runs import (
    CANCELLED_BY_CONTROL_PLANE,
    ResumeResult,
    RunNotFound,
    cancel_run,
    get_run,
    host_start_parked_runs,
    report_run_activity,
    resume_queued_runs,
    run_process_identity,
    run_shim_identity,
)
from heartbeat.services.sweeps import LatestSweep, sweeps_latest
from heartbeat.services.timers import TimerTickResult, tick_timer_heartbeats
from heartbeat.services.wakeups import (
    AgentNotFound,
    AgentNotInvokable,
    WakeOutcome,
    WakeResult,
    wake_agent,
    wake_context_enrich,
)

__all__ = [
    "CANCELLED_BY_CONTROL_PLANE",
    "AgentError",
    "AgentInvalidInput",
    "AgentKeyCreated",
    "AgentNotFound",
    "AgentNotInvokable",
    "AgentStateChange",
    "AgentStateConflict",
    "ClaimRefusal",
    "ClaimResult",
    "ExecuteResult",
    "HeartbeatPolicy",
    "LatestSweep",
    "ReapResult",
    "ReconcileResult",
    "ResumeResult",
    "RunNotFound",
    "RunOutcome",
    "TimerTickResult",
    "WakeOutcome",
    "WakeResult",
    "agent_create",
    "agent_finalize_status",
    "agent_key_create",
    "agent_key_revoke",
    "agent_name_key",
    "agent_pause",
    "agent_resume",
    "agent_start_next_queued",
    "agent_terminate",
    "agent_update",
    "cancel_run",
    "get_run",
    "heartbeat_policy",
    "heartbeat_policy_max_concurrent_runs",
    "host_start_parked_runs",
    "issue_release_and_promote",
    "reap_orphaned_runs",
    "reconcile_stranded_assigned_issues",
    "report_run_activity",
    "resume_queued_runs",
    "run_claim",
    "run_create_queued",
    "run_dispatch_on_commit",
    "run_event_append",
    "run_execute",
    "run_finalize",
    "run_finalize_from_report",
    "run_outcome_from_report",
    "run_process_identity",
    "run_scope_lock",
    "run_shim_identity",
    "runs_of_issue",
    "runtime_state_record",
    "sweeps_latest",
    "tick_timer_heartbeats",
    "wake_agent",
    "wake_context_enrich",
    "wakeups_of_issue",
]
