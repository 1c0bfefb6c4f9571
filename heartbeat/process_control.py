"""Start run shims, probe, watch and terminate run processes.

This is the only module in the product that touches psutil, signals, process groups and /proc;
everything else asks it questions in terms of a recorded ``ProcessIdentity``. (The run shim,
heartbeat/shim/run_shim.py, is the one other program that handles an agent's processes: it runs
without the product.)
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import psutil

from heartbeat.shim.run_shim import MARKER_ENV, SHIM_ENV

_SHIM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")
# Run as a module imported from its own folder, so its byte code is cached (a script would be
# compiled at every start); -I -S: nothing but the standard library on its path.
_SHIM_MAIN = (
    f"import sys; sys.path[:0] = [{_SHIM_DIR!r}]; import run_shim; "
    "sys.exit(run_shim.main(sys.argv))"
)
HOST_NAME_ENV = "PAPERCLIP_HOST_NAME"
_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
# The wall-clock start time is the boot time (whole seconds in /proc/stat, recomputed from the
# wall clock) plus the start tick, so two readings of one process can differ by up to a second.
_START_TIME_TOLERANCE_SECONDS = 1.0
_POLL_SECONDS = 0.05
_KILL_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as recorded at spawn: pid alone is not identity, because pids are recycled."""

    pid: int
    pgid: int | None
    started_at: datetime | None
    host: str
    boot_id: str

    def __post_init__(self) -> None:
        # pid 0 and negative pids mean "my group" or "every process" to kill(2).
        if self.pid <= 0:
            raise ValueError(f"not a process id: {self.pid}")


class Liveness(StrEnum):
    """What a probe found at a recorded identity's pid."""

    ALIVE = "alive"
    DEAD = "dead"
    ZOMBIE = "zombie"
    REUSED = "reused"
    REBOOTED = "rebooted"
    OTHER_HOST = "other_host"

    @property
    def is_alive(self) -> bool:
        """True only when the recorded process itself is running."""
        return self is Liveness.ALIVE

    @property
    def is_dead(self) -> bool:
        """True when the recorded process is certainly gone (OTHER_HOST is neither)."""
        return self in _DEAD


# Zombies count as dead: PID 1 in these containers does not reap orphans, so they stay forever.
_DEAD = frozenset({Liveness.DEAD, Liveness.ZOMBIE, Liveness.REUSED, Liveness.REBOOTED})


@dataclass(frozen=True)
class KillReport:
    """Which pids terminate_tree signalled, and which outlived SIGKILL."""

    terminated: tuple[int, ...] = ()
    killed: tuple[int, ...] = ()
    survivors: tuple[int, ...] = ()

    @property
    def group_terminated(self) -> bool:
        """True if any process was signalled."""
        return bool(self.terminated or self.killed)


@dataclass(frozen=True)
class ShimStarted:
    """A run shim that reported back: its own identity and its agent's.

    agent is None for a run without a process (http), and when the agent could not be
    started (spawn_error says why).
    """

    shim: ProcessIdentity
    agent: ProcessIdentity | None
    spawn_error: str | None = None


class ShimStartError(Exception):
    """The run shim did not report back (it could not start, failed, or hung)."""


class ProcessWatch:
    """A pidfd of a watched process: readable once the process has exited (for a selector)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        os.close(self._fd)


def current_host() -> str:
    """This host's name; PAPERCLIP_HOST_NAME overrides it (tests simulate other hosts)."""
    return os.environ.get(HOST_NAME_ENV) or socket.gethostname()


def current_boot_id() -> str:
    """An id that changes when this host reboots."""
    try:
        with open(_BOOT_ID_PATH) as boot_id:
            return boot_id.read().strip()
    except OSError:
        return str(int(psutil.boot_time()))


def identity_of(pid: int) -> ProcessIdentity | None:
    """The identity of a live process now; None if it is gone or a zombie."""
    try:
        proc = psutil.Process(pid)
        return None if _is_zombie(proc) else _identity(proc)
    except (psutil.NoSuchProcess, ProcessLookupError):
        return None


def self_identity() -> ProcessIdentity:
    """The identity of this process (a worker records it as the owner of its runs)."""
    return _identity(psutil.Process())


def probe(identity: ProcessIdentity) -> Liveness:
    """Judge whether the recorded process is still the one running at its pid."""
    return _probe(identity, current_host(), current_boot_id())


def probe_all(identities: Iterable[ProcessIdentity]) -> list[Liveness]:
    """probe() for many identities (a sweep batch), reading this host's name and boot id once."""
    host, boot_id = current_host(), current_boot_id()
    return [_probe(identity, host, boot_id) for identity in identities]


def _probe(identity: ProcessIdentity, host: str, boot_id: str) -> Liveness:
    if identity.host != host:
        return Liveness.OTHER_HOST
    if identity.boot_id != boot_id:
        return Liveness.REBOOTED
    try:
        proc = psutil.Process(identity.pid)
        if identity.started_at is not None and not _same_start(
            _started_at(proc), identity.started_at
        ):
            return Liveness.REUSED
        return Liveness.ZOMBIE if _is_zombie(proc) else Liveness.ALIVE
    except psutil.NoSuchProcess:
        return Liveness.DEAD


def group_alive(pgid: int) -> bool:
    """True while a non-zombie member of the process group exists."""
    # kill(-pgid, 0) also succeeds for a group of unreaped zombies, so scan the table instead.
    return bool(_group_members(pgid))


def find_marked(marker: str) -> list[ProcessIdentity]:
    """Live processes whose environment carries PAPERCLIP_RUN_MARKER=marker."""
    found = []
    for proc in _marked_processes(marker):
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            found.append(_identity(proc))
    return found


def live_markers() -> frozenset[str]:
    """The PAPERCLIP_RUN_MARKER of every live process carrying one.

    One scan of the process table answers "is anything of run X still alive?" for a whole sweep
    batch; find_marked scans the table once per run.
    """
    markers = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            marker = proc.environ().get(MARKER_ENV)
            if marker and _is_live(proc):
                markers.add(marker)
    return frozenset(markers)


def terminate_tree(
    identity: ProcessIdentity | None, *, marker: str | None = None, grace: float = 2.0
) -> KillReport:
    """SIGTERM every process tied to the run, SIGKILL what outlives the grace, and report.

    Tied means: the recorded process if its identity still matches, its descendants, its
    process group when the group is provably the run's, and anything carrying the marker.
    """
    if identity is not None and probe(identity) in (Liveness.OTHER_HOST, Liveness.REBOOTED):
        return KillReport()
    protected = _protected_pids()
    root = _verified_root(identity, marker)
    group = _tied_group(identity, root, marker)
    targets = _sweep([root] if root is not None else [], group, marker, protected)
    terminated = [proc.pid for proc in targets if _send(proc, signal.SIGTERM)]
    _wait_until_gone(targets, time.monotonic() + grace)

    killed: dict[psutil.Process, None] = {}
    deadline = time.monotonic() + _KILL_WAIT_SECONDS
    while True:
        # Sweep again: a dying process may have forked, and setsid escapees may have appeared.
        targets = _sweep([proc for proc in targets if _is_live(proc)], group, marker, protected)
        if not targets or time.monotonic() >= deadline:
            break
        for proc in targets:
            if proc not in killed and _send(proc, signal.SIGKILL):
                killed[proc] = None
        time.sleep(_POLL_SECONDS)
    return KillReport(
        terminated=tuple(terminated),
        killed=tuple(proc.pid for proc in killed),
        survivors=tuple(proc.pid for proc in targets),
    )


def spawn_run_shim(
    *, spec: Mapping[str, Any], marker: str, shim_log_path: str, timeout: float
) -> ShimStarted:
    """Start a run shim for spec (see heartbeat/shim/run_shim.py) and wait for it to report.

    The shim starts in a session of its own and is re-parented away from this process at once,
    so the caller can return (or die) while the run goes on. Raises ShimStartError when no
    report arrives in time; whatever the shim started is then terminated.
    """
    read_end, write_end = os.pipe()
    try:
        with open(shim_log_path, "ab") as shim_log:
            popen = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _SHIM_MAIN, str(write_end)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=shim_log,
                env={"PATH": os.environ.get("PATH", os.defpath), MARKER_ENV: marker, SHIM_ENV: "1"},
                pass_fds=(write_end,),
                close_fds=True,
                start_new_session=True,
            )
        os.close(write_end)
        write_end = -1
        assert popen.stdin is not None  # requested as PIPE
        # The first process reads the spec, forks the monitor and exits; the monitor reports
        # once the agent has started (reading that report needs no polling, unlike a wait).
        with popen.stdin:
            popen.stdin.write(json.dumps(spec).encode())
        report = _read_line(read_end, deadline=time.monotonic() + timeout)
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    except OSError as exc:
        raise ShimStartError(f"cannot start the run monitor: {exc}") from exc
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if report is None or "shimPid" not in report or "shimError" in report:
        terminate_tree(None, marker=marker, grace=0)
        why = (report or {}).get("shimError") or "it did not report in time"
        raise ShimStartError(f"the run monitor did not start the run: {why}")
    host, boot_id = current_host(), current_boot_id()
    shim = ProcessIdentity(
        pid=report["shimPid"],
        pgid=None,
        started_at=_epoch(report.get("shimStartedAt")),
        host=host,
        boot_id=boot_id,
    )
    agent = None
    if report.get("agentPid"):
        # The agent leads its own session, so its group is its pid.
        agent = ProcessIdentity(
            pid=report["agentPid"],
            pgid=report["agentPid"],
            started_at=_epoch(report.get("agentStartedAt")),
            host=host,
            boot_id=boot_id,
        )
    return ShimStarted(shim=shim, agent=agent, spawn_error=report.get("spawnError"))


def shim_stop(identity: ProcessIdentity) -> bool:
    """Ask a run shim to stop its run (SIGTERM: it terminates the agent's tree and reports).

    Only a process that still has the recorded identity is signalled; False if none was.
    """
    if probe(identity) is not Liveness.ALIVE:
        return False
    try:
        return _send(psutil.Process(identity.pid), signal.SIGTERM)
    except psutil.NoSuchProcess:
        return False


def watch(identity: ProcessIdentity) -> ProcessWatch | None:
    """A pidfd that becomes readable when the process exits; None if it is not alive now."""
    try:
        fd = os.pidfd_open(identity.pid)
    except ProcessLookupError:
        return None
    # Opened before the probe: if the pid still has the recorded start time after, the pidfd
    # refers to that very process and not to a later one that reused the pid.
    if probe(identity) is not Liveness.ALIVE:
        os.close(fd)
        return None
    return ProcessWatch(fd)


def live_shim_markers() -> frozenset[str]:
    """The run markers of every live run shim on this host (fencing scans)."""
    markers = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            environ = proc.environ()
            marker = environ.get(MARKER_ENV)
            if marker and environ.get(SHIM_ENV) and _is_live(proc):
                markers.add(marker)
    return frozenset(markers)


def descendants_kill() -> int:
    """SIGKILL every descendant of this process (a stuck django-q2 cluster's last act, see
    heartbeat/cluster_watch.py); returns how many were signalled. Run shims are never among
    them: they leave their launcher's tree when they start."""
    killed = 0
    for proc in psutil.Process().children(recursive=True):
        if _send(proc, signal.SIGKILL):
            killed += 1
    return killed


def open_files_limit_raise() -> int:
    """Raise this process's open-file limit to its hard limit (a supervisor holds one pidfd
    per run); returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def _read_line(fd: int, *, deadline: float) -> dict | None:
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    try:
        return json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return None


def _epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def _identity(proc: psutil.Process) -> ProcessIdentity:
    return ProcessIdentity(
        pid=proc.pid,
        pgid=os.getpgid(proc.pid),
        started_at=_started_at(proc),
        host=current_host(),
        boot_id=current_boot_id(),
    )


def _started_at(proc: psutil.Process) -> datetime:
    return datetime.fromtimestamp(proc.create_time(), tz=UTC)


def _same_start(seen: datetime, recorded: datetime) -> bool:
    return abs((seen - recorded).total_seconds()) <= _START_TIME_TOLERANCE_SECONDS


def _is_zombie(proc: psutil.Process) -> bool:
    return proc.status() == psutil.STATUS_ZOMBIE


def _is_live(proc: psutil.Process) -> bool:
    # is_running() compares pid and start tick, so a recycled pid reads as gone.
    try:
        return proc.is_running() and not _is_zombie(proc)
    except psutil.NoSuchProcess:
        return False


def _carries_marker(proc: psutil.Process, marker: str) -> bool:
    try:
        return proc.environ().get(MARKER_ENV) == marker
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _marked_processes(marker: str) -> list[psutil.Process]:
    return [
        proc for proc in psutil.process_iter() if _carries_marker(proc, marker) and _is_live(proc)
    ]


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(proc.pid) == pgid and _is_live(proc):
                members.append(proc)
    return members


def _protected_pids() -> set[int]:
    # Never signal init, ourselves, or whatever we run under (the worker, its shell, pytest).
    me = psutil.Process()
    return {1, me.pid, *(parent.pid for parent in me.parents())}


def _verified_root(identity: ProcessIdentity | None, marker: str | None) -> psutil.Process | None:
    if identity is None or probe(identity) is not Liveness.ALIVE:
        return None
    try:
        root = psutil.Process(identity.pid)
    except psutil.NoSuchProcess:
        return None
    # Without a recorded start time only the marker ties this pid to the run.
    if identity.started_at is None and (marker is None or not _carries_marker(root, marker)):
        return None
    return root


def _tied_group(
    identity: ProcessIdentity | None, root: psutil.Process | None, marker: str | None
) -> int | None:
    # Our own group holds this worker and its siblings, never a run.
    if identity is None or identity.pgid is None or identity.pgid == os.getpgrp():
        return None
    if root is not None and root.pid == identity.pgid:
        return identity.pgid
    # The kernel does not hand out a pgid while any member of that group remains, so a member
    # carrying the run's marker proves the group is still the run's even after its leader died.
    if marker is not None and any(
        _carries_marker(member, marker) for member in _group_members(identity.pgid)
    ):
        return identity.pgid
    return None


def _sweep(
    seeds: Iterable[psutil.Process], group: int | None, marker: str | None, protected: set[int]
) -> list[psutil.Process]:
    # Keyed by psutil.Process, which hashes pid and start tick, so each process appears once.
    found: dict[psutil.Process, None] = {}
    for seed in seeds:
        found[seed] = None
        with contextlib.suppress(psutil.NoSuchProcess):
            found.update(dict.fromkeys(seed.children(recursive=True)))
    if group is not None:
        found.update(dict.fromkeys(_group_members(group)))
    if marker is not None:
        found.update(dict.fromkeys(_marked_processes(marker)))
    return [proc for proc in found if proc.pid not in protected and _is_live(proc)]


def _send(proc: psutil.Process, sig: signal.Signals) -> bool:
    """Signal proc if its pid still names the same live process; False if nothing was sent."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return False
    try:
        # The pidfd pins the process, so the identity check below cannot go stale before the
        # signal is delivered (a plain kill(pid) after the check could hit a recycled pid).
        if not _is_live(proc):
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        os.close(pidfd)


def _wait_until_gone(procs: Sequence[psutil.Process], deadline: float) -> None:
    while any(_is_live(proc) for proc in procs) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
