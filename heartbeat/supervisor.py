"""The run supervisor of one host (`manage.py supervise_runs`; `start` runs it beside the web
server and the cluster). DESIGN "How runs execute".

Every run of the host executes under its own run shim; this one process watches them all:

- it takes over each run its host's workers launch, and on start adopts every live run of its
  host (whoever watched it before is gone), finalizing those that ended while it was away;
- it renews the leases of all its runs in one statement per interval;
- it learns of an agent's end the moment its shim exits (a pidfd per shim) and finalizes the
  run from the shim's exit report; a shim that died without a report goes to the reaper;
- it carries out cancels written by any host (the run left `running`) by asking the shim to
  stop, and terminates at once processes of its host whose runs already ended elsewhere
  (fencing: a run failed and retried by another host never has two agents);
- it follows log sizes and excerpts.

The database may go away at any time: nothing here kills an agent because of it. The loop keeps
watching shims, retries with backoff, logs the outage once, and finalizes what ended meanwhile
when the database is back.

Stopping it leaves the runs running (the next supervisor adopts them), unless it is asked to
stop them first (`start --stop-runs`): then it cancels them and watches until they have ended.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import threading
import time
import uuid
from collections.abc import Callable

from django.db import DatabaseError, InterfaceError, connection

from heartbeat import process_control
from heartbeat.conf import HeartbeatConf, heartbeat_conf
from heartbeat.process_control import ProcessIdentity, ProcessWatch
from heartbeat.run_log import run_exit_report_read, run_log_tail_excerpts
from heartbeat.services import supervision
from heartbeat.services.execution import run_finalize_from_report
from heartbeat.services.reaper import reap_orphaned_runs
from heartbeat.services.supervision import HostRun

logger = logging.getLogger(__name__)

# After a stop request, how long past the agent's grace a shim may take before its run's
# processes are terminated directly.
_STOP_SLACK_SEC = 30.0


class SupervisorAlreadyRunning(Exception):
    """Another run supervisor holds this host."""


class _Watched:
    __slots__ = ("log_ref", "log_size", "run_id", "shim", "watch")

    def __init__(
        self, run_id: uuid.UUID, shim: ProcessIdentity, log_ref: str | None, watch: ProcessWatch
    ) -> None:
        self.run_id = run_id
        self.shim = shim
        self.log_ref = log_ref
        self.watch = watch
        self.log_size = -1


class Supervisor:
    """The loop; `serve(stop)` runs it until stop is set. One per host (a database lock).

    `report` hears how it is doing (`ready`, `runs N` when the number of the host's runs in
    flight changes, `cancelled N`): the launcher's channel when `start` runs it.
    """

    def __init__(
        self, *, conf: HeartbeatConf | None = None, report: Callable[[str], None] | None = None
    ) -> None:
        self.conf = conf or heartbeat_conf()
        self.report = report or (lambda message: None)
        self.runs_in_flight: int | None = None
        self.identity: ProcessIdentity = process_control.self_identity()
        self.host, self.boot_id = self.identity.host, self.identity.boot_id
        self.selector = selectors.DefaultSelector()
        self.watched: dict[uuid.UUID, _Watched] = {}
        # Watched runs whose shim exited (with their log_ref): finalized on the next tick the
        # database allows.
        self.exited: dict[uuid.UUID, str | None] = {}
        # Runs that ended elsewhere whose shim was asked to stop: when to stop waiting for it.
        self.stopping: dict[uuid.UUID, float] = {}
        # Running runs whose shim died without a report: the reaper's to judge.
        self.dead_shims: set[uuid.UUID] = set()
        self.reap_wanted = False
        self.db_down_since: float | None = None
        self.db_retry_sec = 0.0
        # The last database outage: (how long it lasted, when it ended), for the events of runs
        # it concerned.
        self.last_outage: tuple[float, float] | None = None
        self.next_renewal = 0.0
        self.next_follow = 0.0
        self.next_fence_scan = 0.0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Claim the host, register, then adopt and finalize whatever its runs did meanwhile."""
        process_control.open_files_limit_raise()
        if not supervision.supervisor_lock_try(host=self.host):
            raise SupervisorAlreadyRunning(f"another run supervisor is running on {self.host}")
        supervision.supervisor_register(identity=self.identity)
        logger.info("run supervisor pid %s watching host %s", self.identity.pid, self.host)
        self.tick()
        self.report("ready")

    def serve(self, stop: threading.Event, *, stop_runs: threading.Event | None = None) -> None:
        """Watch until stop is set; then, if stop_runs is set too, stop the host's runs."""
        self.start()
        try:
            while not stop.is_set():
                self.wait(self.db_retry_sec or self.conf.supervisor_poll_interval_sec)
                if not stop.is_set():
                    self.tick()
            if stop_runs is not None and stop_runs.is_set():
                self.runs_stop()
        finally:
            self.close()

    def runs_stop(self) -> None:
        """Cancel every run of the host in flight and watch them until their shims have stopped
        them (bounded: the agent's TERM grace, the shim's slack, then the tree's)."""
        cancelled = supervision.runs_cancel_on_host(host=self.host, boot_id=self.boot_id)
        logger.info("cancelled %d run(s) of host %s", len(cancelled), self.host)
        self.report(f"cancelled {len(cancelled)}")
        deadline = (
            time.monotonic()
            + self.conf.adapter_grace_sec
            + _STOP_SLACK_SEC
            + self.conf.terminate_grace_sec
        )
        while (self.watched or self.exited) and time.monotonic() < deadline:
            self.wait(self.conf.supervisor_poll_interval_sec)
            self.tick()

    def close(self) -> None:
        """Stop watching; the runs go on under their shims and wait to be adopted."""
        for watched in self.watched.values():
            watched.watch.close()
        self.watched.clear()
        self.selector.close()
        try:
            left = supervision.runs_running_on_host(host=self.host, boot_id=self.boot_id)
            self.report(f"runs {len(left)}")
            supervision.supervisor_stopped(identity=self.identity)
            supervision.supervisor_lock_release(host=self.host)
        except DatabaseError:
            logger.warning("could not record the supervisor's stop: the database is away")
        logger.info("run supervisor pid %s stopped; runs keep running", self.identity.pid)

    def wait(self, timeout: float) -> None:
        """Sleep until a watched shim exits or timeout passes."""
        if not self.selector.get_map():
            time.sleep(timeout)
            return
        for key, _events in self.selector.select(timeout):
            watched = self._unwatch(key.data)
            self.exited[key.data] = watched.log_ref if watched else None

    def tick(self) -> None:
        """One pass over the host's runs; a database error ends the pass, never a run."""
        try:
            self._tick()
        except (DatabaseError, InterfaceError) as exc:
            self._database_failed(exc)
            return
        except Exception:
            # A bug must not end the watch over every run of the host: log it, back off, retry.
            logger.exception("run supervisor pass failed; retrying")
            self.db_retry_sec = self.conf.supervisor_db_retry_max_sec
            return
        self.db_retry_sec = 0.0
        if self.db_down_since is not None:
            self._database_back()

    # -- one pass -------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        running = {
            run.run_id: run
            for run in supervision.runs_running_on_host(host=self.host, boot_id=self.boot_id)
        }
        if len(running) != self.runs_in_flight:
            self.runs_in_flight = len(running)
            self.report(f"runs {len(running)}")
        self._finalize_exited(running)
        self._apply_ended_elsewhere(running)
        self._adopt(running)
        self._reap_dead_shims(running)
        self._escalate_stops(now)
        if now >= self.next_renewal:
            supervision.run_leases_renew(owner=self.identity, watching=len(self.watched))
            self.next_renewal = now + self.conf.lease_renew_interval_sec
        if now >= self.next_follow:
            self._follow_logs()
            self.next_follow = now + self.conf.log_follow_interval_sec
        if now >= self.next_fence_scan:
            self._fence_scan()
            self.next_fence_scan = now + self.conf.fence_scan_interval_sec

    def _finalize_exited(self, running: dict[uuid.UUID, HostRun]) -> None:
        for run_id, log_ref in sorted(self.exited.items()):
            report = run_exit_report_read(log_ref) if log_ref else None
            if report is not None:
                run_finalize_from_report(run_id=run_id, report=report)
            elif run_id in running:
                self._shim_died(run_id)
            del self.exited[run_id]
            self.stopping.pop(run_id, None)

    def _apply_ended_elsewhere(self, running: dict[uuid.UUID, HostRun]) -> None:
        """Watched runs no longer running in the database were cancelled (on any host) or
        failed elsewhere: their shims stop them now, and stay watched until they have."""
        for run_id, watched in self.watched.items():
            if run_id not in running and run_id not in self.stopping:
                logger.info("run %s ended elsewhere: its shim is asked to stop", run_id)
                self._stop(watched)

    def _stop(self, watched: _Watched) -> None:
        process_control.shim_stop(watched.shim)
        deadline = time.monotonic() + self.conf.adapter_grace_sec + _STOP_SLACK_SEC
        self.stopping[watched.run_id] = deadline

    def _adopt(self, running: dict[uuid.UUID, HostRun]) -> None:
        candidates: list[HostRun] = []
        watches: dict[uuid.UUID, ProcessWatch] = {}
        for run_id, run in running.items():
            if run_id in self.exited or run_id in self.dead_shims or run.shim is None:
                continue
            watched = self.watched.get(run_id)
            if watched is not None:
                # A reaper found the lease expired (the database was away) and marked it.
                if self._owned(run) and run.error_code != "process_detached":
                    continue
                candidates.append(run)
                continue
            watch = process_control.watch(run.shim)
            if watch is not None:
                watches[run_id] = watch
                candidates.append(run)
            elif run.log_ref and (report := run_exit_report_read(run.log_ref)) is not None:
                # It ended while nobody watched.
                run_finalize_from_report(run_id=run_id, report=report)
            else:
                self._shim_died(run_id)
        adopted = set(
            supervision.runs_adopt(
                runs=candidates, owner=self.identity, outage_note=self._outage_note()
            )
        )
        for run_id, watch in watches.items():
            run = running[run_id]
            if run_id in adopted and run.shim is not None:
                self.watched[run_id] = _Watched(run_id, run.shim, run.log_ref, watch)
                self.selector.register(watch, selectors.EVENT_READ, run_id)
            else:
                # Held by another transaction right now: the next tick tries again.
                watch.close()

    def _owned(self, run: HostRun) -> bool:
        return (
            run.owner_pid == self.identity.pid and run.owner_started_at == self.identity.started_at
        )

    def _shim_died(self, run_id: uuid.UUID) -> None:
        """The run's monitor is gone without saying how the agent ended: the reaper decides."""
        if run_id in self.dead_shims:
            return
        self.dead_shims.add(run_id)
        supervision.runs_relinquish(run_ids=[run_id], host=self.host, boot_id=self.boot_id)
        self.reap_wanted = True
        logger.warning("run %s: its shim died without an exit report", run_id)

    def _reap_dead_shims(self, running: dict[uuid.UUID, HostRun]) -> None:
        self.dead_shims &= set(running)
        if not self.reap_wanted:
            return
        result = reap_orphaned_runs(stale_threshold_sec=0)
        # Skipped: a sweep on this host holds the lock and will judge them; try again anyway.
        self.reap_wanted = result.sweep_skipped

    def _escalate_stops(self, now: float) -> None:
        for run_id, deadline in list(self.stopping.items()):
            if now < deadline:
                continue
            logger.warning("run %s: its shim did not stop in time; terminating its tree", run_id)
            self._unwatch(run_id)
            del self.stopping[run_id]
            process_control.terminate_tree(
                None, marker=str(run_id), grace=self.conf.terminate_grace_sec
            )

    def _unwatch(self, run_id: uuid.UUID) -> _Watched | None:
        watched = self.watched.pop(run_id, None)
        if watched is not None:
            self.selector.unregister(watched.watch)
            watched.watch.close()
        return watched

    def _follow_logs(self) -> None:
        progress = []
        for run_id, watched in self.watched.items():
            if not watched.log_ref or run_id in self.stopping:
                continue
            tail = run_log_tail_excerpts(watched.log_ref, max_chars=self.conf.excerpt_max_bytes)
            if tail is None or tail[0] == watched.log_size:
                continue
            watched.log_size = tail[0]
            progress.append((run_id, *tail))
        supervision.runs_log_progress_record(progress=progress)

    def _fence_scan(self) -> None:
        """Run shims of this host whose runs already ended in the database (failed and retried
        by another host while this one was away, or cancelled before this supervisor watched
        them) are stopped at once, and watched until they have, so their output is kept."""
        known = set(map(str, self.watched))
        markers = process_control.live_shim_markers() - known
        if not markers:
            return
        for ended in supervision.runs_ended_on_host(
            host=self.host, boot_id=self.boot_id, run_ids=sorted(markers)
        ):
            watch = process_control.watch(ended.shim) if ended.shim else None
            if watch is None or ended.shim is None:
                # No shim of ours to ask: whatever carries the run's marker goes.
                process_control.terminate_tree(
                    None, marker=str(ended.run_id), grace=self.conf.terminate_grace_sec
                )
            else:
                watched = _Watched(ended.run_id, ended.shim, ended.log_ref, watch)
                self.watched[ended.run_id] = watched
                self.selector.register(watch, selectors.EVENT_READ, ended.run_id)
                self._stop(watched)
            logger.warning(
                "fencing run %s (%s): its processes are stopped", ended.run_id, ended.status
            )
            supervision.run_fenced_record(
                run_id=ended.run_id,
                host=self.host,
                status=ended.status,
                outage_note=self._outage_note(),
            )

    # -- the database going away ----------------------------------------------------------------

    def _database_failed(self, exc: Exception) -> None:
        if self.db_down_since is None:
            self.db_down_since = time.monotonic()
            logger.error(
                "database unreachable (%s); runs keep running and are finalized when it is "
                "back; retrying",
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )
        self.db_retry_sec = min(
            max(self.db_retry_sec * 2, self.conf.supervisor_poll_interval_sec),
            self.conf.supervisor_db_retry_max_sec,
        )
        with contextlib.suppress(DatabaseError, InterfaceError):
            connection.close()

    def _outage_note(self) -> str | None:
        """What to tell about a database outage that ended within the last lease period."""
        if self.last_outage is None:
            return None
        lasted, ended = self.last_outage
        if time.monotonic() - ended > self.conf.lease_expiry_sec:
            return None
        return f"the database was unreachable from {self.host} for {lasted:.0f} s"

    def _database_back(self) -> None:
        assert self.db_down_since is not None  # only called after a failure
        now = time.monotonic()
        self.last_outage = (now - self.db_down_since, now)
        logger.warning("database reachable again after %.1f s", self.last_outage[0])
        self.db_down_since = None
        self.db_retry_sec = 0.0
        # The new session holds no lock: take the host again (a second supervisor that
        # started meanwhile keeps it, and this one steps down).
        if not supervision.supervisor_lock_try(host=self.host):
            raise SupervisorAlreadyRunning(f"another run supervisor took over {self.host}")
        self.next_renewal = 0.0
