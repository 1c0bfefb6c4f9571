"""Heartbeat tunables, read once from Django settings (`PAPERCLIP_HEARTBEAT = {...}`) or the
environment (`PAPERCLIP_<NAME>` in upper case), each default with where it came from."""

import os
from dataclasses import dataclass, fields

from django.conf import settings


@dataclass(frozen=True)
class HeartbeatConf:
    # Sweep interval of the reaper and the reconciler: the reference's 30 s heartbeat tick.
    sweep_interval_sec: int = 30
    # Periodic reap skips runs updated this recently (reference: 5 minutes); start-up uses 0.
    reap_stale_threshold_sec: int = 300
    # TERM, then KILL after this many seconds for leftover groups (reference 2 s, like
    # supervisord's stopwaitsecs but shorter because the run is already lost).
    terminate_grace_sec: float = 2.0
    # A worker renews its lease every 15 s; a lease not renewed for 90 s means the owner is gone
    # (six missed renewals, as Solid Queue's process heartbeat / alive threshold ratio).
    lease_renew_interval_sec: int = 15
    lease_expiry_sec: int = 90
    # One automatic process-loss retry per lineage (reference 3.1).
    process_loss_retry_limit: int = 1
    # A detached run with no reported activity for this long is terminated and ended as lost.
    detached_grace_sec: int = 1800
    # One stranded-issue recovery before escalation to blocked (reference 5).
    stranded_recovery_limit: int = 1
    # Queued runs older than this are re-dispatched by resume_queued_runs (a lost dispatch).
    resume_queued_after_sec: int = 10
    # A queued run handed to django-q2 holds a dispatch lease this long (kept in
    # lease_expires_at while queued): within it nobody hands the run out again, so a backlog of
    # tasks is never duplicated; a worker that cannot claim it (cap, paused agent) clears it.
    # Longer than a busy cluster's backlog; a dispatch lost outright is redone after it.
    dispatch_lease_sec: int = 120
    # Rows handled per transaction by the sweeps: bounds memory and lock time.
    sweep_batch_size: int = 500
    # Sweep records (health endpoint, dashboard) older than this are pruned: a week of history,
    # about 40,000 rows at the 30 s interval, enough to see when sweeps stopped or slowed down.
    sweep_record_retention_sec: int = 7 * 24 * 3600
    # Default adapter timeout (0 = none) and TERM grace for a run's process (reference adapters).
    adapter_timeout_sec: int = 0
    adapter_grace_sec: float = 15.0
    # Longest stdout/stderr chunk kept in one log line, and the excerpt kept on the run (32 KiB).
    log_chunk_max_bytes: int = 64 * 1024
    excerpt_max_bytes: int = 32 * 1024
    # After the run's process exits, how long its output may keep flowing (descendants holding
    # the pipes) before the rest of the tree is terminated so the run can finish.
    output_drain_sec: float = 2.0
    # Runs executing at once on one host (every agent, every adapter). Each costs a run shim
    # (about 6 MB) beside the agent itself; the reference has no such cap, django-q2 capped us
    # at its worker count (4) before runs moved under shims.
    host_max_concurrent_runs: int = 64
    # The run supervisor's loop: how often it reads its host's runs from the database, so a
    # cancel written on any host stops the run within this plus the agent's TERM grace (the
    # reference polls its in-process kill at 100 ms; we need one cheap query per tick).
    supervisor_poll_interval_sec: float = 0.5
    # How often the supervisor records the size and excerpts of growing run logs.
    log_follow_interval_sec: float = 2.0
    # How often the supervisor scans the process table for run shims whose runs already ended
    # in the database without it watching them (fencing); it also scans at start. A scan costs
    # about 20 us of CPU per process on the host.
    fence_scan_interval_sec: int = 5
    # Longest wait of the database retry backoff of the supervisor (it never kills an agent
    # because the database is away: it retries and the run waits to be finalized).
    supervisor_db_retry_max_sec: float = 5.0
    # How long a launch waits for the run shim to report the agent started.
    shim_start_timeout_sec: float = 10.0
    # A cluster whose queue head has not moved for this long is stuck (heartbeat/cluster_watch.py
    # says how that happens) and exits, for `start` to restart it: four sweep intervals, so a
    # backlog that merely moves slowly is never taken for it. /api/health and the dashboard call
    # the cluster down once a task or a schedule waits this long (selectors.cluster_health).
    cluster_stuck_after_sec: int = 120
    # Where run logs are written; empty means PAPERCLIP_HOME/run-logs (the reference's
    # RUN_LOG_BASE_PATH override, so tests and operators can put logs elsewhere).
    run_log_dir: str = ""
    # Request timeout of the http adapter when its config sets none (reference http adapter: 15 s).
    http_adapter_timeout_sec: float = 15.0


def heartbeat_conf() -> HeartbeatConf:
    """The tunables in force; cheap enough to call per use, so `override_settings` just works."""
    overrides = getattr(settings, "PAPERCLIP_HEARTBEAT", None) or {}
    values = {}
    for field in fields(HeartbeatConf):
        kind = type(field.default)
        raw = overrides.get(field.name, os.environ.get(f"PAPERCLIP_{field.name.upper()}"))
        if raw not in (None, ""):
            values[field.name] = kind(raw)
    return HeartbeatConf(**values)
