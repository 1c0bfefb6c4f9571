"""Execution: launching a run, and finalizing it from how its agent ended (reference 2.4).

`run_execute` is what the django-q2 task calls. It claims the run (a run that is not queued is
left alone, so a twice-delivered task is harmless), builds the adapter's invocation, starts the
run shim for it (heartbeat/shim/run_shim.py), records the shim's and the agent's identity and
returns within milliseconds: no worker ever waits for an agent. The run goes on under its shim,
watched by its host's run supervisor, which finalizes it from the shim's exit report
(`run_finalize_from_report`); a run that cannot start is finalized here at once.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from heartbeat import process_control
from heartbeat.adapters import (
    AdapterError,
    CliOutput,
    HttpInvocation,
    ProcessInvocation,
    RunInvocationContext,
    adapter_invocation,
    adapter_output_parser,
)
from heartbeat.conf import HeartbeatConf, heartbeat_conf
from heartbeat.models import (
    Agent,
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunErrorCode,
    RunStatus,
    WakeSource,
    WakeupStatus,
)
from heartbeat.run_log import (
    RunLogSummary,
    RunTranscript,
    run_exit_report_path,
    run_log_path,
    run_shim_log_path,
)
from heartbeat.services.budgets import RunCost, run_cost_from_output, run_cost_record
from heartbeat.services.claim import ClaimRefusal, run_claim
from heartbeat.services.events import run_event_append
from heartbeat.services.lifecycle import (
    agent_finalize_status,
    agent_name_key,
    agent_start_next_queued,
    issue_release_and_promote,
    run_create_queued,
    run_retry_context,
    run_retry_wake_payload,
    run_scope_lock,
    runtime_state_record,
)
from heartbeat.services.runs import host_start_parked_runs
from heartbeat.services.sessions import agent_session_forget, run_session_record
from issues.services import issue_run_summary_comment
from issues.services.run_engine import ExecutionLockMove, issues_execution_lock_move
from paperclip.credentials import run_credential_issue

logger = logging.getLogger(__name__)

STOPPED_BY_SIGNAL_MESSAGE = "Stopped by a signal to its run monitor on {host} (shim pid {pid})"
SESSION_RETRY_REASON = "session_unknown"
SESSION_RETRY_WAKE_REASON = "session_unknown_retry"


@dataclass(frozen=True)
class RunOutcome:
    """How the run ended, as its shim reported it (or why it never started)."""

    status: str
    error: str | None = None
    error_code: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    result_json: dict | None = None
    log: RunLogSummary | None = None
    # What the shim did on its own (timeout, leftovers terminated), written as run events.
    notes: tuple[str, ...] = ()
    # What the agent's CLI printed about its run (session, usage, cost, result), if it is one.
    cli_output: CliOutput | None = None


@dataclass(frozen=True)
class ExecuteResult:
    run_id: str
    executed: bool
    # When executed, the run's status after the launch (running, or the failure that kept it
    # from starting); else why the run was left alone.
    status: str


def run_execute(*, run_id: uuid.UUID | str) -> ExecuteResult:
    """Claim and launch one run; a run that cannot be claimed is left as it is."""
    claim = run_claim(run_id=run_id)
    if not claim.claimed:
        assert claim.refusal is not None  # not claimed always carries a refusal
        if claim.refusal in (ClaimRefusal.AT_CAPACITY, ClaimRefusal.HOST_AT_CAPACITY):
            logger.debug("run %s stays queued: %s", run_id, claim.refusal.value)
        return ExecuteResult(run_id=str(run_id), executed=False, status=claim.refusal.value)
    run, agent = claim.run, claim.agent
    assert run is not None and agent is not None  # a successful claim returns both
    try:
        failure = _run_launch(run, agent)
    except Exception as exc:
        # A bug or an outage while launching must still end the run, never leave it running.
        logger.exception("run %s could not be launched", run.id)
        failure = RunOutcome(
            status=RunStatus.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            error_code=RunErrorCode.ADAPTER_FAILED,
        )
    if failure is None:
        return ExecuteResult(run_id=str(run.id), executed=True, status=RunStatus.RUNNING)
    status = run_finalize(run=run, outcome=failure)
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


def _adapter_invoked(run: HeartbeatRun, meta: Mapping[str, Any], **facts: Any) -> None:
    payload = {**meta, **facts}
    _event(run, HeartbeatRunEvent.EventType.ADAPTER_INVOKE, "adapter invoked", payload=payload)


def _run_launch(run: HeartbeatRun, agent: Agent) -> RunOutcome | None:
    """Start the run under its shim and record who runs it; the outcome if it cannot start."""
    try:
        invocation = adapter_invocation(_invocation_context(run, agent))
    except AdapterError as exc:
        return RunOutcome(status=RunStatus.FAILED, error=str(exc), error_code=exc.error_code)
    conf = heartbeat_conf()
    assert run.log_ref is not None  # set by the claim
    shim_log = run_shim_log_path(run.log_ref)
    shim_log.parent.mkdir(parents=True, exist_ok=True)
    try:
        started = process_control.spawn_run_shim(
            spec=run_shim_spec(run=run, invocation=invocation, conf=conf),
            marker=str(run.id),
            shim_log_path=str(shim_log),
            timeout=conf.shim_start_timeout_sec,
        )
    except process_control.ShimStartError as exc:
        _adapter_invoked(run, invocation.meta, spawnError=str(exc))
        return RunOutcome(
            status=RunStatus.FAILED, error=str(exc), error_code=RunErrorCode.SPAWN_FAILED
        )
    if started.spawn_error:
        _adapter_invoked(run, invocation.meta, spawnError=started.spawn_error)
        return RunOutcome(
            status=RunStatus.FAILED,
            error=started.spawn_error,
            error_code=RunErrorCode.SPAWN_FAILED,
        )
    if not _run_launch_record(run, started, invocation.meta):
        # Cancelled while it was being launched: the cancel found nothing to stop yet.
        process_control.shim_stop(started.shim)
    return None


def _run_launch_record(
    run: HeartbeatRun, started: process_control.ShimStarted, meta: Mapping[str, Any]
) -> bool:
    """Record the shim and the agent on the run; False if the run ended meanwhile.

    From here on a supervisor (or a reaper) can judge and adopt the run by identity, even if
    this worker dies on the next line.
    """
    shim, agent = started.shim, started.agent
    with transaction.atomic():
        recorded = HeartbeatRun.objects.filter(pk=run.id, status=RunStatus.RUNNING).update(
            shim_pid=shim.pid,
            shim_started_at=shim.started_at,
            process_pid=agent.pid if agent else None,
            process_group_id=agent.pgid if agent else None,
            process_started_at=agent.started_at if agent else None,
            process_host=shim.host,
            process_boot_id=shim.boot_id,
            updated_at=timezone.now(),
        )
        facts = {"shimPid": shim.pid, **({"pid": agent.pid} if agent else {})}
        _adapter_invoked(run, meta, **facts)
    return bool(recorded)


def run_shim_spec(
    *, run: HeartbeatRun, invocation: ProcessInvocation | HttpInvocation, conf: HeartbeatConf
) -> dict[str, Any]:
    """What the run shim needs to run the invocation (given on its stdin, never on disk)."""
    assert run.log_ref is not None  # set by the claim
    spec: dict[str, Any] = {
        "runId": str(run.id),
        "marker": str(run.id),
        "logPath": str(run_log_path(run.log_ref)),
        "exitReportPath": str(run_exit_report_path(run.log_ref)),
        "shimLogPath": str(run_shim_log_path(run.log_ref)),
        "chunkMaxChars": conf.log_chunk_max_bytes,
        "excerptMaxChars": conf.excerpt_max_bytes,
        "secrets": list(invocation.secret_values),
        "drainSec": conf.output_drain_sec,
        "leftoverGraceSec": conf.terminate_grace_sec,
    }
    if isinstance(invocation, HttpInvocation):
        spec["http"] = {
            "url": invocation.url,
            "method": invocation.method,
            "headers": dict(invocation.headers),
            "body": base64.b64encode(invocation.body).decode(),
            "timeoutSec": invocation.timeout_sec,
        }
        return spec
    stdin = None if invocation.stdin is None else base64.b64encode(invocation.stdin).decode()
    spec.update(
        timeoutSec=invocation.timeout_sec,
        graceSec=invocation.grace_sec,
        process={
            "argv": list(invocation.argv),
            "cwd": invocation.cwd,
            "env": dict(invocation.env),
            "stdin": stdin,
        },
    )
    return spec


def run_outcome_from_report(report: Mapping[str, Any], *, host: str | None = None) -> RunOutcome:
    """How a run ended, from its shim's exit report (pure: no database, no processes)."""
    log = report.get("log") if isinstance(report.get("log"), dict) else {}
    exit_code, signal_name = report.get("exitCode"), report.get("signal")
    common: dict[str, Any] = {
        "exit_code": exit_code,
        "signal": signal_name,
        "log": RunLogSummary(
            log_bytes=log.get("bytes"),
            log_sha256=log.get("sha256"),
            stdout_excerpt=log.get("stdoutExcerpt"),
            stderr_excerpt=log.get("stderrExcerpt"),
        ),
        "notes": tuple(str(note) for note in report.get("notes") or ()),
    }
    failed = {"status": RunStatus.FAILED, "error_code": RunErrorCode.ADAPTER_FAILED}
    if report.get("spawnError"):
        return RunOutcome(
            status=RunStatus.FAILED,
            error=str(report["spawnError"]),
            error_code=RunErrorCode.SPAWN_FAILED,
            **common,
        )
    if report.get("stop") == "cancel":
        # Ended by a SIGTERM to the shim that no cancel in the database asked for.
        error = STOPPED_BY_SIGNAL_MESSAGE.format(host=host or "its host", pid=report.get("shimPid"))
        return RunOutcome(
            status=RunStatus.CANCELLED, error=error, error_code=RunErrorCode.CANCELLED, **common
        )
    if report.get("stop") == "timeout":
        return RunOutcome(
            status=RunStatus.TIMED_OUT,
            error=f"Timed out after {float(report.get('timeoutSec') or 0):g}s",
            error_code=RunErrorCode.TIMEOUT,
            **common,
        )
    http = report.get("http")
    if isinstance(http, dict):
        result = {"httpStatus": http.get("status")}
        if http.get("error"):
            return RunOutcome(error=str(http["error"]), result_json=result, **failed, **common)
        return RunOutcome(status=RunStatus.SUCCEEDED, result_json=result, **common)
    if exit_code == 0:
        return RunOutcome(status=RunStatus.SUCCEEDED, **common)
    if signal_name:
        return RunOutcome(error=f"Process terminated by {signal_name}", **failed, **common)
    return RunOutcome(error=f"Process exited with code {exit_code}", **failed, **common)


def run_outcome_with_cli_output(
    outcome: RunOutcome, output: CliOutput | None, *, resumed_session: str | None
) -> RunOutcome:
    """How the run ended, once its CLI's own report is read (pure).

    A CLI that says the run failed fails it even when it exited 0 (Claude's `is_error`); a
    failed run's error is the CLI's message rather than its exit code; and a resumed session the
    CLI no longer has is `session_unknown`, which the run retries once without.
    """
    if output is None:
        return outcome
    changes: dict[str, Any] = {"cli_output": output}
    status, error = outcome.status, outcome.error
    if status == RunStatus.SUCCEEDED and output.failed:
        status = RunStatus.FAILED
        error = output.error or f"{output.cli} reported that the run failed"
        changes.update(status=status, error=error, error_code=RunErrorCode.ADAPTER_FAILED)
    elif status == RunStatus.FAILED and outcome.exit_code and output.error:
        changes["error"] = error = f"{output.error} (exit code {outcome.exit_code})"
    if resumed_session and status == RunStatus.FAILED and output.unknown_session:
        changes.update(
            error_code=RunErrorCode.SESSION_UNKNOWN,
            error=f"{output.cli} could not resume session {resumed_session}: {error}",
        )
    return dataclasses.replace(outcome, **changes)


def run_cli_output(run: HeartbeatRun) -> CliOutput | None:
    """What the run's CLI printed, parsed from its run log (None for adapters without a CLI
    format). The log is streamed: memory stays bounded whatever its size."""
    parser = adapter_output_parser(run.agent.adapter_type)
    if parser is None or not run.log_ref:
        return None
    try:
        return RunTranscript(run.log_ref, parser).finish()
    except OSError:
        # The run is still finalized from its exit report, without what its CLI said.
        logger.exception("run %s: its log could not be read for its CLI's output", run.id)
        return None


def run_finalize_from_report(*, run_id: uuid.UUID | str, report: Mapping[str, Any]) -> str | None:
    """Finalize a run from its shim's exit report; returns its final status (None: no run).

    A run that already ended elsewhere (cancelled, failed by a reaper) keeps that ending and
    gets the output, once.
    """
    run = HeartbeatRun.objects.select_related("agent").filter(pk=run_id).first()
    if run is None:
        return None
    outcome = run_outcome_with_cli_output(
        run_outcome_from_report(report, host=run.process_host),
        run_cli_output(run),
        resumed_session=run.session_id_before,
    )
    return run_finalize(run=run, outcome=outcome)


def run_finalize(*, run: HeartbeatRun, outcome: RunOutcome) -> str:
    """Record the outcome and settle everything that depends on it; return the final status.

    One transaction: the run (compare-and-set from running) with what its CLI reported, its
    wake, the closing events, a retry without the session when the CLI no longer had it, the
    summary comment, the issue lock and promotion of a deferred wake, the runtime state and the
    task's session, the agent, and the run's cost with the budgets it reaches. If the run was
    already ended elsewhere (cancelled, or failed by a reaper), only what the shim alone knows
    (exit code, output, usage and cost) is added, once, and that ending stands. After commit,
    the agent's next queued run, and runs parked while this host was full, are dispatched.
    """
    now = timezone.now()
    with transaction.atomic():
        run_scope_lock(run=run)
        # After the agent's lock: the session's previous run (its usage base) has committed.
        cost = _run_cost(run, outcome.cli_output)
        reported = _run_reported_fields(run, outcome, cost)
        ended = HeartbeatRun.objects.filter(pk=run.id, status=RunStatus.RUNNING).update(
            status=outcome.status,
            finished_at=now,
            error=outcome.error,
            error_code=outcome.error_code,
            updated_at=now,
            **reported,
        )
        if not ended:
            return _run_ended_elsewhere_record(run, outcome, reported, cost=cost, now=now)
        _notes_record(run, outcome.notes)
        run.status, run.finished_at, run.error, run.error_code = (
            outcome.status,
            now,
            outcome.error,
            outcome.error_code,
        )
        for field, value in reported.items():
            setattr(run, field, value)
        _run_ended_settle(run, outcome, cost=cost, now=now)
    return outcome.status


def _run_reported_fields(
    run: HeartbeatRun, outcome: RunOutcome, cost: RunCost | None
) -> dict[str, Any]:
    """What the shim and the CLI reported, as the run's fields: the exit, the log and its
    excerpts, the usage, the session the run ended in, and the result."""
    log = outcome.log
    return {
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "log_bytes": log.log_bytes if log else None,
        "log_sha256": log.log_sha256 if log else None,
        "stdout_excerpt": log.stdout_excerpt if log else None,
        "stderr_excerpt": log.stderr_excerpt if log else None,
        "usage_json": cost.usage_json if cost else None,
        "session_id_after": _session_after(run, outcome),
        "result_json": _result_json(outcome),
    }


def _run_ended_elsewhere_record(
    run: HeartbeatRun,
    outcome: RunOutcome,
    reported: dict[str, Any],
    *,
    cost: RunCost | None,
    now: datetime,
) -> str:
    """Add what only the shim knows to a run another writer ended; returns that ending."""
    final = HeartbeatRun.objects.values_list("status", flat=True).get(pk=run.id)
    # A supervisor and a reaper may both finalize one report: the output goes on once.
    if outcome.log is not None and not (
        HeartbeatRun.objects.filter(pk=run.id, log_sha256__isnull=True).update(**reported)
    ):
        return final
    _notes_record(run, outcome.notes)
    _event(
        run,
        HeartbeatRunEvent.EventType.LIFECYCLE,
        f"process finished after the run was ended elsewhere ({final})",
        payload={"status": final, "exitCode": outcome.exit_code, "signal": outcome.signal},
    )
    # The agent worked until it stopped: its session and its cost count all the same.
    _cli_output_record(run, outcome.cli_output, reported["session_id_after"], now)
    if cost is not None:
        run_cost_record(run=run, cost=cost, now=now)
    transaction.on_commit(partial(agent_start_next_queued, agent_id=run.agent_id))
    return final


def _run_ended_settle(
    run: HeartbeatRun, outcome: RunOutcome, *, cost: RunCost | None, now: datetime
) -> None:
    """Everything that follows from the run's ending, in the transaction that ended it."""
    cli = outcome.cli_output
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
    if outcome.error_code == RunErrorCode.SESSION_UNKNOWN:
        _session_retry_queue(run, cli, now)
    summary = cli.summary if cli else None
    if succeeded and summary and run.issue_id:
        _summary_comment_post(run, summary)
    issue_release_and_promote(run=run, now=now)
    runtime_state_record(run=run, error=outcome.error)
    _cli_output_record(run, cli, run.session_id_after, now)
    agent_finalize_status(agent_id=run.agent_id, outcome=outcome.status, now=now)
    if cost is not None:
        run_cost_record(run=run, cost=cost, now=now)
    transaction.on_commit(partial(agent_start_next_queued, agent_id=run.agent_id))
    if run.owner_host:
        transaction.on_commit(partial(host_start_parked_runs, host=run.owner_host))


def _run_cost(run: HeartbeatRun, cli: CliOutput | None) -> RunCost | None:
    if cli is None:
        return None
    config = run.agent.adapter_config if isinstance(run.agent.adapter_config, dict) else {}
    model = config.get("model") if isinstance(config.get("model"), str) else None
    return run_cost_from_output(run=run, output=cli, model=model)


def _session_after(run: HeartbeatRun, outcome: RunOutcome) -> str | None:
    """The session the run ended in: the one its CLI named, else the one it resumed (the CLI
    went on in it), and none when the CLI no longer had the session it was asked to resume."""
    cli = outcome.cli_output
    if cli is None or outcome.error_code == RunErrorCode.SESSION_UNKNOWN:
        return None
    return cli.session_id or run.session_id_before


def _result_json(outcome: RunOutcome) -> dict | None:
    """The adapter's result, with the CLI's summary and the facts of its final report."""
    result = dict(outcome.result_json or {})
    cli = outcome.cli_output
    if cli is not None:
        if cli.summary:
            result["summary"] = cli.summary
        result.update(cli.details)
        result.update(outputLines=cli.lines, malformedLines=cli.malformed_lines)
        if cli.oversized_lines:
            result["oversizedLines"] = cli.oversized_lines
    return result or None


def _cli_output_record(
    run: HeartbeatRun, cli: CliOutput | None, session_id: str | None, now: datetime
) -> None:
    """The task's session after the run, and a note of output lines that were not understood."""
    if cli is None:
        return
    run_session_record(run=run, adapter_type=run.agent.adapter_type, session_id=session_id, now=now)
    if run.error_code == RunErrorCode.SESSION_UNKNOWN and run.session_id_before:
        agent_session_forget(agent_id=run.agent_id, session_id=run.session_id_before)
    skipped = cli.malformed_lines + cli.oversized_lines
    if skipped:
        _event(
            run,
            HeartbeatRunEvent.EventType.LIFECYCLE,
            f"{skipped} of the {cli.cli} output lines were not events it documents or too long "
            "to read; they are kept in the run log",
            level=HeartbeatRunEvent.Level.WARN,
            payload={
                "outputLines": cli.lines,
                "malformedLines": cli.malformed_lines,
                "oversizedLines": cli.oversized_lines,
            },
        )


def _session_retry_queue(run: HeartbeatRun, cli: CliOutput | None, now: datetime) -> None:
    """Queue the one retry of a run whose CLI no longer had the session it was to resume, in a
    fresh session (Paperclip's adapters retry so within the run). The issue's execution lock
    moves to the retry, so a deferred wake keeps waiting behind it."""
    retry = _session_retry_create(run, now)
    if retry is None:
        return
    if run.issue_id:
        issues_execution_lock_move(
            moves=[
                ExecutionLockMove(
                    from_run_id=run.id,
                    to_run_id=retry.id,
                    agent_name_key=agent_name_key(run.agent.name),
                    issue_id=run.issue_id,
                )
            ],
            now=now,
        )
    cli_name = cli.cli if cli else run.agent.adapter_type
    payload = {"sessionId": run.session_id_before, "retryRunId": str(retry.id)}
    _event(
        run,
        HeartbeatRunEvent.EventType.LIFECYCLE,
        f"{cli_name} could not resume session {run.session_id_before}: it no longer exists. "
        f"Retrying once with a fresh session as run {retry.id}",
        level=HeartbeatRunEvent.Level.WARN,
        payload=payload,
    )
    _event(
        retry,
        HeartbeatRunEvent.EventType.LIFECYCLE,
        f"Retry of run {run.id} with a fresh session: {cli_name} no longer had its session "
        f"{run.session_id_before}",
        level=HeartbeatRunEvent.Level.WARN,
        payload={"sessionId": run.session_id_before, "retryOfRunId": str(run.id)},
    )


def _session_retry_create(run: HeartbeatRun, now: datetime) -> HeartbeatRun | None:
    """The retry's wake and queued run; None (the wake skipped) when it cannot be queued."""
    wakeup = AgentWakeupRequest.objects.create(
        company_id=run.company_id,
        agent=run.agent,
        source=WakeSource.AUTOMATION,
        trigger_detail="system",
        reason=SESSION_RETRY_WAKE_REASON,
        payload=run_retry_wake_payload(run),
        status=WakeupStatus.QUEUED,
        requested_by_actor_type="system",
    )
    try:
        return run_create_queued(
            agent=run.agent,
            wakeup=wakeup,
            context=run_retry_context(
                run.context_snapshot,
                retry_of_run_id=run.id,
                retry_reason=SESSION_RETRY_REASON,
                forceFreshSession=True,
            ),
            invocation_source=WakeSource.AUTOMATION,
            trigger_detail="system",
            retry_of_run=run,
            process_loss_retry_count=run.process_loss_retry_count,
        )
    except IntegrityError:
        # Another run took the issue (or this run was retried already): nothing to add.
        logger.warning("run %s: no retry without its session could be queued", run.id)
        AgentWakeupRequest.objects.filter(pk=wakeup.pk).update(
            status=WakeupStatus.SKIPPED, finished_at=now, updated_at=now
        )
        return None


def _summary_comment_post(run: HeartbeatRun, summary: str) -> None:
    """A succeeded run that left its issue no comment leaves its summary as one (reference 2.4
    finalize), written by its agent."""
    issue_run_summary_comment(
        issue_id=run.issue_id,
        company_id=run.company_id,
        agent_id=run.agent_id,
        run_id=run.id,
        body=summary,
    )


def _notes_record(run: HeartbeatRun, notes: Sequence[str]) -> None:
    for note in notes:
        _event(
            run,
            HeartbeatRunEvent.EventType.LIFECYCLE,
            note,
            level=HeartbeatRunEvent.Level.WARN,
            payload={"source": "run_shim"},
        )
