"""The product's two entry points, runnable with nothing but Python 3.11+, pip and git:

    python3 -m paperclip start   # venv, install, embedded PostgreSQL, migrate, login, web + cluster
    python3 -m paperclip test    # venv, install, the whole pytest suite (extra args go to pytest)

This module uses only the standard library until it has re-executed itself inside the project's
virtual environment, because on a fresh machine nothing else is installed yet.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("PAPERCLIP_VENV") or ROOT / ".venv").resolve()
STAMP = VENV / ".paperclip-installed"
USAGE = "usage: python3 -m paperclip {start [--port N] [--demo] | test [pytest args...]}"


def say(message: str) -> None:
    print(f"paperclip: {message}", file=sys.stderr, flush=True)


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


def manage(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, **kwargs)


def uses_embedded_database() -> bool:
    return not os.environ.get("DATABASE_URL", "").strip()


def paperclip_home() -> Path:
    return Path(os.environ.get("PAPERCLIP_HOME") or ROOT / ".paperclip").resolve()


def stop_embedded_database() -> None:
    from paperclip import embedded_db

    if embedded_db.stop(paperclip_home()):
        say("embedded PostgreSQL stopped")


def wait_for_http(url: str, processes: list[subprocess.Popen], timeout: float = 180.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def stop_processes(processes: list[subprocess.Popen], grace: float = 15.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def command_start(args: list[str]) -> int:
    port = "8000"
    demo = False
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--port" and rest:
            port = rest.pop(0)
        elif arg == "--demo":
            demo = True
        else:
            say(f"unknown option {arg!r}; {USAGE}")
            return 2
    if not port.isdigit():
        say(f"--port takes a number, got {port!r}")
        return 2
    origin = f"http://127.0.0.1:{port}"
    os.environ.setdefault("PAPERCLIP_API_URL", origin)
    if uses_embedded_database():
        say(f"using the embedded PostgreSQL in {paperclip_home() / 'pgdata'}")
    if manage("migrate", "--noinput", "-v", "0").returncode != 0:
        return 1
    if manage("ensure_board_login").returncode != 0:
        return 1
    if demo and manage("seed_demo").returncode != 0:
        return 1
    # Interrupts are handled here: the children get TERM and shut down in order, not a raw
    # Ctrl-C that could cut a run's finalization short.
    web = ["-m", "gunicorn", "paperclip.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    web += ["--worker-class", "gthread", "--workers", "2", "--threads", "8"]
    # No control socket: its default path is per user, so two products on one host would collide.
    web += ["--access-logfile", "-", "--graceful-timeout", "10", "--no-control-socket"]
    processes = [
        subprocess.Popen([sys.executable, *web], cwd=ROOT, start_new_session=True),
        subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=ROOT, start_new_session=True
        ),
        # Watches this host's runs; they live under their own shims and outlive all of this.
        subprocess.Popen(
            [sys.executable, "manage.py", "supervise_runs"], cwd=ROOT, start_new_session=True
        ),
    ]
    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        if not wait_for_http(f"{origin}/admin/login/", processes):
            say("the web server did not come up; see the messages above")
            return 1
        say(f"ready: {origin}/admin/ (admin)  {origin}/api/ (API)  — Ctrl-C stops everything")
        while not stopping and all(p.poll() is None for p in processes):
            time.sleep(0.3)
        if not stopping:
            say("a component exited unexpectedly; stopping the product")
            return 1
        return 0
    finally:
        say("stopping the web server, the django-q2 cluster and the run supervisor")
        stop_processes(processes)
        if uses_embedded_database():
            stop_embedded_database()


def command_test(args: list[str]) -> int:
    from paperclip import embedded_db

    embedded_was_running = uses_embedded_database() and embedded_db.is_running(paperclip_home())
    try:
        return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=ROOT).returncode
    finally:
        # Leave a server that a running product uses alone; stop one that the tests started.
        if uses_embedded_database() and not embedded_was_running:
            stop_embedded_database()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"start", "test"}:
        say(USAGE)
        return 2
    ensure_venv(frozenset({"dev"}) if argv[0] == "test" else frozenset())
    if not in_project_venv():
        os.execv(str(venv_python()), [str(venv_python()), "-m", "paperclip", *argv])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paperclip.settings")
    command = command_start if argv[0] == "start" else command_test
    return command(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
