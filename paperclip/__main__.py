"""The product's two entry points, runnable with nothing but Python 3.11+, pip and git:

    python3 -m paperclip start   # venv, install, then the whole product, supervised
    python3 -m paperclip test    # venv with the development tools, the whole pytest suite

This module uses only the standard library, because on a fresh machine nothing else is installed
until it has re-executed itself inside the project's virtual environment (and then it asks
`paperclip.embedded_db` how to run the embedded PostgreSQL).

`start` is a small process supervisor (docs/design.md, "What `start` does"):

- One instance per PAPERCLIP_HOME: an OS file lock held for the launcher's whole life (the kernel
  drops it however the launcher ends), taken before anything is installed or started, and the
  web port bound by the launcher itself and handed to gunicorn, so a busy port is found first
  and the socket survives restarts of the web server.
- Its children (the embedded PostgreSQL, gunicorn, the django-q2 cluster, the run supervisor)
  each run in a session of their own and die with the launcher even when it is killed with
  SIGKILL (PR_SET_PDEATHSIG, the signal each one stops on). One that dies is restarted with
  backoff, after the rest of its process group is killed (django-q2's workers would otherwise
  outlive their cluster); one that keeps failing stops the product.
- Ctrl-C stops them in order, each with a bounded wait: web server, cluster, run supervisor,
  and the database last.

With heartbeat/process_control.py this is the only code that starts and signals processes, and
it signals only its own children. Agent runs are never among them: cluster workers start each
run's shim in a session of its own and it is re-parented away at once, so runs outlive the
launcher and are adopted by the next start.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import venv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from paperclip.launcher_channel import LAUNCHER_FD_ENV

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("PAPERCLIP_VENV") or ROOT / ".venv").resolve()
STAMP = VENV / ".paperclip-installed"
USAGE = (
    "usage: python3 -m paperclip {start [--port N] [--demo] [--stop-runs] | test [pytest args...]}"
)
# The instance lock and the listening socket, kept open across the re-exec into the venv.
HELD_FDS_ENV = "PAPERCLIP_LAUNCHER_HELD_FDS"

# Time for the children to come up once the database is migrated.
READY_TIMEOUT_SEC = 120.0
# How often a child that is not up yet is probed (database, web server).
PROBE_INTERVAL_SEC = 0.25
# A child that dies sooner than this after coming up (or before) failed to start; after
# MAX_FAILURES failures in a row the product stops instead of restarting it forever.
STABLE_AFTER_SEC = 10.0
MAX_FAILURES = 5
# Delay before the n-th restart in a row (as supervisord's backoff, but starting sooner: a
# restart after one crash should be back within seconds).
RESTART_DELAYS_SEC = (0.5, 1.0, 2.0, 4.0, 8.0)
# After the first Ctrl-C, how long a second one still cancels the runs in flight.
SECOND_INTERRUPT_SEC = 5.0
# How long a child killed after its stop timeout may take to be gone.
KILL_WAIT_SEC = 10.0

_PR_SET_PDEATHSIG = 1


def say(message: str) -> None:
    print(f"paperclip: {message}", file=sys.stderr, flush=True)


class Refused(Exception):
    """`start` refused before anything started; the message is the one line to print."""


# -- the virtual environment -------------------------------------------------------------------


def venv_python() -> Path:
    return VENV / "bin" / "python"


def in_project_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV


def install_fingerprint() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def installed_extras(fingerprint: str) -> frozenset[str] | None:
    """The extras installed for this pyproject.toml, or None when it was never installed."""
    if not STAMP.exists():
        return None
    installed_for, _, extras = STAMP.read_text().partition(" ")
    if installed_for != fingerprint:
        return None
    return frozenset(extras.split(",")) - {""}


def ensure_venv(extras: frozenset[str]) -> None:
    """Create the venv, and install the project with `extras` when pyproject.toml changed or
    they are missing (`start` needs none; `test` needs the development tools)."""
    if not venv_python().exists():
        say(f"creating a virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    fingerprint = install_fingerprint()
    installed = installed_extras(fingerprint)
    if installed is not None and extras <= installed:
        return
    say("installing dependencies (first run: about a minute)")
    pip = [str(venv_python()), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    target = f"{ROOT}[{','.join(sorted(extras))}]" if extras else str(ROOT)
    subprocess.run([*pip, "install", "-e", target], check=True)
    STAMP.write_text(f"{fingerprint} {','.join(sorted(extras))}")


def uses_embedded_database() -> bool:
    return not os.environ.get("DATABASE_URL", "").strip()


def paperclip_home() -> Path:
    return Path(os.environ.get("PAPERCLIP_HOME") or ROOT / ".paperclip").resolve()


def shown(path: Path) -> str:
    """A path as the person at the terminal can type it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# -- one instance per PAPERCLIP_HOME -----------------------------------------------------------


@dataclass
class Instance:
    """What makes this launcher the instance of its PAPERCLIP_HOME: the locked file (the lock
    lives as long as this descriptor) and the socket its web server listens on."""

    lock_fd: int
    listener: socket.socket

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def hold_across_exec(self) -> None:
        for fd in (self.lock_fd, self.listener.fileno()):
            os.set_inheritable(fd, True)
        os.environ[HELD_FDS_ENV] = f"{self.lock_fd},{self.listener.fileno()}"


def instance_claim(home: Path, port: int) -> Instance:
    """Lock PAPERCLIP_HOME and bind the port, or refuse (touching nothing of the instance that
    holds them)."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(home / "launcher.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise Refused(
            f"cannot use PAPERCLIP_HOME {home}: {exc.strerror}; "
            "set PAPERCLIP_HOME to a writable folder"
        ) from exc
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(lock_fd)
        os.close(lock_fd)
        raise Refused(
            f"already running for {home}{holder}; stop that one first (Ctrl-C in its terminal)"
        ) from None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        os.close(lock_fd)
        if exc.errno == errno.EADDRINUSE:
            raise Refused(
                f"port {port} is in use by another program; stop it, or start on another "
                f"port: python3 -m paperclip start --port {port + 1}"
            ) from exc
        raise Refused(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from exc
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, json.dumps({"pid": os.getpid(), "url": f"http://127.0.0.1:{port}/"}).encode())
    return Instance(lock_fd, listener)


def instance_resume() -> Instance | None:
    """The instance claimed before the re-exec into the venv, if this process is that one."""
    held = os.environ.pop(HELD_FDS_ENV, None)
    if not held:
        return None
    lock_fd, listener_fd = (int(fd) for fd in held.split(","))
    for fd in (lock_fd, listener_fd):
        os.set_inheritable(fd, False)
    return Instance(lock_fd, socket.socket(fileno=listener_fd))


def _lock_holder(lock_fd: int) -> str:
    try:
        holder = json.loads(os.pread(lock_fd, 4096, 0))
        return f" (pid {holder['pid']}, {holder['url']})"
    except (OSError, ValueError, KeyError, TypeError):
        # The other launcher has not written it yet.
        return ""


# -- children ----------------------------------------------------------------------------------


def die_with_launcher(signum: int) -> Callable[[], None]:
    """A preexec_fn: the child gets `signum` when the launcher dies, however it dies."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    launcher_pid = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum)
        # The launcher died before the line above: nobody would send it.
        if os.getppid() != launcher_pid:
            os._exit(1)

    return preexec


@dataclass(eq=False)
class Child:
    """One supervised process of the product, and what the launcher knows of it."""

    name: str
    argv: list[str]
    # It stops on this signal, and gets it when the launcher dies.
    stop_signal: signal.Signals
    stop_timeout: float
    # Whether it is up, asked of its pid; None: the child says so itself (`ready`).
    probe: Callable[[int], bool] | None = None
    needs_database: bool = True
    user: str | None = None
    pass_fds: tuple[int, ...] = ()
    # Where its output goes (default: the launcher's stdout and stderr).
    log_path: Path | None = None

    process: subprocess.Popen | None = None
    pidfd: int = -1
    channel: int = -1
    heard: bytes = b""
    ready: bool = False
    started_at: float = 0.0
    ready_at: float = 0.0
    stopping: bool = False
    down_since: float | None = None
    failures: int = 0
    restart_at: float | None = None

    @property
    def running(self) -> bool:
        return self.process is not None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


class Launcher:
    """Starts the children, restarts those that die, stops them in order."""

    def __init__(
        self,
        *,
        database: Child | None,
        web: Child,
        cluster: Child,
        supervisor: Child,
        env: dict[str, str],
    ) -> None:
        self.database = database
        self.web, self.cluster, self.supervisor = web, cluster, supervisor
        self.children = [c for c in (database, web, cluster, supervisor) if c is not None]
        self.env = env
        self.selector = selectors.DefaultSelector()
        self.signals: list[int] = []
        self.interrupted_at: float | None = None
        self.stop_requested = False
        self.stop_runs = False
        self.failure: str | None = None
        self.runs_in_flight = 0
        self.runs_cancelled: int | None = None
        self.next_probe = 0.0

    # -- the loop ------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        # Without a wakeup fd, a signal would only be seen when select() times out.
        signal.set_wakeup_fd(wake_w)
        self.selector.register(wake_r, selectors.EVENT_READ, lambda: _drain(wake_r))
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, frame: self.signals.append(signum))

    def wait_until(self, done: Callable[[], bool], timeout: float | None = None) -> bool:
        """Supervise until done() holds or the timeout passes; whether it holds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            self.step(min(PROBE_INTERVAL_SEC, deadline - now) if deadline else PROBE_INTERVAL_SEC)
        return True

    def halted(self) -> bool:
        """A stop was requested or the product failed: time to stop."""
        return self.stop_requested or self.failure is not None

    def step(self, timeout: float) -> None:
        for key, _events in self.selector.select(timeout):
            # An earlier event of this batch may have closed it (a child's exit, its channel).
            if key.fd in self.selector.get_map():
                key.data()
        while self.signals:
            self.on_signal(self.signals.pop(0))
        now = time.monotonic()
        if now >= self.next_probe:
            self.next_probe = now + PROBE_INTERVAL_SEC
            for child in self.children:
                if child.running and not child.ready and child.probe and child.probe(child.pid):
                    self.became_ready(child)
        if not self.stop_requested:
            for child in self.children:
                if child.restart_at is not None and now >= child.restart_at:
                    self.restart_when_possible(child)

    def on_signal(self, signum: int) -> None:
        now = time.monotonic()
        if not self.stop_requested:
            self.stop_requested = True
            if signum == signal.SIGINT:
                self.interrupted_at = now
            self.say_stopping()
        elif (
            signum == signal.SIGINT
            and self.interrupted_at is not None
            and now - self.interrupted_at <= SECOND_INTERRUPT_SEC
            and self.runs_in_flight
            and not self.stop_runs
        ):
            if self.supervisor.stopping or not self.supervisor.running:
                say("too late to cancel the runs: the run supervisor has already left them")
            else:
                self.stop_runs = True
                say("the agent runs in flight are cancelled before the run supervisor stops")

    def say_stopping(self) -> None:
        if self.stop_runs:
            say("stopping; the agent runs in flight are cancelled first")
        elif self.runs_in_flight and self.interrupted_at is not None:
            say(
                f"stopping; {self.runs_in_flight} agent run(s) in flight keep running and the "
                f"next start adopts them (Ctrl-C again within {SECOND_INTERRUPT_SEC:g} s "
                "cancels them)"
            )
        else:
            say("stopping")

    # -- one child -----------------------------------------------------------------------------

    def start(self, child: Child) -> None:
        read_end, write_end = os.pipe()
        for fd in (read_end, write_end):
            os.set_blocking(fd, False)
        output = child.log_path.open("ab") if child.log_path else None
        try:
            process = subprocess.Popen(
                child.argv,
                cwd=ROOT,
                env={**self.env, LAUNCHER_FD_ENV: str(write_end)},
                pass_fds=(write_end, *child.pass_fds),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
                preexec_fn=die_with_launcher(child.stop_signal),
                user=child.user,
            )
        except OSError:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
            if output:
                output.close()
        child.process = process
        child.pidfd = os.pidfd_open(process.pid)
        child.channel = read_end
        child.heard = b""
        child.ready = child.stopping = False
        child.started_at = time.monotonic()
        child.restart_at = None
        self.selector.register(child.pidfd, selectors.EVENT_READ, lambda: self.exited(child))
        self.selector.register(read_end, selectors.EVENT_READ, lambda: self.listen(child))

    def listen(self, child: Child) -> None:
        try:
            child.heard += os.read(child.channel, 4096)
        except BlockingIOError:
            return
        *lines, child.heard = child.heard.split(b"\n")
        for line in lines:
            word, _, number = line.decode(errors="replace").partition(" ")
            if word == "ready" and not child.ready:
                self.became_ready(child)
            elif word == "runs" and number.isdigit():
                self.runs_in_flight = int(number)
            elif word == "cancelled" and number.isdigit():
                self.runs_cancelled = int(number)

    def became_ready(self, child: Child) -> None:
        child.ready = True
        child.ready_at = time.monotonic()
        if child.down_since is not None:
            say(
                f"{child.name} is back (pid {child.pid}), "
                f"{child.ready_at - child.down_since:.1f} s after it went down"
            )
            child.down_since = None

    def exited(self, child: Child) -> None:
        """The child is gone (a zombie until reaped here): its group's leftovers go too."""
        assert child.process is not None
        pid = child.pid
        # Reaping comes after: until then no new process can take the pid, so the group
        # signalled is this child's. django-q2's sentinel and workers outlive a killed cluster.
        _kill_group(pid)
        returncode = child.process.wait()
        self.listen(child)
        for fd in (child.pidfd, child.channel):
            self.selector.unregister(fd)
            os.close(fd)
        child.process = None
        now = time.monotonic()
        if child.stopping or self.stop_requested:
            return
        up_for = now - child.ready_at if child.ready else 0.0
        child.failures = 1 if up_for >= STABLE_AFTER_SEC else child.failures + 1
        child.ready = False
        child.down_since = child.down_since or now
        why = f"(pid {pid}) {_exit_reason(returncode)} after {now - child.started_at:.1f} s"
        if child.failures > MAX_FAILURES:
            say(f"{child.name} {why}")
            self.fail(f"{child.name} keeps failing ({MAX_FAILURES} restarts in a row)")
            return
        delay = RESTART_DELAYS_SEC[min(child.failures, len(RESTART_DELAYS_SEC)) - 1]
        say(f"{child.name} {why}; restarting it in {delay:g} s")
        child.restart_at = now + delay

    def restart_when_possible(self, child: Child) -> None:
        # Nothing that needs the database is started while it is down: it could only fail.
        if child.needs_database and self.database is not None and not self.database.ready:
            return
        try:
            self.start(child)
        except OSError as exc:
            self.fail(f"cannot start {child.name}: {exc}")

    def stop(self, child: Child, signum: signal.Signals | None = None) -> None:
        """Stop the child and wait for it (bounded: its stop timeout, then SIGKILL)."""
        child.restart_at = None
        if not child.running:
            return
        child.stopping = True
        pid, began = child.pid, time.monotonic()
        os.kill(pid, signum or child.stop_signal)
        self.wait_for_exit(child, child.stop_timeout)
        if child.running:
            say(f"{child.name} (pid {pid}) did not stop within {child.stop_timeout:g} s; killed")
            _kill_group(pid)
            self.wait_for_exit(child, KILL_WAIT_SEC)
        say(f"{child.name} stopped (pid {pid}, {time.monotonic() - began:.1f} s)")

    def wait_for_exit(self, child: Child, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while child.running and time.monotonic() < deadline:
            self.step(min(PROBE_INTERVAL_SEC, deadline - time.monotonic()))

    def fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = message
            say(f"{message}; stopping the product")

    # -- the product ---------------------------------------------------------------------------

    def run(self, one_offs: list[OneOff], on_ready: Callable[[], None]) -> int:
        """Start everything, supervise until stopped; the exit status."""
        self.install_signal_handlers()
        try:
            if self.database is not None:
                self.start(self.database)
                if not self.wait_until(
                    lambda: self.database.ready or self.halted(), READY_TIMEOUT_SEC
                ):
                    self.fail(f"{self.database.name} did not come up; see its log")
                if self.halted():
                    return self.exit_status()
            for one_off in one_offs:
                if not self.run_once(one_off):
                    return self.exit_status()
            for child in (self.web, self.cluster, self.supervisor):
                self.start(child)
            if not self.wait_until(
                lambda: all(child.ready for child in self.children) or self.halted(),
                READY_TIMEOUT_SEC,
            ):
                waiting = ", ".join(c.name for c in self.children if not c.ready)
                self.fail(f"not up within {READY_TIMEOUT_SEC:g} s: {waiting}")
            if not self.halted():
                on_ready()
                self.wait_until(self.halted)
            return self.exit_status()
        finally:
            self.stop_all()

    def exit_status(self) -> int:
        return 1 if self.failure else 0

    def run_once(self, one_off: OneOff) -> bool:
        """Run a one-off command (migrate, ...) to its end while supervising; whether it
        succeeded. A stop requested meanwhile stops it."""
        process = subprocess.Popen(
            one_off.argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=one_off.stdout,
            start_new_session=True,
            preexec_fn=die_with_launcher(signal.SIGTERM),
        )
        if not self.wait_until(lambda: process.poll() is not None or self.halted()):
            return False
        if process.returncode is None:
            process.terminate()
            process.wait()
            return False
        if process.returncode != 0:
            self.fail(f"`manage.py {one_off.argv[2]}` failed; see the messages above")
            return False
        return True

    def stop_all(self) -> None:
        """Web server, cluster, run supervisor, each with a bounded wait; the database last,
        once nothing that uses it is left."""
        self.stop_requested = True
        self.stop(self.web)
        self.stop(self.cluster)
        if self.interrupted_at is not None and self.runs_in_flight and self.supervisor.running:
            # A second Ctrl-C may still come, and the supervisor is the one to cancel the runs.
            self.wait_until(
                lambda: self.stop_runs,
                self.interrupted_at + SECOND_INTERRUPT_SEC - time.monotonic(),
            )
        self.stop(self.supervisor, signal.SIGUSR1 if self.stop_runs else None)
        if self.database is not None:
            self.stop(self.database)
        if self.runs_cancelled is not None:
            say(f"stopped; cancelled {self.runs_cancelled} agent run(s)")
        elif self.runs_in_flight:
            say(
                f"stopped; {self.runs_in_flight} agent run(s) keep running under their run "
                "shims, and the next start adopts them"
            )
        else:
            say("stopped")


@dataclass(frozen=True)
class OneOff:
    """A command run to its end before the children start (migrate, ...)."""

    argv: list[str]
    stdout: IO[bytes] | None = None


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        return


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


# -- the two commands --------------------------------------------------------------------------


@dataclass(frozen=True)
class StartOptions:
    port: int = 8000
    demo: bool = False
    stop_runs: bool = False


def start_options(args: list[str]) -> StartOptions:
    options = StartOptions()
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--port" and rest and rest[0].isdigit() and 0 < int(rest[0]) < 65536:
            options = StartOptions(int(rest.pop(0)), options.demo, options.stop_runs)
        elif arg == "--demo":
            options = StartOptions(options.port, True, options.stop_runs)
        elif arg == "--stop-runs":
            options = StartOptions(options.port, options.demo, True)
        else:
            raise Refused(f"cannot use {arg!r} here; {USAGE}")
    return options


def command_start(options: StartOptions, instance: Instance) -> int:
    home = paperclip_home()
    origin = f"http://127.0.0.1:{instance.port}"
    env = {**os.environ, "PAPERCLIP_API_URL": os.environ.get("PAPERCLIP_API_URL", origin)}
    python = sys.executable
    database = None
    if uses_embedded_database():
        from paperclip import embedded_db

        try:
            if embedded_db.stop(home):
                say("an embedded PostgreSQL started outside `start` was stopped; it runs here now")
            server = embedded_db.server_command(home)
        except embedded_db.ConfigurationError as exc:
            say(str(exc))
            return 1
        say(f"using the embedded PostgreSQL in {embedded_db.pgdata_path(home)}")
        env[embedded_db.LAUNCHER_SOCKET_ENV] = server.socket_dir
        database = Child(
            "embedded PostgreSQL",
            server.argv,
            # Fast shutdown: clients are disconnected, the data is checkpointed.
            signal.SIGINT,
            stop_timeout=30.0,
            probe=lambda pid: embedded_db.accepting_connections(home, pid),
            needs_database=False,
            user=server.user,
            log_path=server.log_path,
        )
    listener_fd = instance.listener.fileno()
    gunicorn = [python, "-m", "gunicorn", "paperclip.wsgi:application"]
    gunicorn += ["--bind", f"fd://{listener_fd}", "--worker-class", "gthread"]
    gunicorn += ["--workers", "2", "--threads", "8", "--access-logfile", "-"]
    # No control socket: its default path is per user, so two products on one host would collide.
    gunicorn += ["--graceful-timeout", "10", "--no-control-socket"]
    web = Child(
        "web server",
        gunicorn,
        signal.SIGTERM,
        stop_timeout=15.0,
        probe=lambda pid: _answers(f"{origin}/api/health"),
        pass_fds=(listener_fd,),
    )
    cluster = Child("django-q2 cluster", [python, "manage.py", "run_cluster"], signal.SIGTERM, 30.0)
    # Its stop timeout covers cancelling the runs first: the agent's TERM grace and the shim's.
    supervisor = Child(
        "run supervisor", [python, "manage.py", "supervise_runs"], signal.SIGTERM, 60.0
    )
    launcher = Launcher(database=database, web=web, cluster=cluster, supervisor=supervisor, env=env)
    launcher.stop_runs = options.stop_runs
    with tempfile.TemporaryFile() as login:
        one_offs = [
            OneOff([python, "manage.py", "migrate", "--noinput", "-v", "0"]),
            OneOff([python, "manage.py", "ensure_board_login"], stdout=login),
        ]
        if options.demo:
            one_offs.append(OneOff([python, "manage.py", "seed_demo"]))

        def on_ready() -> None:
            manage = f"{shown(venv_python())} {shown(ROOT / 'manage.py')}"
            say(f"ready: {origin}/admin/ (admin, dashboard) and {origin}/api/ (API)")
            login.seek(0)
            say(login.read().decode().strip())
            say(
                f"API credentials: `{manage} create_board_token` (a board token), "
                f"`{manage} create_agent_key AGENT` (an agent's key)"
            )
            say(
                "Ctrl-C stops the product; agent runs in flight keep running (a second Ctrl-C "
                "or `start --stop-runs` cancels them)"
            )

        return launcher.run(one_offs, on_ready)


# The probe asks this host's own socket: never through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        # It answered (503 while the database is down): the web server is up.
        return True
    except OSError:
        return False


def command_test(args: list[str]) -> int:
    from paperclip import embedded_db

    embedded_was_running = uses_embedded_database() and embedded_db.is_running(paperclip_home())
    pytest = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=ROOT)
    # A SIGTERM for this command (a CI timeout, a supervisor) must reach pytest too: it would
    # otherwise run on as an orphan, its real processes and databases with it.
    signal.signal(signal.SIGTERM, lambda signum, frame: pytest.send_signal(signum))
    try:
        while True:
            try:
                return pytest.wait()
            except KeyboardInterrupt:
                # The terminal's Ctrl-C reached pytest as well: let it report and end.
                continue
    finally:
        # Leave a server that a running product uses alone; stop one that the tests started.
        stop = uses_embedded_database() and not embedded_was_running
        if stop and embedded_db.stop(paperclip_home()):
            say("embedded PostgreSQL stopped")


def main(argv: list[str]) -> int:
    try:
        return run_command(argv)
    except KeyboardInterrupt:
        # Ctrl-C while installing or preparing, before the launcher handles it itself.
        say("interrupted")
        return 130


def run_command(argv: list[str]) -> int:
    if not argv or argv[0] not in {"start", "test"}:
        say(USAGE)
        return 2
    instance = None
    if argv[0] == "start":
        try:
            options = start_options(argv[1:])
        except Refused as exc:
            say(str(exc))
            return 2
        try:
            # Before installing anything: a second start must not touch the first's venv.
            instance = instance_resume() or instance_claim(paperclip_home(), options.port)
        except Refused as exc:
            say(str(exc))
            return 1
    ensure_venv(frozenset({"dev"}) if argv[0] == "test" else frozenset())
    if not in_project_venv():
        if instance is not None:
            instance.hold_across_exec()
        os.execv(str(venv_python()), [str(venv_python()), "-m", "paperclip", *argv])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paperclip.settings")
    if instance is not None:
        return command_start(options, instance)
    return command_test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
