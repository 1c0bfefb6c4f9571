"""The embedded PostgreSQL server (from the `pgserver` package) used when DATABASE_URL is unset.

Under `python3 -m paperclip start` the server is a child of the launcher (`server_command`),
supervised and stopped with the rest of the product; the launcher tells its other children where
its socket is (PAPERCLIP_EMBEDDED_DB_SOCKET), and they never start a server of their own: one
started beside the launcher's while it restarts would take its data directory.

Any other process that needs the database (tests, one-off commands) calls `ensure_running()`;
pgserver serialises start-up with an inter-process file lock, so processes starting together
share one server instead of racing to create it. That server outlives the process that started
it (`cleanup_mode=None`) because pgserver's own reference counting keeps the pids of forked
processes forever and would never stop; `start` restarts it under its launcher.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

# Set by the launcher for its children: the socket directory of the server it runs.
LAUNCHER_SOCKET_ENV = "PAPERCLIP_EMBEDDED_DB_SOCKET"


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
    if os.environ.get(LAUNCHER_SOCKET_ENV):
        return os.environ[LAUNCHER_SOCKET_ENV]
    # Threaded servers (gunicorn gthread, runserver) open their first connections concurrently;
    # pgserver's start-up lock is per process, not per thread, and failed when two threads
    # entered it at once.
    with _start_lock:
        return _ensure_running(home)


def _ensure_running(home: Path) -> str:
    global _socket_dir
    if _socket_dir is not None:
        return _socket_dir
    pgdata = _usable_pgdata(home)
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI); its fallback is fine.
            warnings.simplefilter("ignore")
            import pgserver

            server = pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:
        raise _did_not_start(pgdata, exc) from exc
    query = parse_qs(urlparse(server.get_uri()).query)
    _socket_dir = query["host"][0]
    return _socket_dir


def _usable_pgdata(home: Path) -> Path:
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
    return pgdata


def _did_not_start(pgdata: Path, exc: Exception) -> ConfigurationError:
    return ConfigurationError(
        f"the embedded PostgreSQL in {pgdata} did not start ({exc.__class__.__name__}: "
        f"{exc}); see {pgdata / 'log'}, or set DATABASE_URL to use another server"
    )


@dataclass(frozen=True)
class ServerCommand:
    """How the launcher runs the embedded server as its child."""

    argv: list[str]
    # postgres refuses to run as root: then it runs as pgserver's system user.
    user: str | None
    log_path: Path
    socket_dir: str


def server_command(home: Path) -> ServerCommand:
    """The embedded server's command line, its data directory created on the first start.

    Call it when no server runs on the data directory (see `stop`).
    """
    pgdata = _usable_pgdata(home)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
        from pgserver.postgres_server import PostgresServer
        from pgserver.utils import ensure_prefix_permissions, find_suitable_socket_dir

    user = "pgserver" if os.geteuid() == 0 else None
    if not (pgdata / "PG_VERSION").exists():
        # pgserver creates the cluster (initdb, its system user, permissions) and starts it;
        # the launcher's own server takes over from there.
        _ensure_running(home)
        stop(home)
    try:
        socket_dir = find_suitable_socket_dir(pgdata, PostgresServer.runtime_path)
        if user is not None and socket_dir != pgdata:
            ensure_prefix_permissions(socket_dir)
            socket_dir.chmod(0o777)
    except Exception as exc:
        raise _did_not_start(pgdata, exc) from exc
    argv = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(pgdata), "-h", "", "-k", str(socket_dir)]
    return ServerCommand(argv=argv, user=user, log_path=pgdata / "log", socket_dir=str(socket_dir))


def accepting_connections(home: Path, pid: int) -> bool:
    """Whether the server with this pid has said, in its postmaster.pid, that it is ready."""
    try:
        lines = (pgdata_path(home) / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    # Line 1 is the postmaster's pid, line 8 its status (PostgreSQL's pidfile.h).
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


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
    # A stale postmaster.pid (a crash, a reboot) may name a pid that another program has now:
    # pg_ctl would signal it.
    if info.process.name() != "postgres":
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
