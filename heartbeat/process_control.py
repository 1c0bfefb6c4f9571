"""Spawn, probe and terminate run processes.

This is the only module in the product that touches psutil, signals, process groups and /proc;
everything else asks it questions in terms of a recorded ``ProcessIdentity``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import IO

import psutil

MARKER_ENV = "PAPERCLIP_RUN_MARKER"
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


class SpawnError(Exception):
    """The command could not be started (not found, not executable, bad working directory)."""


@dataclass
class SpawnedProcess:
    """A child started by spawn(); its owner reads the pipes and reaps it with wait()."""

    identity: ProcessIdentity
    popen: subprocess.Popen[bytes]
    stdout: IO[bytes]
    stderr: IO[bytes]

    def wait(self, timeout: float | None = None) -> int | None:
        """Reap the child and return its returncode, or None if it is still running at timeout."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def returncode(self) -> int | None:
        """The returncode if the child has exited (reaping it), else None."""
        return self.popen.poll()


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


def spawn(
    *,
    argv: Sequence[str],
    cwd: str | None,
    env: Mapping[str, str],
    marker: str,
    stdin_data: bytes | None = None,
) -> SpawnedProcess:
    """Start argv in its own session with piped output and the run marker in its environment."""
    if not argv:
        raise SpawnError("cannot start an empty command")
    command = argv[0]
    try:
        popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env={**env, MARKER_ENV: marker},
            stdin=subprocess.DEVNULL if stdin_data is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            # Its own session and group, so the whole tree can be found and signalled together.
            start_new_session=True,
        )
    except OSError as exc:
        if cwd is not None and exc.filename == cwd:
            reason = f"working directory {cwd!r}: {exc.strerror}"
        elif isinstance(exc, FileNotFoundError):
            reason = "command not found"
        else:
            reason = exc.strerror or str(exc)
        raise SpawnError(f"cannot start {command!r}: {reason}") from exc
    # The child stays unreaped until its owner waits, so its start time is readable even if it
    # has already exited; its pgid is its pid because it leads its new session.
    identity = ProcessIdentity(
        pid=popen.pid,
        pgid=popen.pid,
        started_at=_started_at(psutil.Process(popen.pid)),
        host=current_host(),
        boot_id=current_boot_id(),
    )
    if popen.stdin is not None:
        # Fed from a thread so a prompt larger than the pipe buffer cannot block the caller.
        threading.Thread(
            target=_feed, args=(popen.stdin, stdin_data), name=f"stdin-{popen.pid}", daemon=True
        ).start()
    assert popen.stdout is not None and popen.stderr is not None  # both were requested as PIPE
    return SpawnedProcess(identity=identity, popen=popen, stdout=popen.stdout, stderr=popen.stderr)


def exit_signal_name(returncode: int) -> str | None:
    """The name of the signal that ended a process (Popen reports it as -signum), else None."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"SIG{-returncode}"


def _feed(pipe: IO[bytes], data: bytes) -> None:
    # A child may exit without reading its input; that is its outcome to report, not ours.
    with contextlib.suppress(BrokenPipeError), pipe:
        pipe.write(data)


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
