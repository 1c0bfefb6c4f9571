"""The whole product as an operator runs it (`python3 -m paperclip start`), for fault tests.

By default it runs on the test database (DATABASE_URL points at the test server and database),
so the test reads and writes the product's state through the ORM; it may also be pointed at a
private PostgreSQL server the test can kill (PrivatePostgres), or run its own embedded PostgreSQL
in its home (`embedded=True`; the test then reaches its state through `shell`). Runs it executes
live under real run shims, outside the product's process tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
from django.conf import settings
from django.db import connection

from heartbeat import process_control
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
READY = "paperclip: ready:"
START_SECONDS = 180.0
# What tells the launcher's children apart in the process table.
CHILD_COMMANDS = {
    "web server": "gunicorn",
    "django-q2 cluster": "run_cluster",
    "run supervisor": "supervise_runs",
    "embedded PostgreSQL": "postgres",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_of_tests() -> str:
    """A DATABASE_URL for the database this test runs on (embedded server or not)."""
    params = connection.get_connection_params()
    user = quote(params.get("user") or connection.settings_dict["USER"] or "postgres")
    password = quote(params.get("password") or "")
    host = quote(params.get("host") or "", safe="")
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}:{password}@{host}{port}/{connection.settings_dict['NAME']}"


class Product:
    """One installation: its home, its database, its port; started and stopped as a whole."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        database_url: str | None = None,
        embedded: bool = False,
        **env: str,
    ) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.starts = 0
        self.launcher: subprocess.Popen | None = None
        inherited = {
            name: value
            for name, value in os.environ.items()
            if name not in ("DATABASE_URL", "PAPERCLIP_DB_NAME", "PAPERCLIP_TEST_DB_NAME")
        }
        self.env = {
            **inherited,
            **({} if embedded else {"DATABASE_URL": database_url or database_url_of_tests()}),
            # django-q2 signs queued tasks with the secret key: the test process enqueues too.
            "PAPERCLIP_SECRET_KEY": settings.SECRET_KEY,
            "PAPERCLIP_HOME": str(tmp_path / "home"),
            "PAPERCLIP_RUN_LOG_DIR": str(tmp_path / "run-logs"),
            "PAPERCLIP_ADMIN_PASSWORD": "pw-for-fault-tests",
            "PAPERCLIP_Q_WORKERS": "2",
            **env,
        }

    @property
    def log(self) -> Path:
        return self.tmp_path / f"start-{self.starts}.log"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *args: str) -> None:
        """Start and wait for "ready"; fail with the launcher's output if it does not come."""
        self.starts += 1
        with self.log.open("wb") as out:
            self.launcher = subprocess.Popen(
                [sys.executable, "-m", "paperclip", "start", "--port", str(self.port), *args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            self._ready,
            timeout=START_SECONDS,
            interval=0.2,
            message=lambda: f"the product is ready; it said:\n{self.said()[-3000:]}",
        )

    def _ready(self) -> bool:
        """Whether it said "ready"; fails at once if the launcher exited without saying it."""
        ready = READY in self.said()
        if not ready and self.launcher.poll() is not None:
            pytest.fail(f"the product did not start:\n{self.said()[-3000:]}")
        return ready

    def said(self) -> str:
        """What the launcher (and its children) printed since the last start."""
        return self.log.read_text(errors="replace")

    def child(self, name: str) -> psutil.Process:
        """The launcher's child of that name (see CHILD_COMMANDS)."""
        assert self.launcher is not None
        for proc in psutil.Process(self.launcher.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if CHILD_COMMANDS[name] in " ".join(proc.cmdline()[:3]):
                    return proc
        pytest.fail(f"the launcher has no {name}")

    def health(self) -> int | None:
        """The status of GET /api/health, None when nothing answers."""
        try:
            with urllib.request.urlopen(f"{self.origin}/api/health", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def processes(self) -> list[psutil.Process]:
        """The launcher and every process under it (run shims and agents are never among them)."""
        assert self.launcher is not None
        launcher = psutil.Process(self.launcher.pid)
        return [launcher, *launcher.children(recursive=True)]

    def ctrl_c(self) -> str:
        """Stop the product as a person at the terminal does; returns what the launcher said."""
        assert self.launcher is not None
        self.launcher.send_signal(signal.SIGINT)
        self.launcher.wait(timeout=90)
        return self.log.read_text(errors="replace")

    def kill_launcher(self) -> None:
        """kill -9 of the launcher alone."""
        assert self.launcher is not None
        self.launcher.kill()
        self.launcher.wait(timeout=10)

    def kill_all(self) -> None:
        """kill -9 of every product process at once (launcher, web, cluster, supervisor)."""
        procs = self.processes()
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(procs, timeout=30)
        assert self.launcher is not None
        self.launcher.wait(timeout=10)

    def shell(self, code: str) -> str:
        """Run Python in `manage.py shell` on the product's database; returns its stdout."""
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env={**self.env, "PAPERCLIP_LOG_LEVEL": "ERROR"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def wake(self, commands: list[str]) -> list[str]:
        """Wake one new agent per command (`bash -c`), through `shell`; the runs' ids."""
        return json_line(self.shell(_WAKE_IN_SHELL.format(commands=json.dumps(commands))))

    def runs(self) -> list[dict]:
        """Every run, oldest first, through `shell`: id, status, pid, shim, exit, stdout,
        retries, error, owner."""
        return json_line(self.shell(_RUNS_IN_SHELL))

    def close(self) -> None:
        """Stop whatever is still running, gracefully first."""
        if self.launcher is not None and self.launcher.poll() is None:
            procs = self.processes()
            self.launcher.send_signal(signal.SIGINT)
            try:
                self.launcher.wait(timeout=90)
            except subprocess.TimeoutExpired:
                for proc in procs:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        proc.kill()
        if "DATABASE_URL" not in self.env:
            # `shell` starts the embedded server when the launcher is gone.
            from paperclip import embedded_db

            embedded_db.stop(Path(self.env["PAPERCLIP_HOME"]))


_WAKE_IN_SHELL = """
import json
from heartbeat.services import wake_agent
from tests.factories import make_agent
ids = []
for n, command in enumerate(json.loads({commands!r})):
    agent = make_agent(name=f"Agent {{n}}", adapter_type="process",
                       adapter_config={{"command": "bash", "args": ["-c", command]}})
    ids.append(str(wake_agent(agent_id=agent.id, reason="fault_test").run.id))
print(json.dumps(ids))
"""

_RUNS_IN_SHELL = """
import json
from heartbeat.models import HeartbeatRun
print(json.dumps([
    {"id": str(r.id), "status": r.status, "pid": r.process_pid, "shim": r.shim_pid,
     "exit": r.exit_code, "stdout": r.stdout_excerpt, "retries": r.retries.count(),
     "error": r.error, "owner": r.owner_pid}
    for r in HeartbeatRun.objects.order_by("created_at")
]))
"""


class PrivatePostgres:
    """A PostgreSQL server of the test's own (pgserver's binaries) that the test may kill.

    Its data lives outside pytest's temporary folders: as root, pgserver runs postgres as its
    own user, which cannot enter those (they are private to root).
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="paperclip-faults-"))
        self.root.chmod(0o755)
        self.pgdata = self.root / "pgdata"
        self.url = ""

    def start(self) -> None:
        """Start (or restart) the server; a process of its own, because pgserver remembers the
        servers it started in-process and would not start a killed one again."""
        started = subprocess.run(
            [sys.executable, "-c", _START_POSTGRES, str(self.pgdata)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert started.returncode == 0, started.stderr[-3000:]
        socket_dir = started.stdout.strip().splitlines()[-1]
        self.url = f"postgresql://postgres:@{quote(socket_dir, safe='')}/postgres"

    def postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """kill -9 of the postmaster: the server is gone at once, as in a crash."""
        pid = self.postmaster_pid()
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=30)
        # Its backends end when they notice the postmaster is gone.
        deadline = time.monotonic() + 30
        while any(
            "postgres" in (proc.info["name"] or "")
            and str(self.pgdata) in " ".join(proc.info["cmdline"] or [])
            for proc in psutil.process_iter(["name", "cmdline"])
        ):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server if it runs, and remove its data."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver._commands import pg_ctl
        if (self.pgdata / "postmaster.pid").exists():
            user = "pgserver" if os.geteuid() == 0 else None
            pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.pgdata, user=user)
        shutil.rmtree(self.root, ignore_errors=True)


_START_POSTGRES = """
import sys, warnings
warnings.simplefilter("ignore")
import pgserver
print(pgserver.get_server(sys.argv[1], cleanup_mode=None).get_uri().split("host=", 1)[1])
"""


def terminate_runs(run_ids: list[str]) -> None:
    """Whatever of these runs still runs (a failed test) is killed, by run marker."""
    for run_id in run_ids:
        process_control.terminate_tree(None, marker=run_id, grace=0)


def json_line(output: str) -> object:
    """The last line of a shell's output, as JSON."""
    return json.loads(output.strip().splitlines()[-1])
