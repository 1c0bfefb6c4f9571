"""Execution: the worker side of a run, from claim to finalize (reference 2.4).

`run_execute` is what the django-q2 task calls. It claims the run (a run that is not queued is
left alone, so a twice-delivered task is harmless), invokes the adapter, supervises the process
(identity recorded before anything else, lease renewed, status polled so a cancel written
anywhere stops the tree, timeout enforced), streams the output to the run log, and finalizes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from functools import partial
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from heartbeat import process_control
from heartbeat.adapters import (
    AdapterError,
    HttpInvocation,
    ProcessInvocation,
    RunInvocationContext,
    adapter_invocation,
    http_invoke,
)
from heartbeat.conf import HeartbeatConf, heartbeat_conf
from heartbeat.models import (
    Agent,
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunErrorCode,
    RunStatus,
    WakeupStatus,
)
from heartbeat.run_log import RunLogSummary, RunLogWriter, run_log_path
from heartbeat.services.claim import ClaimRefusal, run_claim
from heartbeat.services.events import run_event_append
from heartbeat.services.lifecycle import (
    agent_finalize_status,
    agent_start_next_queued,
    issue_release_and_promote,
    run_scope_lock,
    runtime_state_record,
)
from paperclip.credentials import run_credential_issue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    """How the run ended, as the worker saw it."""

    status: str
    error: str | None = None
    error_code: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    result_json: dict | None = None
    log: RunLogSummary | None = None


@dataclass(frozen=True)
class ExecuteResult:
    run_id: str
    executed: bool
    # The run's final status when executed, else why the run was left alone.
    status: str


class _Stop(StrEnum):
    """Why the worker stopped waiting before the process exited."""

    TIMEOUT = "timeout"
    ENDED_ELSEWHERE = "ended_elsewhere"


def run_execute(*, run_id: uuid.UUID | str) -> ExecuteResult:
    """Claim and execute one run to its end; a run that cannot be claimed is left as it is."""
    claim = run_claim(run_id=run_id)
    if not claim.claimed:
        assert claim.refusal is not None  # not claimed always carries a refusal
        if claim.refusal is ClaimRefusal.AT_CAPACITY:
            logger.debug("run %s stays queued: agent at its concurrency cap", run_id)
        return ExecuteResult(run_id=str(run_id), executed=False, status=claim.refusal.value)
    run, agent = claim.run, claim.agent
    assert run is not None and agent is not None  # a successful claim returns both
    try:
        outcome = _run_invoke(run, agent)
    except Exception as exc:
        # A bug or an outage mid-run must still end the run, never leave it running forever.
        logger.exception("run %s failed inside the engine", run.id)
        outcome = RunOutcome(
            status=RunStatus.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            error_code=RunErrorCode.ADAPTER_FAILED,
        )
    status = run_finalize(run=run, outcome=outcome)
    return ExecuteResult(run_id=str(run.id), executed=True, status=status)


def _invocation_context(run: HeartbeatRun, agent: Agent) -> RunInvocationContext:
    context = dict(run.context_snapshot or {})
    api_key = run_credential_issue(
        run_id=str(run.id), agent_id=str(agent.id), company_id=str(agent.company_id)
    )
    agent_env = {
        "PAPERCLIP_API_URL": settings.PAPERCLIP_API_URL,
        "PAPERCLIP_API_KEY": api_key,
        "PAPERCLIP_RUN_ID": str(run.id),
        "PAPERCLIP_AGENT_ID": str(agent.id),
        "PAPERCLIP_COMPANY_ID": str(agent.company_id),
    }
    optional = {
        "PAPERCLIP_TASK_ID": context.get("taskId") or context.get("issueId"),
        "PAPERCLIP_WAKE_REASON": context.get("wakeReason"),
        "PAPERCLIP_WAKE_COMMENT_ID": context.get("wakeCommentId") or context.get("commentId"),
    }
    agent_env.update({name: str(value) for name, value in optional.items() if value})
    return RunInvocationContext(
        run_id=str(run.id),
        agent_id=str(agent.id),
        agent_name=agent.name,
        agent_role=agent.role,
        company_id=str(agent.company_id),
        adapter_type=agent.adapter_type,
        adapter_config=agent.adapter_config,
        context=context,
        session_id_before=run.session_id_before,
        agent_env=agent_env,
        api_key=api_key,
    )


def _event(run: HeartbeatRun, event_type: str, message: str, **fields) -> None:
    run_event_append(
        run_id=run.id,
        company_id=run.company_id,
        agent_id=run.agent_id,
        event_type=event_type,
        message=message,
        **fields,
    )


def _run_invoke(run: HeartbeatRun, agent: Agent) -> RunOutcome:
    ctx = _invocation_context(run, agent)
    try:
        invocation = adapter_invocation(ctx)
    except AdapterError as exc:
        return RunOutcome(status=RunStatus.FAILED, error=str(exc), error_code=exc.error_code)
    conf = heartbeat_conf()
    assert run.log_ref is not None  # set by the claim
    writer = RunLogWriter(
        path=run_log_path(run.log_ref),
        secrets=invocation.secret_values,
        chunk_max_chars=conf.log_chunk_max_bytes,
        excerpt_max_chars=conf.excerpt_max_bytes,
    )
    try:
        if isinstance(invocation, HttpInvocation):
            _adapter_invoked(run, invocation.meta)
            outcome = _http_run(invocation, writer)
        else:
            outcome = _process_run(run, invocation, writer, conf)
    finally:
        summary = writer.close()
    return replace(outcome, log=summary)


def _adapter_invoked(run: HeartbeatRun, meta: Mapping[str, Any], **facts: Any) -> None:
    payload = {**meta, **facts}
    _event(run, HeartbeatRunEvent.EventType.ADAPTER_INVOKE, "adapter invoked", payload=payload)


def _http_run(invocation: HttpInvocation, writer: RunLogWriter) -> RunOutcome:
    answer = http_invoke(invocation)
    if answer.body_excerpt:
        writer.write("stdout", answer.body_excerpt.encode())
    if answer.error is None:
        return RunOutcome(status=RunStatus.SUCCEEDED, result_json={"httpStatus": answer.status})
    return RunOutcome(
        status=RunStatus.FAILED,
        error=answer.error,
        error_code=RunErrorCode.ADAPTER_FAILED,
        result_json={"httpStatus": answer.status},
    )


def _pump(pipe: IO[bytes], stream: str, writer: RunLogWriter, chunk: int) -> None:
    fd = pipe.fileno()
    try:
        while data := os.read(fd, chunk):
            writer.write(stream, data)
    finally:
        pipe.close()


def _process_run(
    run: HeartbeatRun, invocation: ProcessInvocation, writer: RunLogWriter, conf: HeartbeatConf
) -> RunOutcome:
    marker = str(run.id)
    try:
        spawned = process_control.spawn(
            argv=invocation.argv,
            cwd=invocation.cwd,
            env=invocation.env,
            marker=marker,
            stdin_data=invocation.stdin,
        )
    except process_control.SpawnError as exc:
        _adapter_invoked(run, invocation.meta, spawnError=str(exc))
        return RunOutcome(
            status=RunStatus.FAILED, error=str(exc), error_code=RunErrorCode.SPAWN_FAILED
        )
    try:
        stop, returncode = _process_watch(run, spawned, invocation, writer, conf)
    except BaseException:
        # The engine failed mid-run (a database outage, a bug): the run ends failed, so its
        # process tree must not outlive it.
        process_control.terminate_tree(
            spawned.identity, marker=marker, grace=conf.terminate_grace_sec
        )
        spawned.wait()
        raise
    exit_code = returncode if returncode >= 0 else None
    signal_name = process_control.exit_signal_name(returncode)
    if stop == _Stop.TIMEOUT:
        return RunOutcome(
            status=RunStatus.TIMED_OUT,
            error=f"Timed out after {invocation.timeout_sec:g}s",
            error_code=RunErrorCode.TIMEOUT,
            exit_code=exit_code,
            signal=signal_name,
        )
    if returncode == 0:
        return RunOutcome(status=RunStatus.SUCCEEDED, exit_code=0)
    error = (
        f"Process terminated by {signal_name}"
        if signal_name
        else f"Process exited with code {returncode}"
    )
    return RunOutcome(
        status=RunStatus.FAILED,
        error=error,
        error_code=RunErrorCode.ADAPTER_FAILED,
        exit_code=exit_code,
        signal=signal_name,
    )


def _process_watch(
    run: HeartbeatRun,
    spawned: process_control.SpawnedProcess,
    invocation: ProcessInvocation,
    writer: RunLogWriter,
    conf: HeartbeatConf,
) -> tuple[str | None, int]:
    """Record, stream, supervise and reap the spawned process: (why it was stopped, code)."""
    marker = str(run.id)
    identity = spawned.identity
    # Recorded before any output is read: from here on a reaper can judge this process by
    # identity even if this worker dies on the next line.
    with transaction.atomic():
        recorded = HeartbeatRun.objects.filter(pk=run.id, status=RunStatus.RUNNING).update(
            process_pid=identity.pid,
            process_group_id=identity.pgid,
            process_started_at=identity.started_at,
            process_host=identity.host,
            process_boot_id=identity.boot_id,
            updated_at=timezone.now(),
        )
        _adapter_invoked(run, invocation.meta, pid=identity.pid)
    readers = [
        threading.Thread(
            target=_pump,
            args=(pipe, stream, writer, conf.log_chunk_max_bytes),
            name=f"run-{stream}-{identity.pid}",
            daemon=True,
        )
        for pipe, stream in ((spawned.stdout, "stdout"), (spawned.stderr, "stderr"))
    ]
    for reader in readers:
        reader.start()
    stop = None if recorded else _Stop.ENDED_ELSEWHERE
    if stop is None:
        stop = _supervise(run, spawned, invocation, conf)
    if stop is not None:
        process_control.terminate_tree(identity, marker=marker, grace=invocation.grace_sec)
    returncode = spawned.wait()
    assert returncode is not None  # wait() without a timeout returns only once reaped
    _drain(readers, identity, marker, conf)
    return stop, returncode


def _supervise(
    run: HeartbeatRun,
    spawned: process_control.SpawnedProcess,
    invocation: ProcessInvocation,
    conf: HeartbeatConf,
) -> str | None:
    """Wait for the process; return why waiting stopped early, or None when it exited."""
    started = time.monotonic()
    deadline = started + invocation.timeout_sec if invocation.timeout_sec > 0 else None
    next_renewal = started + conf.lease_renew_interval_sec
    while True:
        wait = conf.run_status_poll_interval_sec
        if deadline is not None:
            wait = max(min(wait, deadline - time.monotonic()), 0.0)
        if spawned.wait(timeout=wait) is not None:
            return None
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return _Stop.TIMEOUT
        if now >= next_renewal:
            next_renewal = now + conf.lease_renew_interval_sec
            still_running = _lease_renew(run, conf)
        else:
            still_running = HeartbeatRun.objects.filter(
                pk=run.id, status=RunStatus.RUNNING
            ).exists()
        # Cancelled by another process or host, or ended by a reaper while we stalled.
        if not still_running:
            return _Stop.ENDED_ELSEWHERE


def _lease_renew(run: HeartbeatRun, conf: HeartbeatConf) -> bool:
    expires = timezone.now() + timedelta(seconds=conf.lease_expiry_sec)
    return bool(
        HeartbeatRun.objects.filter(pk=run.id, status=RunStatus.RUNNING).update(
            lease_expires_at=expires
        )
    )


def _drain(
    readers: list[threading.Thread],
    identity: process_control.ProcessIdentity,
    marker: str,
    conf: HeartbeatConf,
) -> None:
    """Read the output to its end; descendants still holding the pipes are the run's leftovers."""
    deadline = time.monotonic() + conf.output_drain_sec
    for reader in readers:
        reader.join(timeout=max(deadline - time.monotonic(), 0.0))
    if any(reader.is_alive() for reader in readers):
        process_control.terminate_tree(identity, marker=marker, grace=conf.terminate_grace_sec)
        for reader in readers:
            reader.join(timeout=conf.output_drain_sec)
    if any(reader.is_alive() for reader in readers):
        # Only an unkillable process (or one out of our reach) can still hold a pipe; the run
        # ends anyway and the log is closed under the reader, which then stops writing.
        logger.warning("output of process %s still open after terminating its tree", identity.pid)


def run_finalize(*, run: HeartbeatRun, outcome: RunOutcome) -> str:
    """Record the outcome and settle everything that depends on it; return the final status.

    One transaction: the run (compare-and-set from running), its wake, the closing event, the
    issue lock and promotion of a deferred wake, the runtime state and the agent. If the run was
    already ended elsewhere (cancelled, or failed by a reaper), only what the worker alone knows
    (exit code, output) is added and that ending stands. After commit, the agent's next queued
    run is dispatched.
    """
    now = timezone.now()
    log = outcome.log
    output = {
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "log_bytes": log.log_bytes if log else None,
        "log_sha256": log.log_sha256 if log else None,
        "stdout_excerpt": log.stdout_excerpt if log else None,
        "stderr_excerpt": log.stderr_excerpt if log else None,
    }
    with transaction.atomic():
        run_scope_lock(run=run)
        ended = HeartbeatRun.objects.filter(pk=run.id, status=RunStatus.RUNNING).update(
            status=outcome.status,
            finished_at=now,
            error=outcome.error,
            error_code=outcome.error_code,
            result_json=outcome.result_json,
            updated_at=now,
            **output,
        )
        if not ended:
            HeartbeatRun.objects.filter(pk=run.id).update(**output)
            final = HeartbeatRun.objects.values_list("status", flat=True).get(pk=run.id)
            _event(
                run,
                HeartbeatRunEvent.EventType.LIFECYCLE,
                f"process finished after the run was ended elsewhere ({final})",
                payload={"status": final, "exitCode": outcome.exit_code, "signal": outcome.signal},
            )
            transaction.on_commit(partial(agent_start_next_queued, agent_id=run.agent_id))
            return final
        run.status, run.finished_at, run.error, run.error_code = (
            outcome.status,
            now,
            outcome.error,
            outcome.error_code,
        )
        run.result_json = outcome.result_json
        for field, value in output.items():
            setattr(run, field, value)
        succeeded = outcome.status == RunStatus.SUCCEEDED
        AgentWakeupRequest.objects.filter(pk=run.wakeup_request_id).update(
            # Wakes have no timed_out status (reference quirk 9.11): a timeout is a failure.
            status=WakeupStatus.COMPLETED
            if succeeded
            else WakeupStatus.CANCELLED
            if outcome.status == RunStatus.CANCELLED
            else WakeupStatus.FAILED,
            finished_at=now,
            error=outcome.error,
            updated_at=now,
        )
        _event(
            run,
            HeartbeatRunEvent.EventType.LIFECYCLE,
            f"run {outcome.status}",
            level=HeartbeatRunEvent.Level.INFO if succeeded else HeartbeatRunEvent.Level.ERROR,
            payload={
                "status": outcome.status,
                "exitCode": outcome.exit_code,
                "signal": outcome.signal,
                "errorCode": outcome.error_code,
            },
        )
        issue_release_and_promote(run=run, now=now)
        runtime_state_record(run=run, error=outcome.error)
        agent_finalize_status(agent_id=run.agent_id, outcome=outcome.status, now=now)
        transaction.on_commit(partial(agent_start_next_queued, agent_id=run.agent_id))
    return outcome.status
