"""The heartbeat services: every state change of agents, wakes and runs.

Callers (API, admin, commands, django-q2 tasks) import from here, never from the submodules.
"""

from heartbeat.services.events import run_event_append
from heartbeat.services.lifecycle import (
    agent_finalize_status,
    agent_name_key,
    agent_start_next_queued,
    heartbeat_policy_max_concurrent_runs,
    issue_release_and_promote,
    run_create_queued,
    run_dispatch_on_commit,
    runs_of_issue,
    runtime_state_record,
    wakeups_of_issue,
)
from heartbeat.services.reaper import ReapResult, reap_orphaned_runs
from heartbeat.services.sweeps import LatestSweep, sweeps_latest

__all__ = [
    "LatestSweep",
    "ReapResult",
    "agent_finalize_status",
    "agent_name_key",
    "agent_start_next_queued",
    "heartbeat_policy_max_concurrent_runs",
    "issue_release_and_promote",
    "reap_orphaned_runs",
    "run_create_queued",
    "run_dispatch_on_commit",
    "run_event_append",
    "runs_of_issue",
    "runtime_state_record",
    "sweeps_latest",
    "wakeups_of_issue",
]
