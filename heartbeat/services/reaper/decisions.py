"""The reaper's decisions, pure: what an orphaned run's probes mean, and the words that say so."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from heartbeat.process_control import Liveness
from heartbeat.services.lifecycle import run_retry_context

PROCESS_LOST_RETRY_REASON = "process_lost"
PROCESS_LOST_WAKE_REASON = "process_lost_retry"


class ReapVerdict(StrEnum):
    DETACHED = "detached"  # first sight of a live process without its owner: mark, keep running
    WATCHED = "watched"  # already detached, still alive, within its grace: nothing to write
    LOST = "lost"


class LossCause(StrEnum):
    PROCESS_DEAD = "process_dead"
    PROCESS_ZOMBIE = "process_zombie"
    PID_REUSED = "pid_reused"
    HOST_REBOOTED = "host_rebooted"
    LEASE_EXPIRED = "lease_expired"  # another host's run: judged by its lease alone
    NO_PROCESS = "no_process"  # no pid or group was ever recorded
    MONITOR_DIED = "monitor_died"  # the run shim died without reporting how the agent ended
    DETACHED_EXITED = "detached_exited"
    DETACHED_SILENT = "detached_silent"


_CAUSE_OF_LIVENESS = {
    Liveness.DEAD: LossCause.PROCESS_DEAD,
    Liveness.ZOMBIE: LossCause.PROCESS_ZOMBIE,
    Liveness.REUSED: LossCause.PID_REUSED,
    Liveness.REBOOTED: LossCause.HOST_REBOOTED,
    Liveness.OTHER_HOST: LossCause.LEASE_EXPIRED,
}


@dataclass(frozen=True)
class ReapDecision:
    verdict: ReapVerdict
    cause: LossCause | None = None
    # Signal leftovers after commit (only processes whose identity or run marker still match).
    terminate: bool = False
    retry: bool = False


def reap_decide(
    *,
    liveness: Liveness | None,
    leftovers: bool,
    detached_at: datetime | None,
    has_process_record: bool,
    retries_used: int,
    retry_limit: int,
    issue_closed: bool,
    now: datetime,
    detached_grace_sec: float,
    monitor_died: bool = False,
) -> ReapDecision:
    """Judge one orphaned running run.

    liveness is the probe of the run's recorded process (None when none was recorded), or
    ALIVE when its run shim lives; leftovers says whether live processes still carry the run's
    marker on this host; monitor_died that its shim died without an exit report.
    """
    if liveness is Liveness.ALIVE:
        if detached_at is None:
            return ReapDecision(ReapVerdict.DETACHED)
        if (now - detached_at).total_seconds() < detached_grace_sec:
            return ReapDecision(ReapVerdict.WATCHED)
        cause = LossCause.DETACHED_SILENT
        terminate = True
    else:
        cause = LossCause.NO_PROCESS if liveness is None else _CAUSE_OF_LIVENESS[liveness]
        if detached_at is not None and liveness in (Liveness.DEAD, Liveness.ZOMBIE):
            cause = LossCause.DETACHED_EXITED
        elif monitor_died and liveness in (Liveness.DEAD, Liveness.ZOMBIE):
            cause = LossCause.MONITOR_DIED
        # After a reboot or on another host a matching pid or group is not the run's: hands off.
        terminate = leftovers and liveness not in (Liveness.REBOOTED, Liveness.OTHER_HOST)
    retry = has_process_record and retries_used < retry_limit and not issue_closed
    return ReapDecision(ReapVerdict.LOST, cause=cause, terminate=terminate, retry=retry)


def reap_message(
    decision: ReapDecision,
    *,
    pid: int | None,
    pgid: int | None,
    owner_host: str | None,
    detached_grace_sec: float,
    shim_pid: int | None = None,
    monitor_alive: bool = False,
    lease_renewed_at: datetime | None = None,
) -> str:
    """The run's error text for a decision (the reference's wording where it had one)."""
    if decision.verdict is not ReapVerdict.LOST:
        return _watching_message(
            pid=pid,
            owner_host=owner_host,
            grace=_duration(detached_grace_sec),
            shim_pid=shim_pid,
            monitor_alive=monitor_alive,
        )
    if decision.cause is LossCause.DETACHED_SILENT:
        base = (
            f"Process lost -- detached child pid {pid} reported no activity for "
            f"{_duration(detached_grace_sec)} and was terminated"
        )
    elif decision.terminate:
        base = _terminated_message(pid=pid, pgid=pgid)
    else:
        base = _lost_message(
            decision.cause,
            pid=pid,
            pgid=pgid,
            owner_host=owner_host,
            shim_pid=shim_pid,
            lease_renewed_at=lease_renewed_at,
        )
    return base + ("; retrying once" if decision.retry else "")


def _watching_message(
    *,
    pid: int | None,
    owner_host: str | None,
    grace: str,
    shim_pid: int | None,
    monitor_alive: bool,
) -> str:
    """A live run nobody watches: under its monitor, behind a dead monitor, or (no shim) left
    by its worker."""
    if monitor_alive:
        return (
            f"No run supervisor watches this run on host {owner_host or 'unknown'} (its "
            f"last owner is gone); the agent keeps running under its monitor (shim pid "
            f"{shim_pid}) and the next supervisor there adopts it; without one it is "
            f"terminated after {grace} without reported activity"
        )
    if shim_pid is not None:
        return (
            f"The run's monitor (shim pid {shim_pid}) died, but child pid {pid} is still "
            f"alive and its output is no longer recorded; watching it until it exits, "
            f"terminating it after {grace} without reported activity"
        )
    return (
        f"Lost in-memory process handle, but child pid {pid} is still alive "
        f"(its worker is gone); watching it until it exits, terminating it after "
        f"{grace} without reported activity"
    )


def _terminated_message(*, pid: int | None, pgid: int | None) -> str:
    shown_pid = pid if pid is not None else "unknown"
    if pgid is not None:
        return (
            f"Process lost -- parent pid {shown_pid} exited, but descendant process group "
            f"{pgid} was still alive and was terminated"
        )
    return (
        f"Process lost -- child pid {shown_pid} exited, but descendant processes of the run "
        "were still alive and were terminated"
    )


def _lost_message(
    cause: LossCause | None,
    *,
    pid: int | None,
    pgid: int | None,
    owner_host: str | None,
    shim_pid: int | None,
    lease_renewed_at: datetime | None,
) -> str:
    """Why a run with no live process left is lost, as precisely as its probe tells."""
    if cause is LossCause.DETACHED_EXITED:
        return f"Process lost -- detached child pid {pid} exited; its exit status cannot be known"
    if cause is LossCause.MONITOR_DIED:
        shown_pid = pid if pid is not None else "unknown"
        return (
            f"Process lost -- the run's monitor (shim pid {shim_pid}) died without recording "
            f"how the agent ended, and child pid {shown_pid} is no longer running"
        )
    if cause is LossCause.LEASE_EXPIRED:
        renewed = (
            f" (last renewed {lease_renewed_at:%Y-%m-%d %H:%M:%S} UTC)" if lease_renewed_at else ""
        )
        return (
            f"Process lost -- the run supervisor on host {owner_host or 'unknown'} stopped "
            f"renewing the run's lease{renewed}; its processes were not signalled from this "
            "host, and its host's supervisor terminates them when it is back"
        )
    if pid is not None:
        return f"Process lost -- child pid {pid} is no longer running" + _PID_LOSS_DETAIL.get(
            cause, ""
        )
    if pgid is not None:
        return f"Process lost -- process group {pgid} is no longer running"
    return "Process lost -- server may have restarted"


_PID_LOSS_DETAIL = {
    LossCause.PROCESS_ZOMBIE: " (it exited and was left a zombie)",
    LossCause.PID_REUSED: " (the pid now belongs to another process)",
    LossCause.HOST_REBOOTED: " (the host rebooted since it started)",
}


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} seconds"


def retry_context(context: dict | None, *, lost_run_id: uuid.UUID) -> dict:
    """The process-loss retry's context: the lost run's, woken as process_lost_retry."""
    return run_retry_context(
        context,
        retry_of_run_id=lost_run_id,
        retry_reason=PROCESS_LOST_RETRY_REASON,
        wakeReason=PROCESS_LOST_WAKE_REASON,
    )
