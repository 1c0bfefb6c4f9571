"""The embedded PostgreSQL server (from the `pgserver` package) used when DATABASE_URL is unset.

Every process that needs the database (web server, django-q2 cluster, tests, one-off commands)
calls `ensure_running()`; pgserver serialises start-up with an inter-process file lock, so
processes starting together share one server instead of racing to create it. The server outlives
the process that started it (`cleanup_mode=None`) because pgserver's own reference counting keeps
the pids of forked django-q2 workers forever and would never stop; `python -m paperclip start`
stops it explicitly when the product stops.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlparse


class ConfigurationError(Exception):
    """Bad configuration, reported to the operator as one line saying what to do."""


_socket_dir: str | None = None
_start_lock = threading.Lock()


def pgdata_path(home: Path) -> Path:
    return home / "pgdata"


def ensure_running(home: Path) -> str:
    """Start the embedded server if it is not running; return its Unix socket directory."""
    if _socket_dir is not None:
        return _socket_dir
    # Threaded servers (gunicorn gthread, runserver) open their first connections concurrently;
    # pgserver's start-up lock is per process, not per thread, and failed when two threads
    # entered it at once.
    with _start_lock:
        return _ensure_running(home)


def _ensure_running(home: Path) -> str:
    global _socket_dir
    if _socket_dir is not None:
        return _socket_dir
    pgdata = pgdata_path(home)
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create PAPERCLIP_HOME {home}: {exc.strerror}; "
            "set PAPERCLIP_HOME to a writable folder"
        ) from exc
    if not os.access(home, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"PAPERCLIP_HOME {home} is not writable; set PAPERCLIP_HOME to a writable folder"
        )
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI); its fallback is fine.
            warnings.simplefilter("ignore")
            import pgserver

            server = pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:
        log = pgdata / "log"
        raise ConfigurationError(
            f"the embedded PostgreSQL in {pgdata} did not start ({exc.__class__.__name__}: "
            f"{exc}); see {log}, or set DATABASE_URL to use another server"
        ) from exc
    query = parse_qs(urlparse(server.get_uri()).query)
    _socket_dir = query["host"][0]
    return _socket_dir


def stop(home: Path) -> bool:
    """Stop the embedded server if it runs; return whether it was running."""
    pgdata = pgdata_path(home)
    if not (pgdata / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import pg_ctl
        from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return False
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def is_running(home: Path) -> bool:
    pgdata = pgdata_path(home)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import PostmasterInfo
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    return bool(info is not None and info.is_running())
