"""reap_orphaned_runs: fail runs whose owner is gone, watch detached processes, retry once.

A running run is orphaned when its owner (its host's run supervisor, or the worker that launched
it) is gone: its lease expired, or on this host and boot the owner process no longer exists with
its recorded start time, or no owner was ever recorded. For an orphan on this host its run shim
decides first: alive means the run goes on (its host's supervisor adopts it; with none running,
it is detached: watched, never killed on first sight); dead with an exit report means the agent
ended while nobody watched, and the run is finalized from the report; dead without one means the
agent's own process decides: alive is detached, anything else lost. Orphans of other hosts are
judged by their lease alone and never signalled.

The work is batched: candidates are locked FOR UPDATE SKIP LOCKED a batch at a time, and each
batch is written with a fixed number of statements, whatever its size.

The modules: decisions (pure), candidates (what the reaper reads), writer (the batch writer,
the one implementation of the lost-run rule), sweep (the driver, on the skeleton it shares with
the reconciler in sweeps).
"""

from heartbeat.services.reaper.candidates import runs_reap_candidates, runs_with_dead_local_owner
from heartbeat.services.reaper.decisions import (
    PROCESS_LOST_RETRY_REASON,
    PROCESS_LOST_WAKE_REASON,
    LossCause,
    ReapDecision,
    ReapVerdict,
    reap_decide,
    reap_message,
    retry_context,
)
from heartbeat.services.reaper.sweep import ReapResult, reap_orphaned_runs

__all__ = [
    "PROCESS_LOST_RETRY_REASON",
    "PROCESS_LOST_WAKE_REASON",
    "LossCause",
    "ReapDecision",
    "ReapResult",
    "ReapVerdict",
    "reap_decide",
    "reap_message",
    "reap_orphaned_runs",
    "retry_context",
    "runs_reap_candidates",
    "runs_with_dead_local_owner",
]
