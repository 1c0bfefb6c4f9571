"""The reap sweep: page through the orphaned runs, judge each batch, hand it to the writer."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import cache

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet

from heartbeat import process_control
from heartbeat.conf import HeartbeatConf, heartbeat_conf
from heartbeat.models import HeartbeatRun, HeartbeatRunEvent, SweepKind
from heartbeat.process_control import Liveness
from heartbeat.run_log import run_exit_report_read
from heartbeat.services.events import run_event_append
from heartbeat.services.execution import run_finalize_from_report
from heartbeat.services.reaper.candidates import (
    issues_closed,
    issues_held_elsewhere,
    run_detached_since,
    run_issue_id_normalised,
    runs_reap_candidates,
    runs_with_dead_local_owner,
    supervisor_alive_on_host,
)
from heartbeat.services.reaper.decisions import ReapVerdict, reap_decide, reap_message
from heartbeat.services.reaper.writer import (
    ReapPlan,
    agents_settle_after_loss,
    runs_mark_detached,
    runs_mark_lost,
)
from heartbeat.services.runs import run_process_identity, run_shim_identity
from heartbeat.services.supervision import supervisor_renewing_since
from heartbeat.services.sweeps import (
    SweepLock,
    SweepPage,
    sweep_ids_shown,
    sweep_lock_scope,
    sweep_pages,
    sweep_run,
)

logger = logging.getLogger(__name__)

_RunKey = tuple[datetime, uuid.UUID]


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

    @property
    def noteworthy(self) -> bool:
        """Whether the sweep failed or detached a run, or could not process one."""
        return bool(self.reaped or self.detached or self.errors)

    def as_dict(self, *, max_ids: int | None = None) -> dict:
        """The JSON shape (commands' --json; sweep records and logs keep max_ids ids per list)."""
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        lists = ("run_ids", "detached_run_ids", "finalized_run_ids", "deferred_run_ids")
        return sweep_ids_shown(data, lists, max_ids)


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
    return sweep_run(
        kind=SweepKind.REAP,
        lock=SweepLock.REAP,
        host=host,
        scope=sweep_lock_scope(host),
        single_flight=single_flight,
        dry_run=dry_run,
        skipped=ReapResult(sweep_skipped=True, dry_run=dry_run),
        sweep_start=lambda started_at: _Sweep(
            conf=conf,
            now=now or started_at,
            host=host,
            boot_id=process_control.current_boot_id(),
            dry_run=dry_run,
            batch_size=batch_size or conf.sweep_batch_size,
            stale_threshold_sec=stale_threshold_sec,
        ),
    )


@dataclass
class _Outcome:
    """What one batch did: detached and lost runs, runs to finalize from their exit report
    after commit, and runs left for the next sweep because another transaction held their issue.
    """

    detached: list[uuid.UUID] = field(default_factory=list)
    lost: list[ReapPlan] = field(default_factory=list)
    ended: list[tuple[uuid.UUID, dict]] = field(default_factory=list)
    deferred: list[uuid.UUID] = field(default_factory=list)


@dataclass
class _Sweep:
    conf: HeartbeatConf
    now: datetime
    host: str
    boot_id: str
    dry_run: bool
    batch_size: int
    stale_threshold_sec: float
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
    candidates: QuerySet[HeartbeatRun] | None = None

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

    def run(self) -> None:
        self.supervisor_alive = supervisor_alive_on_host(host=self.host, boot_id=self.boot_id)
        renewing_since = supervisor_renewing_since(host=self.host)
        self.trust_other_leases = renewing_since is None or (
            self.now - renewing_since >= timedelta(seconds=self.conf.lease_expiry_sec)
        )
        dead_owners = runs_with_dead_local_owner(now=self.now, host=self.host, boot_id=self.boot_id)
        self.candidates = runs_reap_candidates(
            now=self.now,
            host=self.host,
            boot_id=self.boot_id,
            stale_threshold_sec=self.stale_threshold_sec,
            dead_owner_run_ids=dead_owners,
        )
        sweep_pages(
            what="reap",
            page_lock=self._page_lock,
            page_write=self._judge_and_write,
            committed=self._committed,
            item_redo=self._run_one,
        )

    def _page_lock(self, after: _RunKey | None) -> SweepPage[_RunKey, list[HeartbeatRun]] | None:
        page = self.candidates
        if after is not None:
            page = page.filter(Q(created_at__gt=after[0]) | Q(created_at=after[0], id__gt=after[1]))
        runs = list(self._lock(page)[: self.batch_size])
        if not runs:
            return None
        return SweepPage(
            locked=runs,
            item_ids=[run.id for run in runs],
            last_key=(runs[-1].created_at, runs[-1].id),
            more=len(runs) == self.batch_size,
        )

    def _run_one(self, run_id: uuid.UUID) -> None:
        """The batch of one: a run whose batch failed, in a transaction of its own."""
        for allow_retry in (True, False):
            try:
                with transaction.atomic():
                    runs = list(self._lock(self.candidates.filter(id=run_id)))
                    outcome = self._judge_and_write(runs, allow_retry=allow_retry)
                self._committed(outcome)
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

    def _committed(self, outcome: _Outcome) -> None:
        """Count a batch once its transaction committed (a rolled-back one is redone); then
        settle its agents and finalize its ended runs, each in transactions of their own."""
        self.detached.extend(outcome.detached)
        self.lost.extend(p.run.id for p in outcome.lost)
        if not self.dry_run:
            agents_settle_after_loss(outcome.lost, now=self.now)
        self.deferred.extend(outcome.deferred)
        self._finalize_ended(outcome.ended)

    def _finalize_ended(self, ended: list[tuple[uuid.UUID, dict]]) -> None:
        """Runs whose agent ended while nobody watched: the exit report says how."""
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

    def _judge_and_write(self, runs: list[HeartbeatRun], *, allow_retry: bool = True) -> _Outcome:
        """Judge the locked runs and write the batch (in a dry run: only judge it)."""
        outcome = _Outcome()
        issue_of_run = {run.id: run_issue_id_normalised(run) for run in runs}
        batch_issues = set(issue_of_run.values()) - {None}
        closed_issues = issues_closed(batch_issues)
        busy_issues = set() if self.dry_run else issues_held_elsewhere(batch_issues)
        # One scan of the process table per batch, and only when a run needs it.
        live_markers = cache(process_control.live_markers)
        planned: list[ReapPlan] = []
        for run, liveness, shim in zip(
            runs, self._probe_all(runs), self._probe_shims(runs), strict=True
        ):
            if issue_of_run[run.id] in busy_issues:
                outcome.deferred.append(run.id)
                continue
            plan = self._plan(
                run,
                liveness,
                shim,
                outcome=outcome,
                issue_closed=issue_of_run[run.id] in closed_issues,
                retry_limit=self.conf.process_loss_retry_limit if allow_retry else 0,
                live_markers=live_markers,
            )
            if plan is not None:
                planned.append(plan)
        detach = [p for p in planned if p.decision.verdict is ReapVerdict.DETACHED]
        lose = [p for p in planned if p.decision.verdict is ReapVerdict.LOST]
        if self.dry_run:
            outcome.detached, outcome.lost = [p.run.id for p in detach], lose
            return outcome
        if detach:
            outcome.detached = runs_mark_detached(
                detach, now=self.now, host=self.host, conf=self.conf
            )
        if lose:
            outcome.lost = runs_mark_lost(
                lose, now=self.now, host=self.host, boot_id=self.boot_id, conf=self.conf
            )
        return outcome

    def _plan(
        self,
        run: HeartbeatRun,
        liveness: Liveness | None,
        shim: Liveness | None,
        *,
        outcome: _Outcome,
        issue_closed: bool,
        retry_limit: int,
        live_markers: Callable[[], frozenset[str]],
    ) -> ReapPlan | None:
        """Judge one run: a plan to detach or fail it, or None when there is nothing to write
        now (its supervisor adopts it, it is watched, its exit report goes to outcome.ended)."""
        if shim is Liveness.ALIVE:
            if self.supervisor_alive:
                # Its host's supervisor adopts it on its next pass.
                return None
            liveness = Liveness.ALIVE
        elif shim is not None:
            report = run_exit_report_read(run.log_ref) if run.log_ref else None
            if report is not None:
                outcome.ended.append((run.id, report))
                return None
        if liveness is Liveness.OTHER_HOST and not self.trust_other_leases:
            logger.info(
                "run %s of host %s left for later: this host's own renewals just resumed",
                run.id,
                run.owner_host or run.process_host,
            )
            return None
        leftovers = (
            liveness is not Liveness.ALIVE and self._is_local(run) and str(run.id) in live_markers()
        )
        decision = reap_decide(
            liveness=liveness,
            leftovers=leftovers,
            detached_at=run_detached_since(run),
            has_process_record=run.process_pid is not None or run.process_group_id is not None,
            retries_used=run.process_loss_retry_count,
            retry_limit=retry_limit,
            issue_closed=issue_closed,
            now=self.now,
            detached_grace_sec=self.conf.detached_grace_sec,
            monitor_died=shim is not None and shim is not Liveness.ALIVE,
        )
        if decision.verdict is ReapVerdict.WATCHED:
            return None
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
        return ReapPlan(run=run, decision=decision, message=message)

    def _is_local(self, run: HeartbeatRun) -> bool:
        return (run.process_host or run.owner_host or self.host) == self.host

    def _probe_all(self, runs: list[HeartbeatRun]) -> list[Liveness | None]:
        """Each run's process by identity; None when no process was recorded on this host.

        A row without host or boot recorded is taken as local (see run_process_identity).
        """
        identities = [
            run_process_identity(run, host=self.host, boot_id=self.boot_id) for run in runs
        ]
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
