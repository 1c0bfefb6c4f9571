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
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial

from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.fields.json import KT
from django.utils import timezone

from heartbeat import process_control
from heartbeat.conf import HeartbeatConf, heartbeat_conf
from heartbeat.models import (
    NOT_INVOKABLE_AGENT_STATUSES,
    Agent,
    AgentRuntimeState,
    AgentWakeupRequest,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunErrorCode,
    RunStatus,
    RunSupervisor,
    SweepKind,
    WakeSource,
    WakeupStatus,
)
from heartbeat.process_control import Liveness, ProcessIdentity
from heartbeat.run_log import run_exit_report_read
from heartbeat.services.events import run_event_append
from heartbeat.services.execution import run_finalize_from_report
from heartbeat.services.lifecycle import (
    agent_finalize_status,
    agent_name_key,
    agent_start_next_queued,
    issue_release_and_promote,
    queued_parked_filter,
    run_retry_context,
)
from heartbeat.services.runs import run_process_identity, run_shim_identity
from heartbeat.services.supervision import supervisor_renewing_since
from heartbeat.services.sweeps import (
    SWEEP_RECORD_MAX_IDS,
    ActivityRow,
    EventRow,
    SweepLock,
    activity_insert,
    json_rows,
    run_events_insert,
    runs_dispatch_within_slots,
    sql_execute,
    sweep_ids_shown,
    sweep_lock_scope,
    sweep_record_save_quietly,
    sweep_single_flight,
)
from issues.models import Issue

logger = logging.getLogger(__name__)

PROCESS_LOST_RETRY_REASON = "process_lost"
PROCESS_LOST_WAKE_REASON = "process_lost_retry"
_CLOSED_ISSUE_STATUSES = (Issue.Status.DONE, Issue.Status.CANCELLED)


# --- Decisions (pure) ---------------------------------------------------------------------------


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
    grace = _duration(detached_grace_sec)
    if decision.verdict is not ReapVerdict.LOST:
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
    cause = decision.cause
    shown_pid = pid if pid is not None else "unknown"
    if cause is LossCause.DETACHED_SILENT:
        base = (
            f"Process lost -- detached child pid {pid} reported no activity for "
            f"{_duration(detached_grace_sec)} and was terminated"
        )
    elif decision.terminate and pgid is not None:
        base = (
            f"Process lost -- parent pid {shown_pid} exited, but descendant process group "
            f"{pgid} was still alive and was terminated"
        )
    elif decision.terminate:
        base = (
            f"Process lost -- child pid {shown_pid} exited, but descendant processes of the run "
            "were still alive and were terminated"
        )
    elif cause is LossCause.DETACHED_EXITED:
        base = f"Process lost -- detached child pid {pid} exited; its exit status cannot be known"
    elif cause is LossCause.MONITOR_DIED:
        base = (
            f"Process lost -- the run's monitor (shim pid {shim_pid}) died without recording "
            f"how the agent ended, and child pid {shown_pid} is no longer running"
        )
    elif cause is LossCause.LEASE_EXPIRED:
        renewed = (
            f" (last renewed {lease_renewed_at:%Y-%m-%d %H:%M:%S} UTC)" if lease_renewed_at else ""
        )
        base = (
            f"Process lost -- the run supervisor on host {owner_host or 'unknown'} stopped "
            f"renewing the run's lease{renewed}; its processes were not signalled from this "
            "host, and its host's supervisor terminates them when it is back"
        )
    elif pid is not None:
        base = f"Process lost -- child pid {pid} is no longer running"
        if cause is LossCause.PROCESS_ZOMBIE:
            base += " (it exited and was left a zombie)"
        elif cause is LossCause.PID_REUSED:
            base += " (the pid now belongs to another process)"
        elif cause is LossCause.HOST_REBOOTED:
            base += " (the host rebooted since it started)"
    elif pgid is not None:
        base = f"Process lost -- process group {pgid} is no longer running"
    else:
        base = "Process lost -- server may have restarted"
    return base + ("; retrying once" if decision.retry else "")


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


# --- Result -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReapResult:
    """reaped/run_ids: runs failed as lost, in processing order; detached runs are not counted.

    deferred/deferred_run_ids: orphans left for the next sweep because another transaction
    held their issue. sweep_skipped is True when another sweep held the lock and this one did
    nothing.
    """

    reaped: int = 0
    run_ids: list[uuid.UUID] = field(default_factory=list)
    detached: int = 0
    detached_run_ids: list[uuid.UUID] = field(default_factory=list)
    # Runs whose agent ended while nobody watched: finalized from their shim's exit report.
    finalized: int = 0
    finalized_run_ids: list[uuid.UUID] = field(default_factory=list)
    deferred: int = 0
    deferred_run_ids: list[uuid.UUID] = field(default_factory=list)
    errors: int = 0
    sweep_skipped: bool = False
    dry_run: bool = False

    def as_dict(self, *, max_ids: int | None = None) -> dict:
        """The JSON shape (commands' --json; sweep records and logs keep max_ids ids per list)."""
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        lists = ("run_ids", "detached_run_ids", "finalized_run_ids", "deferred_run_ids")
        return sweep_ids_shown(data, lists, max_ids)


# --- Selectors ----------------------------------------------------------------------------------

_CANDIDATE_FIELDS = (
    "id",
    "company_id",
    "agent_id",
    "agent__name",
    "agent__status",
    "agent__runtime_config",
    "wakeup_request_id",
    "status",
    "context_snapshot",
    "process_pid",
    "process_group_id",
    "process_started_at",
    "process_host",
    "process_boot_id",
    "owner_host",
    "error_code",
    "detached_at",
    "updated_at",
    "created_at",
    "process_loss_retry_count",
    "session_id_before",
    "session_id_after",
    "usage_json",
    "shim_pid",
    "shim_started_at",
    "log_ref",
    "owner_pid",
    "lease_renewed_at",
)


def runs_with_dead_local_owner(*, now: datetime, host: str, boot_id: str) -> list[uuid.UUID]:
    """Running runs whose lease is still valid but whose owner on this host and boot is gone.

    Bounded by this host's concurrent runs (the partial index run_running_owner_idx).
    """
    owned = HeartbeatRun.objects.filter(
        status=RunStatus.RUNNING, owner_host=host, owner_boot_id=boot_id, lease_expires_at__gte=now
    ).values_list("id", "owner_pid", "owner_started_at")
    alive: dict[tuple[int, datetime | None], bool] = {}
    dead = []
    for run_id, pid, started_at in owned:
        if pid is None or pid <= 0:
            dead.append(run_id)
            continue
        key = (pid, started_at)
        if key not in alive:
            identity = ProcessIdentity(
                pid=pid, pgid=None, started_at=started_at, host=host, boot_id=boot_id
            )
            alive[key] = process_control.probe(identity) is Liveness.ALIVE
        if not alive[key]:
            dead.append(run_id)
    return dead


def runs_reap_candidates(
    *,
    now: datetime,
    host: str,
    boot_id: str,
    stale_threshold_sec: float,
    dead_owner_run_ids: Sequence[uuid.UUID] = (),
) -> QuerySet[HeartbeatRun]:
    """Running runs whose owner is gone, oldest first; queued runs are never candidates."""
    owner_gone = (
        Q(lease_expires_at__isnull=True)
        | Q(lease_expires_at__lt=now)
        | Q(owner_host__isnull=True)
        | (Q(owner_host=host) & ~Q(owner_boot_id=boot_id))
        # Detached is orphaned by definition: its watch goes on whoever still holds it.
        | Q(error_code=RunErrorCode.PROCESS_DETACHED)
    )
    if dead_owner_run_ids:
        owner_gone |= Q(id__in=list(dead_owner_run_ids))
    runs = HeartbeatRun.objects.filter(owner_gone, status=RunStatus.RUNNING)
    if stale_threshold_sec > 0:
        # Stale counts from the last lease renewal (a long run is not stale for being long);
        # a detached run is already known orphaned, its watch must not wait for staleness.
        cutoff = now - timedelta(seconds=stale_threshold_sec)
        runs = runs.filter(
            Q(lease_renewed_at__lte=cutoff)
            | Q(lease_renewed_at__isnull=True, updated_at__lte=cutoff)
            | Q(error_code=RunErrorCode.PROCESS_DETACHED)
        )
    return runs.select_related("agent").only(*_CANDIDATE_FIELDS).order_by("created_at", "id")


# --- Service ------------------------------------------------------------------------------------


def reap_orphaned_runs(
    *,
    stale_threshold_sec: float = 0,
    now: datetime | None = None,
    host: str | None = None,
    dry_run: bool = False,
    batch_size: int | None = None,
    single_flight: bool = True,
) -> ReapResult:
    """Fail orphaned running runs as process_lost (one retry each), mark live ones detached.

    stale_threshold_sec skips runs updated more recently (the periodic sweep passes 300, the
    start-up sweep 0, the reference's default). dry_run reports what would change and changes
    nothing. single_flight=False lets concurrent sweeps race (tests of the row-level guards).
    """
    conf = heartbeat_conf()
    host = host or process_control.current_host()
    if not single_flight:
        return _reap(conf, stale_threshold_sec, now, host, dry_run, batch_size)
    with sweep_single_flight(SweepLock.REAP, scope=sweep_lock_scope(host)) as acquired:
        if not acquired:
            logger.info("reap sweep skipped: another reap sweep on %s holds the lock", host)
            return ReapResult(sweep_skipped=True, dry_run=dry_run)
        return _reap(conf, stale_threshold_sec, now, host, dry_run, batch_size)


def _reap(conf, stale_threshold_sec, now, host, dry_run, batch_size) -> ReapResult:
    started_at = timezone.now()
    now = now or started_at
    boot_id = process_control.current_boot_id()
    sweep = _Sweep(
        conf=conf, now=now, host=host, boot_id=boot_id, dry_run=dry_run, run_batch=batch_size
    )
    error = None
    try:
        sweep.run(stale_threshold_sec)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result = sweep.result()
        if result.reaped or result.detached or result.errors:
            logger.warning(
                "reaped orphaned heartbeat runs: %s", result.as_dict(max_ids=SWEEP_RECORD_MAX_IDS)
            )
        if not dry_run:
            sweep_record_save_quietly(
                kind=SweepKind.REAP,
                host=host,
                started_at=started_at,
                result=result.as_dict(max_ids=SWEEP_RECORD_MAX_IDS),
                error=error,
            )
    return result


@dataclass
class _Planned:
    run: HeartbeatRun
    decision: ReapDecision
    message: str
    retry_id: uuid.UUID | None = None
    retry_wakeup_id: uuid.UUID | None = None


@dataclass
class _Sweep:
    conf: HeartbeatConf
    now: datetime
    host: str
    boot_id: str
    dry_run: bool
    run_batch: int | None
    lost: list[uuid.UUID] = field(default_factory=list)
    detached: list[uuid.UUID] = field(default_factory=list)
    finalized: list[uuid.UUID] = field(default_factory=list)
    deferred: list[uuid.UUID] = field(default_factory=list)
    errors: int = 0
    # This host's run supervisor is alive: live shims without an owner are its to adopt.
    supervisor_alive: bool = False
    # Other hosts' expired leases are trusted only once this host has renewed its own for a
    # lease period (after a database outage every lease looks expired; see supervision).
    trust_other_leases: bool = True

    def result(self) -> ReapResult:
        return ReapResult(
            reaped=len(self.lost),
            run_ids=list(self.lost),
            detached=len(self.detached),
            detached_run_ids=list(self.detached),
            finalized=len(self.finalized),
            finalized_run_ids=list(self.finalized),
            deferred=len(self.deferred),
            deferred_run_ids=list(self.deferred),
            errors=self.errors,
            dry_run=self.dry_run,
        )

    def run(self, stale_threshold_sec: float) -> None:
        self.supervisor_alive = _local_supervisor_alive(self.host, self.boot_id)
        renewing_since = supervisor_renewing_since(host=self.host)
        self.trust_other_leases = renewing_since is None or (
            self.now - renewing_since >= timedelta(seconds=self.conf.lease_expiry_sec)
        )
        dead_owners = runs_with_dead_local_owner(now=self.now, host=self.host, boot_id=self.boot_id)
        candidates = runs_reap_candidates(
            now=self.now,
            host=self.host,
            boot_id=self.boot_id,
            stale_threshold_sec=stale_threshold_sec,
            dead_owner_run_ids=dead_owners,
        )
        batch_size = self.run_batch or self.conf.sweep_batch_size
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            page = candidates
            if after is not None:
                page = page.filter(
                    Q(created_at__gt=after[0]) | Q(created_at=after[0], id__gt=after[1])
                )
            batch_ids = self._run_batch(page, batch_size)
            if batch_ids is None:
                return
            after = batch_ids[-1]
            if len(batch_ids) < batch_size:
                return

    def _run_batch(self, page: QuerySet[HeartbeatRun], batch_size: int):
        """Judge and write one batch; returns its (created_at, id) keys, None when empty."""
        keys: list[tuple[datetime, uuid.UUID]] = []
        try:
            ended: list[tuple[uuid.UUID, dict]] = []
            deferred: list[uuid.UUID] = []
            with transaction.atomic():
                runs = list(self._lock(page)[:batch_size])
                if not runs:
                    return None
                keys = [(run.created_at, run.id) for run in runs]
                detached, lost = self._judge_and_write(runs, ended=ended, deferred=deferred)
            self._committed(detached, lost)
            self.deferred.extend(deferred)
            self._finalize_ended(ended)
            return keys
        except Exception:
            if not keys:
                raise
            logger.exception("reap batch failed; judging its %d runs one by one", len(keys))
        # One bad row must not cost the others their recovery (reference 9.9).
        for _created_at, run_id in keys:
            self._run_one(page, run_id)
        return keys

    def _run_one(self, page: QuerySet[HeartbeatRun], run_id: uuid.UUID) -> None:
        for allow_retry in (True, False):
            try:
                ended: list[tuple[uuid.UUID, dict]] = []
                deferred: list[uuid.UUID] = []
                with transaction.atomic():
                    runs = list(self._lock(page.filter(id=run_id)))
                    detached, lost = self._judge_and_write(
                        runs, allow_retry=allow_retry, ended=ended, deferred=deferred
                    )
                self._committed(detached, lost)
                self.deferred.extend(deferred)
                self._finalize_ended(ended)
                return
            except IntegrityError as exc:
                # The database refused the retry (another active run holds the issue, or a
                # retry already exists): fail the run without one rather than leave it running.
                if allow_retry:
                    logger.warning("retry of run %s refused (%s); failing it without", run_id, exc)
                    continue
                self._record_failure(run_id, exc)
            except Exception as exc:
                self._record_failure(run_id, exc)
            return

    def _finalize_ended(self, ended: list[tuple[uuid.UUID, dict]]) -> None:
        """Runs whose agent ended while nobody watched: the exit report says how (each in a
        transaction of its own, after the batch committed)."""
        for run_id, report in ended:
            if self.dry_run:
                self.finalized.append(run_id)
                continue
            try:
                run_finalize_from_report(run_id=run_id, report=report)
            except Exception as exc:
                self._record_failure(run_id, exc)
                continue
            self.finalized.append(run_id)

    def _committed(self, detached: list[uuid.UUID], lost: list[_Planned]) -> None:
        """Count a batch once its transaction committed (a rolled-back one is redone)."""
        self.detached.extend(detached)
        self.lost.extend(p.run.id for p in lost)
        if not self.dry_run:
            self._settle_agents(lost)

    def _lock(self, runs: QuerySet[HeartbeatRun]) -> QuerySet[HeartbeatRun]:
        if self.dry_run:
            return runs
        # Another reaper holding a row is handling it; the engine's CAS from running waits.
        return runs.select_for_update(skip_locked=True, of=("self",))

    def _record_failure(self, run_id: uuid.UUID, exc: Exception) -> None:
        self.errors += 1
        logger.error("reaper could not process run %s: %s", run_id, exc, exc_info=exc)
        if self.dry_run:
            return
        try:
            run = HeartbeatRun.objects.only("company_id", "agent_id").get(pk=run_id)
            run_event_append(
                run_id=run.id,
                company_id=run.company_id,
                agent_id=run.agent_id,
                event_type=HeartbeatRunEvent.EventType.ERROR,
                level=HeartbeatRunEvent.Level.ERROR,
                message=f"Reaper could not process this run; the next sweep tries again: {exc}",
                payload={"exception": type(exc).__name__},
            )
        except Exception:
            logger.exception("could not record the reaper failure on run %s", run_id)

    # -- one batch -------------------------------------------------------------------------------

    def _judge_and_write(
        self,
        runs: list[HeartbeatRun],
        *,
        allow_retry: bool = True,
        ended: list[tuple[uuid.UUID, dict]],
        deferred: list[uuid.UUID],
    ) -> tuple[list[uuid.UUID], list[_Planned]]:
        """Judge the locked runs and write the batch; returns the runs newly detached and the
        runs failed as lost (in a dry run: those that would be). Runs whose agent ended while
        nobody watched go to `ended` with their exit report, to be finalized after commit;
        runs whose issue another transaction holds go to `deferred`, left for the next sweep."""
        issue_of_run = {run.id: _normalised_issue_id(run) for run in runs}
        batch_issues = set(issue_of_run.values()) - {None}
        closed_issues = _closed_issue_ids(batch_issues)
        busy_issues = set() if self.dry_run else _issues_held_elsewhere(batch_issues)
        markers: frozenset[str] | None = None
        planned: list[_Planned] = []
        for run, liveness, shim in zip(
            runs, self._probe_all(runs), self._probe_shims(runs), strict=True
        ):
            if issue_of_run[run.id] in busy_issues:
                deferred.append(run.id)
                continue
            if shim is Liveness.ALIVE:
                if self.supervisor_alive:
                    # Its host's supervisor adopts it on its next pass.
                    continue
                liveness = Liveness.ALIVE
            elif shim is not None:
                report = run_exit_report_read(run.log_ref) if run.log_ref else None
                if report is not None:
                    ended.append((run.id, report))
                    continue
            if liveness is Liveness.OTHER_HOST and not self.trust_other_leases:
                logger.info(
                    "run %s of host %s left for later: this host's own renewals just resumed",
                    run.id,
                    run.owner_host or run.process_host,
                )
                continue
            monitor_died = shim is not None and shim is not Liveness.ALIVE
            leftovers = False
            if liveness is not Liveness.ALIVE and self._is_local(run):
                if markers is None:
                    markers = process_control.live_markers()
                leftovers = str(run.id) in markers
            decision = reap_decide(
                liveness=liveness,
                leftovers=leftovers,
                detached_at=_detached_since(run),
                has_process_record=run.process_pid is not None or run.process_group_id is not None,
                retries_used=run.process_loss_retry_count,
                retry_limit=self.conf.process_loss_retry_limit if allow_retry else 0,
                issue_closed=issue_of_run[run.id] in closed_issues,
                now=self.now,
                detached_grace_sec=self.conf.detached_grace_sec,
                monitor_died=monitor_died,
            )
            if decision.verdict is ReapVerdict.WATCHED:
                continue
            message = reap_message(
                decision,
                pid=run.process_pid,
                pgid=run.process_group_id,
                owner_host=run.owner_host or run.process_host,
                detached_grace_sec=self.conf.detached_grace_sec,
                shim_pid=run.shim_pid,
                monitor_alive=shim is Liveness.ALIVE,
                lease_renewed_at=run.lease_renewed_at,
            )
            planned.append(_Planned(run=run, decision=decision, message=message))
        detach = [p for p in planned if p.decision.verdict is ReapVerdict.DETACHED]
        lose = [p for p in planned if p.decision.verdict is ReapVerdict.LOST]
        if self.dry_run:
            return [p.run.id for p in detach], lose
        detached = self._write_detached(detach) if detach else []
        return detached, self._write_lost(lose) if lose else []

    def _is_local(self, run: HeartbeatRun) -> bool:
        return (run.process_host or run.owner_host or self.host) == self.host

    def _probe_all(self, runs: list[HeartbeatRun]) -> list[Liveness | None]:
        """Each run's process by identity; None when no process was recorded on this host.

        A row without host or boot recorded (seeded by hand or an old version) is taken as
        local; without a start time only the run marker lets terminate_tree signal it.
        """
        identities = [self._identity(run) for run in runs]
        probed = iter(process_control.probe_all([i for i in identities if i is not None]))
        return [
            next(probed)
            if identity is not None
            else (None if self._is_local(run) else Liveness.OTHER_HOST)
            for run, identity in zip(runs, identities, strict=True)
        ]

    def _probe_shims(self, runs: list[HeartbeatRun]) -> list[Liveness | None]:
        """Each local run's shim by identity; None when the run has no shim recorded here."""
        identities = [run_shim_identity(run) if self._is_local(run) else None for run in runs]
        probed = iter(process_control.probe_all([i for i in identities if i is not None]))
        return [next(probed) if identity is not None else None for identity in identities]

    def _identity(self, run: HeartbeatRun) -> ProcessIdentity | None:
        return run_process_identity(run, host=self.host, boot_id=self.boot_id)

    def _write_detached(self, planned: list[_Planned]) -> list[uuid.UUID]:
        # Other hosts leave the run alone while this host watches it: its lease covers the grace.
        lease = self.now + timedelta(
            seconds=self.conf.detached_grace_sec + self.conf.lease_expiry_sec
        )
        won = dict(
            sql_execute(
                f"""
                UPDATE {HeartbeatRun._meta.db_table} AS r SET error_code = %(code)s,
                    error = v.error, detached_at = %(now)s, lease_expires_at = %(lease)s,
                    updated_at = %(now)s, event_seq = r.event_seq + 1
                FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(id uuid, error text)
                WHERE r.id = v.id AND r.status = 'running'
                    AND r.error_code IS DISTINCT FROM %(code)s
                RETURNING r.id, r.event_seq
                """,
                {
                    "code": RunErrorCode.PROCESS_DETACHED,
                    "now": self.now,
                    "lease": lease,
                    "rows": json_rows({"id": p.run.id, "error": p.message} for p in planned),
                },
            )
        )
        planned = [p for p in planned if p.run.id in won]
        run_events_insert(
            [
                _event(
                    p.run,
                    won[p.run.id],
                    HeartbeatRunEvent.Level.WARN,
                    p.message,
                    _process_payload(p.run),
                )
                for p in planned
            ],
            now=self.now,
        )
        activity_insert(
            [_activity(p, "heartbeat.run_detached", self.host) for p in planned], now=self.now
        )
        return [p.run.id for p in planned]

    def _write_lost(self, planned: list[_Planned]) -> list[_Planned]:
        # The compare-and-set from running fails the run and its wake in one statement; a run
        # that finished meanwhile is left alone.
        won = dict(
            sql_execute(
                f"""
                WITH failed AS (
                    UPDATE {HeartbeatRun._meta.db_table} AS r SET status = %(failed)s,
                        error_code = %(code)s, error = v.error, finished_at = %(now)s,
                        updated_at = %(now)s, event_seq = r.event_seq + 1
                    FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(id uuid, error text)
                    WHERE r.id = v.id AND r.status = 'running'
                    RETURNING r.id, r.event_seq, r.wakeup_request_id, v.error
                ), wakes AS (
                    UPDATE {AgentWakeupRequest._meta.db_table} AS w SET status = %(failed)s,
                        finished_at = %(now)s, error = failed.error, updated_at = %(now)s
                    FROM failed WHERE w.id = failed.wakeup_request_id
                )
                SELECT id, event_seq FROM failed
                """,
                {
                    "failed": WakeupStatus.FAILED,
                    "code": RunErrorCode.PROCESS_LOST,
                    "now": self.now,
                    "rows": json_rows({"id": p.run.id, "error": p.message} for p in planned),
                },
            )
        )
        planned = [p for p in planned if p.run.id in won]
        if not planned:
            return []
        for p in planned:
            p.run.status = RunStatus.FAILED
        retried = [p for p in planned if p.decision.retry]
        released = [p for p in planned if not p.decision.retry]
        events = self._insert_retries(retried) if retried else []
        if released:
            self._release_issues(released)
        events.extend(_lost_event(p, won[p.run.id]) for p in planned)
        run_events_insert(events, now=self.now)
        activity_insert(
            [_activity(p, "heartbeat.run_process_lost", self.host) for p in planned],
            now=self.now,
        )
        self._terminate_after_commit([p for p in planned if p.decision.terminate])
        return planned

    def _insert_retries(self, planned: list[_Planned]) -> list[EventRow]:
        """Queue one retry per run, in this transaction; run_one_retry_per_run backs it up.

        The wake and the run point at each other; the foreign keys are checked at commit.
        """
        for p in planned:
            p.retry_id, p.retry_wakeup_id = uuid.uuid4(), uuid.uuid4()
        # Paused agents' retries stay parked (queued, reference 3.2).
        leases = runs_dispatch_within_slots(
            [(p.retry_id, p.run.agent_id) for p in planned],
            runtime_configs={
                p.run.agent_id: p.run.agent.runtime_config
                for p in planned
                if p.run.agent.is_invokable
            },
            now=self.now,
        )
        sql_execute(
            f"""
            WITH src AS (
                SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(lost_id uuid,
                    retry_id uuid, wakeup_id uuid, context jsonb, lease timestamptz)
            ), wakes AS (
                INSERT INTO {AgentWakeupRequest._meta.db_table} (
                    id, company_id, agent_id, source, trigger_detail, reason, payload, status,
                    coalesced_count, requested_by_actor_type, run_id, requested_at, created_at,
                    updated_at)
                SELECT src.wakeup_id, r.company_id, r.agent_id, %(source)s, 'system', %(reason)s,
                    jsonb_strip_nulls(jsonb_build_object(
                        'issueId', r.context_snapshot ->> 'issueId', 'retryOfRunId', r.id::text)),
                    %(queued)s, 0, 'system', src.retry_id, %(now)s, %(now)s, %(now)s
                FROM src JOIN {HeartbeatRun._meta.db_table} AS r ON r.id = src.lost_id
            )
            INSERT INTO {HeartbeatRun._meta.db_table} (
                id, company_id, agent_id, invocation_source, trigger_detail, status,
                wakeup_request_id, context_snapshot, session_id_before, retry_of_run_id,
                process_loss_retry_count, event_seq, log_compressed, issue_comment_status,
                lease_expires_at, created_at, updated_at)
            SELECT src.retry_id, r.company_id, r.agent_id, %(source)s, 'system', %(queued)s,
                src.wakeup_id, src.context, r.session_id_before, r.id,
                r.process_loss_retry_count + 1, 1, false, 'not_applicable', src.lease,
                %(now)s, %(now)s
            FROM src JOIN {HeartbeatRun._meta.db_table} AS r ON r.id = src.lost_id
            """,
            {
                "rows": json_rows(
                    {
                        "lost_id": p.run.id,
                        "retry_id": p.retry_id,
                        "wakeup_id": p.retry_wakeup_id,
                        "context": retry_context(p.run.context_snapshot, lost_run_id=p.run.id),
                        "lease": lease,
                    }
                    for p, lease in zip(planned, leases, strict=True)
                ),
                "source": WakeSource.AUTOMATION,
                "reason": PROCESS_LOST_WAKE_REASON,
                "queued": WakeupStatus.QUEUED,
                "now": self.now,
            },
        )
        # The issue's execution lock moves to the retry only if it still names the lost run;
        # checkout_run stays on the lost run (the reference's tests require it).
        sql_execute(
            f"""
            UPDATE {Issue._meta.db_table} AS i SET execution_run_id = v.retry_id,
                execution_agent_name_key = v.name_key, execution_locked_at = %(now)s,
                updated_at = %(now)s
            FROM jsonb_to_recordset(%(rows)s::jsonb)
                AS v(lost_id uuid, retry_id uuid, name_key text)
            WHERE i.execution_run_id = v.lost_id
            """,
            {
                "now": self.now,
                "rows": json_rows(
                    {
                        "lost_id": p.run.id,
                        "retry_id": p.retry_id,
                        "name_key": agent_name_key(p.run.agent.name),
                    }
                    for p in planned
                ),
            },
        )
        return [
            EventRow(
                run_id=p.retry_id,
                company_id=p.run.company_id,
                agent_id=p.run.agent_id,
                seq=1,
                level=HeartbeatRunEvent.Level.WARN,
                message="Queued automatic retry after orphaned child process was confirmed dead",
                payload={"retryOfRunId": str(p.run.id)},
            )
            for p in planned
        ]

    def _release_issues(self, planned: list[_Planned]) -> None:
        """Release the issue locks the lost runs hold; promote deferred wakes where there are."""
        sql_execute(
            f"""
            UPDATE {Issue._meta.db_table} SET execution_run_id = NULL,
                execution_agent_name_key = NULL, execution_locked_at = NULL, updated_at = %(now)s
            WHERE execution_run_id = ANY(%(lost)s::uuid[])
            """,
            {"now": self.now, "lost": [p.run.id for p in planned]},
        )
        by_issue = {p.run.issue_id: p.run for p in planned if p.run.issue_id}
        if not by_issue:
            return
        waiting = set(
            _wakeups_of_issues(by_issue)
            .filter(status=WakeupStatus.DEFERRED_ISSUE_EXECUTION)
            .values_list("issue_key", flat=True)
            .distinct()
        )
        for issue_id in sorted(waiting):
            issue_release_and_promote(run=by_issue[issue_id], now=self.now)

    def _settle_agents(self, planned: list[_Planned]) -> None:
        """Agent status and runtime state, in one transaction after the batch committed (the
        documented lock order is agent before run, and the batch held runs).

        The batch form of agent_finalize_status and runtime_state_record for runs that failed
        without output or usage: two statements for all agents. An agent's first heartbeat
        goes through agent_finalize_status itself, which owns the first-heartbeat telemetry.
        """
        if not planned:
            return
        last_of_agent: dict[uuid.UUID, _Planned] = {}
        for p in planned:
            last_of_agent[p.run.agent_id] = p
        try:
            with transaction.atomic():
                settled = _agents_mark_failed(list(last_of_agent), now=self.now)
                for agent_id in sorted(set(last_of_agent) - settled):
                    agent_finalize_status(agent_id=agent_id, outcome=RunStatus.FAILED, now=self.now)
                _runtime_states_record_lost(list(last_of_agent.values()), now=self.now)
        except Exception:
            # The runs are failed and retried already; the agents settle on their next run.
            logger.exception("could not settle agents %s after reaping", list(last_of_agent))
        # Each lost run freed one of its agent's slots: a run parked at the cap may start now
        # instead of waiting for resume_queued_runs. One query finds the few agents that have
        # such a run (paused agents' retries stay parked, reference 3.2).
        # Only agents that could run at lock time are probed (a paused agent's retries stay
        # parked, and its resume starts them); the database checks the status again. The
        # EXISTS is in the select list, evaluated per agent: as a condition the planner made
        # it a join over every queued run, whose number grows with each batch of retries.
        invokable = [agent_id for agent_id, p in last_of_agent.items() if p.run.agent.is_invokable]
        if not invokable:
            return
        parked = HeartbeatRun.objects.filter(
            queued_parked_filter(timezone.now()), agent_id=OuterRef("id")
        )
        agents = (
            Agent.objects.filter(id__in=invokable)
            .exclude(status__in=NOT_INVOKABLE_AGENT_STATUSES)
            .annotate(has_parked=Exists(parked))
            .values_list("id", "has_parked")
        )
        waiting = [agent_id for agent_id, has_parked in agents if has_parked]
        for agent_id in sorted(waiting):
            agent_start_next_queued(agent_id=agent_id)

    def _terminate_after_commit(self, planned: list[_Planned]) -> None:
        targets = [(self._identity(p.run), str(p.run.id)) for p in planned]
        if targets:
            # Kills cannot be rolled back: only once the failure is committed.
            transaction.on_commit(
                partial(_terminate_leftovers, targets, self.conf.terminate_grace_sec)
            )


def _local_supervisor_alive(host: str, boot_id: str) -> bool:
    """Whether the run supervisor registered for this host is running now."""
    supervisor = (
        RunSupervisor.objects.filter(host=host, boot_id=boot_id, stopped_at__isnull=True)
        .values_list("pid", "process_started_at")
        .first()
    )
    if supervisor is None:
        return False
    pid, started_at = supervisor
    identity = ProcessIdentity(
        pid=pid, pgid=None, started_at=started_at, host=host, boot_id=boot_id
    )
    return process_control.probe(identity) is Liveness.ALIVE


def _agents_mark_failed(agent_ids: list[uuid.UUID], *, now: datetime) -> set[uuid.UUID]:
    """agent_finalize_status(outcome=failed) for agents that had a heartbeat before; returns
    the agents settled (paused and terminated ones count as settled: they stay as they are)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH locked AS (
                SELECT id, status FROM {Agent._meta.db_table}
                WHERE id = ANY(%s) AND last_heartbeat_at IS NOT NULL
                ORDER BY id FOR NO KEY UPDATE
            ), changed AS (
                UPDATE {Agent._meta.db_table} AS a SET
                    status = CASE WHEN EXISTS (
                        SELECT 1 FROM {HeartbeatRun._meta.db_table} AS r
                        WHERE r.agent_id = a.id AND r.status = 'running'
                    ) THEN 'running' ELSE 'error' END,
                    last_heartbeat_at = %s, updated_at = %s
                FROM locked
                WHERE a.id = locked.id AND locked.status NOT IN ('paused', 'terminated')
            )
            SELECT id FROM locked
            UNION SELECT id FROM {Agent._meta.db_table}
            WHERE id = ANY(%s) AND status IN ('paused', 'terminated')
            """,
            [agent_ids, now, now, agent_ids],
        )
        return {row[0] for row in cursor.fetchall()}


def _runtime_states_record_lost(planned: list[_Planned], *, now: datetime) -> None:
    """runtime_state_record for each agent's last lost run (no usage, no session): one upsert."""
    sql_execute(
        f"""
        INSERT INTO {AgentRuntimeState._meta.db_table} (
            agent_id, company_id, adapter_type, state_json, last_run_id, last_run_status,
            last_error, total_input_tokens, total_output_tokens, total_cached_input_tokens,
            total_cost_cents, created_at, updated_at)
        SELECT a.id, a.company_id, a.adapter_type, '{{}}'::jsonb, v.run_id, %(failed)s, v.error,
            0, 0, 0, 0, %(now)s, %(now)s
        FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(agent_id uuid, run_id uuid, error text)
        JOIN {Agent._meta.db_table} AS a ON a.id = v.agent_id
        ON CONFLICT (agent_id) DO UPDATE SET adapter_type = EXCLUDED.adapter_type,
            last_run_id = EXCLUDED.last_run_id, last_run_status = EXCLUDED.last_run_status,
            last_error = EXCLUDED.last_error, updated_at = EXCLUDED.updated_at
        """,
        {
            "failed": RunStatus.FAILED,
            "now": now,
            "rows": json_rows(
                {"agent_id": p.run.agent_id, "run_id": p.run.id, "error": p.message}
                for p in planned
            ),
        },
    )


def _terminate_leftovers(targets: list[tuple[ProcessIdentity | None, str]], grace: float) -> None:
    for identity, marker in targets:
        try:
            report = process_control.terminate_tree(identity, marker=marker, grace=grace)
            if report.survivors:
                logger.error("run %s: processes %s survived SIGKILL", marker, report.survivors)
        except Exception:
            logger.exception("terminating the leftovers of run %s failed", marker)


# --- SQL helpers --------------------------------------------------------------------------------


def _wakeups_of_issues(issue_ids: Iterable[str]) -> QuerySet[AgentWakeupRequest]:
    """Wakes whose payload names any of these issues, with the name as issue_key."""
    return AgentWakeupRequest.objects.annotate(issue_key=KT("payload__issueId")).filter(
        issue_key__in=list(issue_ids)
    )


def _normalised_issue_id(run: HeartbeatRun) -> str | None:
    try:
        return str(uuid.UUID(str(run.issue_id))) if run.issue_id else None
    except ValueError:
        return None


def _closed_issue_ids(issue_ids: set[str]) -> set[str]:
    if not issue_ids:
        return set()
    closed = Issue.objects.filter(id__in=issue_ids, status__in=_CLOSED_ISSUE_STATUSES)
    return {str(issue_id) for issue_id in closed.values_list("id", flat=True)}


def _issues_held_elsewhere(issue_ids: set[str]) -> set[str]:
    """Lock the batch's issues without waiting; return those another transaction holds.

    The engine locks issue before run (a wake joining a run holds the issue, then updates the
    run); the reaper already holds the runs, so waiting here for an issue would deadlock. A run
    whose issue is busy is left for the next sweep. One statement: each existing issue, and
    whether this transaction got its lock.
    """
    if not issue_ids:
        return set()
    rows = sql_execute(
        f"""
        SELECT issue.id, locked.id IS NULL FROM {Issue._meta.db_table} AS issue
        LEFT JOIN LATERAL (
            SELECT id FROM {Issue._meta.db_table} WHERE id = issue.id FOR UPDATE SKIP LOCKED
        ) AS locked ON TRUE
        WHERE issue.id = ANY(%(ids)s::uuid[])
        """,
        {"ids": sorted(issue_ids)},
    )
    return {str(issue_id) for issue_id, held_elsewhere in rows if held_elsewhere}


def _detached_since(run: HeartbeatRun) -> datetime | None:
    if run.error_code != RunErrorCode.PROCESS_DETACHED:
        return None
    # Rows marked by the reference (or by hand) carry no detached_at: count from the mark.
    return run.detached_at or run.updated_at


def _lost_event(p: _Planned, seq: int) -> EventRow:
    payload = _process_payload(p.run)
    message = p.message
    if p.decision.terminate:
        payload["descendantOnlyCleanup"] = True
    if p.retry_id is not None:
        payload["retryRunId"] = str(p.retry_id)
        message = message.removesuffix("; retrying once") + f"; queued retry {p.retry_id}"
    return _event(p.run, seq, HeartbeatRunEvent.Level.ERROR, message, payload)


def _process_payload(run: HeartbeatRun) -> dict:
    payload = {}
    if run.process_pid is not None:
        payload["processPid"] = run.process_pid
    if run.process_group_id is not None:
        payload["processGroupId"] = run.process_group_id
    return payload


def _event(run: HeartbeatRun, seq: int, level: str, message: str, payload: dict) -> EventRow:
    return EventRow(
        run_id=run.id,
        company_id=run.company_id,
        agent_id=run.agent_id,
        seq=seq,
        level=level,
        message=message,
        payload=payload,
    )


def _activity(p: _Planned, action: str, host: str) -> ActivityRow:
    details = {
        "verdict": p.decision.verdict.value,
        "error": p.message,
        "reapedBy": host,
        **_process_payload(p.run),
    }
    if p.decision.cause is not None:
        details["cause"] = p.decision.cause.value
        details["errorCode"] = RunErrorCode.PROCESS_LOST.value
    else:
        details["errorCode"] = RunErrorCode.PROCESS_DETACHED.value
    if p.run.issue_id:
        details["issueId"] = p.run.issue_id
    if p.decision.terminate:
        details["descendantsTerminated"] = True
    if p.retry_id:
        details["retryRunId"] = str(p.retry_id)
    return ActivityRow(
        company_id=p.run.company_id,
        actor_id="reaper",
        action=action,
        entity_type="heartbeat_run",
        entity_id=p.run.id,
        agent_id=p.run.agent_id,
        run_id=p.run.id,
        details=details,
    )
