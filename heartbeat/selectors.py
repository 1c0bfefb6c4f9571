"""Read-only questions the operator console asks: each answers in a fixed number of queries,
whatever the number of rows, so the admin and the dashboard stay fast on big tables."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q

from heartbeat.conf import heartbeat_conf
from heartbeat.models import HeartbeatRun, RunErrorCode, RunStatus
from heartbeat.process_control import Liveness, ProcessIdentity, probe
from issues.models import Issue

# The log tail reads at most this much from the end of a log: enough for the last lines of any
# sane run, and bounded so a multi-gigabyte log costs the same as a small one.
LOG_TAIL_MAX_BYTES = 256 * 1024
_LOG_TAIL_BLOCK = 16 * 1024


def issues_by_id(issue_ids: Iterable[str | uuid.UUID | None]) -> dict[str, Issue]:
    """Issues keyed by their id as text (the form runs keep in context_snapshot.issueId)."""
    valid = set()
    for value in issue_ids:
        try:
            valid.add(uuid.UUID(str(value)))
        except ValueError:
            continue
    if not valid:
        return {}
    return {str(issue.pk): issue for issue in Issue.objects.filter(pk__in=valid)}


def run_owner_liveness(run: HeartbeatRun) -> Liveness | None:
    """Whether the worker that owns the run is alive; None when no owner was recorded.

    Other hosts answer OTHER_HOST: for them only the lease tells (never signalled from here).
    """
    if not run.owner_pid or run.owner_pid <= 0 or not run.owner_host:
        return None
    return probe(
        ProcessIdentity(
            pid=run.owner_pid,
            pgid=None,
            started_at=run.owner_started_at,
            host=run.owner_host,
            boot_id=run.owner_boot_id or "",
        )
    )


def run_process_liveness(run: HeartbeatRun) -> Liveness | None:
    """Whether the run's agent process is alive with its recorded identity; None if unrecorded."""
    if not run.process_pid or run.process_pid <= 0 or not run.process_host:
        return None
    return probe(
        ProcessIdentity(
            pid=run.process_pid,
            pgid=run.process_group_id,
            started_at=run.process_started_at,
            host=run.process_host,
            boot_id=run.process_boot_id or "",
        )
    )


def run_lease_remaining(run: HeartbeatRun, now: datetime) -> float | None:
    """Seconds until the owner's lease expires (negative once expired); None without a lease."""
    if run.lease_expires_at is None:
        return None
    return (run.lease_expires_at - now).total_seconds()


@dataclass(frozen=True)
class LogTail:
    lines: tuple[str, ...]
    # Whether older output exists before the first line shown.
    truncated: bool
    size: int
    note: str = ""


def run_log_path(run: HeartbeatRun) -> Path | None:
    """The run's log file, only if it lies inside PAPERCLIP_HOME/run-logs (never a path outside)."""
    if not run.log_ref:
        return None
    root = (Path(settings.PAPERCLIP_HOME) / "run-logs").resolve()
    candidate = Path(run.log_ref)
    if not candidate.is_absolute():
        candidate = root / candidate
    candidate = candidate.resolve()
    if not candidate.is_relative_to(root):
        return None
    return candidate


def run_log_tail(run: HeartbeatRun, *, max_lines: int = 80) -> LogTail:
    """The last lines of the run's NDJSON log, read backwards from the end of the file."""
    path = run_log_path(run)
    if path is None:
        return LogTail((), False, 0, "no log recorded" if not run.log_ref else "log outside home")
    if run.log_compressed:
        return LogTail((), False, run.log_bytes or 0, "log is compressed; no inline tail")
    try:
        lines, truncated, size = _tail_lines(path, max_lines)
    except FileNotFoundError:
        return LogTail((), False, 0, "log file not found on this host")
    except OSError as exc:
        return LogTail((), False, 0, f"log unreadable: {exc.strerror}")
    return LogTail(tuple(_render_log_line(line) for line in lines), truncated, size)


def _tail_lines(path: Path, max_lines: int) -> tuple[list[str], bool, int]:
    with open(path, "rb") as log:
        size = os.fstat(log.fileno()).st_size
        end = size
        data = b""
        # Read fixed blocks from the end until enough newlines are in hand or the cap is hit.
        while end > 0 and data.count(b"\n") <= max_lines and size - end < LOG_TAIL_MAX_BYTES:
            start = max(0, end - _LOG_TAIL_BLOCK)
            log.seek(start)
            data = log.read(end - start) + data
            end = start
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    # The first line is partial unless the read reached the start of the file.
    if end > 0 and lines:
        lines.pop(0)
    truncated = end > 0 or len(lines) > max_lines
    return [line.decode("utf-8", "replace") for line in lines[-max_lines:]], truncated, size


def _render_log_line(line: str) -> str:
    """One NDJSON record as `time stream text`; anything else is shown as it is."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    text = record.get("chunk", record.get("text", record.get("message")))
    if text is None:
        return line
    stamp = str(record.get("ts", record.get("time", "")))
    stream = str(record.get("stream", ""))
    return " ".join(part for part in (stamp, stream, str(text).rstrip("\n")) if part)


def stale_run_conditions(now: datetime) -> dict[str, Q]:
    """The console's definitions of a stale run, shared by the run filter and the dashboard.

    owner_gone is what the reaper acts on; silent and queued_long are warnings only (a quiet
    agent may be thinking, a queued run may wait behind its agent's concurrency cap).
    """
    conf = heartbeat_conf()
    threshold = now - timedelta(seconds=conf.reap_stale_threshold_sec)
    running = Q(status=RunStatus.RUNNING)
    return {
        "owner_gone": running & (Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)),
        "detached": running
        & (Q(detached_at__isnull=False) | Q(error_code=RunErrorCode.PROCESS_DETACHED)),
        "silent": running
        & (
            Q(last_activity_at__lt=threshold)
            | Q(last_activity_at__isnull=True, started_at__lt=threshold)
        ),
        "queued_long": Q(status=RunStatus.QUEUED, created_at__lt=threshold),
    }


def run_retry_chain(run: HeartbeatRun, *, max_hops: int = 10) -> list[HeartbeatRun]:
    """The run's lineage, oldest first: the runs it retries, itself, and the runs retrying it."""
    older: list[HeartbeatRun] = []
    parent_id = run.retry_of_run_id
    while parent_id and len(older) < max_hops:
        parent = HeartbeatRun.objects.filter(pk=parent_id).first()
        if parent is None:
            break
        older.append(parent)
        parent_id = parent.retry_of_run_id
    newer: list[HeartbeatRun] = []
    current = run
    while len(newer) < max_hops:
        child = HeartbeatRun.objects.filter(retry_of_run=current).first()
        if child is None:
            break
        newer.append(child)
        current = child
    return [*reversed(older), run, *newer]


def detached_grace_ends_at(run: HeartbeatRun) -> datetime | None:
    """When a detached run's silence grace runs out (it is then terminated); None if attached."""
    if run.detached_at is None:
        return None
    last_sign = max(filter(None, (run.detached_at, run.last_activity_at)))
    return last_sign + timedelta(seconds=heartbeat_conf().detached_grace_sec)


def run_diagnosis(run: HeartbeatRun, now: datetime) -> str:
    """One sentence for the board: what the run is doing and what the system will do next."""
    conf = heartbeat_conf()
    if run.status == RunStatus.QUEUED:
        if not run.agent.is_invokable:
            return (
                f"Queued, but agent {run.agent.name} is {run.agent.status}: "
                "it starts only after the agent is resumed."
            )
        return "Queued, waiting for a worker (or behind the agent's concurrency cap)."
    if run.status == RunStatus.RUNNING:
        grace_end = detached_grace_ends_at(run)
        if grace_end is not None or run.error_code == RunErrorCode.PROCESS_DETACHED:
            ends = f" at {grace_end:%Y-%m-%d %H:%M:%S} UTC" if grace_end else ""
            return (
                "Detached: its process is alive but its worker is gone. It is finalized when "
                "the process exits, and terminated and failed as process_lost if it reports no "
                f"activity before the grace ends{ends}."
            )
        remaining = run_lease_remaining(run, now)
        if remaining is None or remaining < 0:
            why = "no owner lease recorded" if remaining is None else "its owner's lease expired"
            return (
                f"Orphaned ({why}): the next reap sweep fails it as process_lost and queues one "
                "retry if its process is dead, or marks it detached if the process still lives."
            )
        return f"Running; its worker renews the lease (next expiry in {int(remaining)} s)."
    if run.status == RunStatus.SUCCEEDED:
        return "Succeeded."
    if run.status == RunStatus.CANCELLED:
        return f"Cancelled: {run.error or 'by the control plane'}."
    if run.error_code == RunErrorCode.PROCESS_LOST:
        retry = HeartbeatRun.objects.filter(retry_of_run=run).only("id", "status").first()
        if retry is not None:
            return f"Process lost; automatic retry {str(retry.pk)[:8]} is {retry.status}."
        return (
            "Process lost; no automatic retry (the lineage used its "
            f"{conf.process_loss_retry_limit} retry). If its issue stays assigned with no live "
            "run, the reconciler re-dispatches it once, then escalates it to blocked."
        )
    return (
        f"{run.status.capitalize()} ({run.error_code or 'no error code'}). Only process losses are "
        "retried automatically; an issue left assigned with no live run is re-dispatched once by "
        "the reconciler, then escalated to blocked."
    )


def sweep_summary(result: dict | None) -> str:
    """A sweep's counters as text ("reaped 2", "dispatch_requeued 1, escalated 1")."""
    counters = [
        f"{key} {value}"
        for key, value in (result or {}).items()
        if isinstance(value, int) and not isinstance(value, bool) and value
    ]
    return ", ".join(counters) or "nothing to do"
