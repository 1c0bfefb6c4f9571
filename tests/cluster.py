"""The product's long-running processes on the test database, for end-to-end tests: a real
django-q2 cluster (`manage.py qcluster`), a real run supervisor (`manage.py supervise_runs`)
and the production web server (gunicorn).

Each reaches the test database through PAPERCLIP_DB_NAME (same server as the test process, the
test database's name) and writes run logs under PAPERCLIP_RUN_LOG_DIR.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.polling import wait_until


def product_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a product process on the test database."""
    return {
        **os.environ,
        "PAPERCLIP_DB_NAME": connection.settings_dict["NAME"],
        "PAPERCLIP_RUN_LOG_DIR": str(tmp_path / "run-logs"),
        **extra,
    }


@contextmanager
def running_command(
    tmp_path: Path,
    *args: str,
    log_name: str,
    env: Mapping[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> Iterator[subprocess.Popen]:
    """Start `manage.py <args>` in a session of its own; stop it, gracefully first, whatever
    the test did."""
    with (tmp_path / log_name).open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args],
            env=dict(env or product_env(tmp_path)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        try:
            yield proc
        finally:
            stop_gracefully(proc)


def stop_gracefully(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextmanager
def running_qcluster(tmp_path: Path, *, workers: int = 2, **env: str) -> Iterator[subprocess.Popen]:
    """A django-q2 cluster on the test database."""
    environment = product_env(tmp_path, PAPERCLIP_Q_WORKERS=str(workers), **env)
    with running_command(tmp_path, "qcluster", log_name="qcluster.log", env=environment) as proc:
        yield proc


@contextmanager
def running_supervisor(
    tmp_path: Path, pass_fds: tuple[int, ...] = (), **env: str
) -> Iterator[subprocess.Popen]:
    """This host's run supervisor on the test database."""
    environment = product_env(tmp_path, **env)
    with running_command(
        tmp_path, "supervise_runs", log_name="supervisor.log", env=environment, pass_fds=pass_fds
    ) as proc:
        yield proc


@contextmanager
def running_web_server(tmp_path: Path, **env: str) -> Iterator[str]:
    """gunicorn serving the product on the test database (one worker process, so that every
    request meets the same per-process caches); yields its origin, http://127.0.0.1:PORT."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    origin = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gunicorn", "paperclip.wsgi:application"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gthread"]
    command += ["--threads", "2", "--no-control-socket", "--log-level", "warning"]
    with (tmp_path / "gunicorn.log").open("ab") as log:
        proc = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=product_env(tmp_path, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(
                lambda: _serving(origin, proc),
                timeout=60,
                interval=0.2,
                message=f"gunicorn answers on {origin}",
            )
            yield origin
        finally:
            stop_gracefully(proc)


def _serving(origin: str, proc: subprocess.Popen) -> bool:
    """Whether gunicorn answers (any status); fails at once if it exited while starting."""
    if proc.poll() is not None:
        pytest.fail(f"gunicorn exited with {proc.returncode} while starting")
    try:
        with urllib.request.urlopen(f"{origin}/api/health", timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
