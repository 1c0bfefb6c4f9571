"""The run shim on its own: real processes, no database, no Django (as it runs in production).

Each test starts heartbeat/shim/run_shim.py through process_control.spawn_run_shim, exactly as a
launch does, and asserts on the exit report, the log and the process table.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from heartbeat import process_control
from heartbeat.process_control import ShimStarted, ShimStartError
from tests.polling import wait_until
from tests.recovery.processes import WAIT_SECONDS, is_gone

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(60)]


class ShimRun:
    """One run's files and the spec a launch would give its shim."""

    def __init__(self, root: Path) -> None:
        self.run_id = str(uuid.uuid4())
        base = root / self.run_id
        self.log = base.with_suffix(".ndjson")
        self.report_path = base.with_suffix(".exit.json")
        self.shim_log = base.with_suffix(".shim.log")

    def spec(self, argv: list[str], **extra) -> dict:
        stdin = extra.pop("stdin", None)
        return {
            "runId": self.run_id,
            "marker": self.run_id,
            "logPath": str(self.log),
            "exitReportPath": str(self.report_path),
            "shimLogPath": str(self.shim_log),
            "chunkMaxChars": 65536,
            "excerptMaxChars": 32768,
            "secrets": extra.pop("secrets", []),
            "drainSec": 1.0,
            "leftoverGraceSec": 1.0,
            "timeoutSec": extra.pop("timeoutSec", 0),
            "graceSec": extra.pop("graceSec", 1),
            "process": {
                "argv": argv,
                "cwd": extra.pop("cwd", None),
                "env": {"PATH": os.environ["PATH"], **extra.pop("env", {})},
                "stdin": None if stdin is None else base64.b64encode(stdin).decode(),
            },
        }

    def report(self) -> dict:
        wait_until(
            self.report_path.exists, timeout=WAIT_SECONDS, message="the shim writes its exit report"
        )
        return json.loads(self.report_path.read_text())

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def shim_run(tmp_path) -> Iterator[ShimRun]:
    run = ShimRun(tmp_path)
    yield run
    # Whatever a failed test left behind carries the run's marker.
    process_control.terminate_tree(None, marker=run.run_id, grace=0)


def _start(run: ShimRun, spec: dict) -> ShimStarted:
    run.shim_log.parent.mkdir(parents=True, exist_ok=True)
    return process_control.spawn_run_shim(
        spec=spec, marker=run.run_id, shim_log_path=str(run.shim_log), timeout=WAIT_SECONDS
    )


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def test_agent_output_and_exit_status_are_reported_atomically_beside_the_log(shim_run):
    started = _start(
        shim_run,
        shim_run.spec(
            _python("import sys; print(sys.stdin.read()); print('oops', file=sys.stderr); exit(3)"),
            stdin=b"the prompt with token-abcdef",
            secrets=["token-abcdef"],
        ),
    )

    report = shim_run.report()

    assert started.agent is not None and started.spawn_error is None
    assert started.agent.pgid == started.agent.pid != started.shim.pid
    assert (report["runId"], report["exitCode"], report["signal"], report["stop"]) == (
        shim_run.run_id,
        3,
        None,
        None,
    )
    assert report["agentPid"] == started.agent.pid
    assert report["log"]["bytes"] == shim_run.log.stat().st_size
    assert report["log"]["stdoutExcerpt"] == "the prompt with ***REDACTED***\n"
    assert report["log"]["stderrExcerpt"] == "oops\n"
    assert "token-abcdef" not in shim_run.log.read_text()
    assert not shim_run.report_path.with_suffix(".json.tmp").exists()
    wait_until(
        lambda: is_gone(started.shim.pid),
        timeout=WAIT_SECONDS,
        message="the shim exits after reporting",
    )


def test_recorded_identities_match_the_process_table(shim_run):
    started = _start(shim_run, shim_run.spec(["sleep", "30"]))
    assert started.agent is not None

    assert process_control.probe(started.shim) is process_control.Liveness.ALIVE
    assert process_control.probe(started.agent) is process_control.Liveness.ALIVE
    shim = psutil.Process(started.shim.pid)
    assert shim.environ()[process_control.MARKER_ENV] == shim_run.run_id
    # Re-parented away from the process that launched it, and the agent is the shim's child.
    assert shim.ppid() != os.getpid()
    assert psutil.Process(started.agent.pid).ppid() == started.shim.pid


def test_shim_outlives_the_process_that_launched_it(shim_run, tmp_path):
    # A launcher process (a django-q2 worker) starts the run and is killed at once.
    launcher_code = (
        "import json, sys\n"
        "from heartbeat import process_control\n"
        "spec = json.loads(sys.argv[1])\n"
        "started = process_control.spawn_run_shim(spec=spec, marker=spec['marker'],"
        " shim_log_path=spec['shimLogPath'], timeout=20)\n"
        "print(started.shim.pid, flush=True)\n"
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    spec = shim_run.spec(["bash", "-c", "sleep 2; echo finished"])
    shim_run.shim_log.parent.mkdir(parents=True, exist_ok=True)
    launcher = psutil.Popen(
        [sys.executable, "-c", launcher_code, json.dumps(spec)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=-1,
    )
    shim_pid = int(launcher.stdout.readline())
    launcher.wait(WAIT_SECONDS)

    report = shim_run.report()

    assert launcher.returncode == -signal.SIGKILL
    assert (report["exitCode"], report["log"]["stdoutExcerpt"]) == (0, "finished\n")
    wait_until(lambda: is_gone(shim_pid), timeout=WAIT_SECONDS, message="the shim exits")


def test_timeout_terminates_the_whole_tree_including_escapees(shim_run, tmp_path):
    pids_file = tmp_path / "pids"
    tree = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "escapee = subprocess.Popen(['sleep', '301'], start_new_session=True)\n"
        "open(sys.argv[1], 'w').write(f'{child.pid} {escapee.pid}')\n"
        "print('tree up', flush=True)\n"
        "time.sleep(300)\n"
    )
    started = _start(
        shim_run, shim_run.spec(_python(tree, str(pids_file)), timeoutSec=1.5, graceSec=1)
    )
    wait_until(pids_file.exists, timeout=WAIT_SECONDS, message="the tree is up")
    child, escapee = map(int, pids_file.read_text().split())

    report = shim_run.report()

    assert report["stop"] == "timeout" and report["timeoutSec"] == 1.5
    assert report["signal"] in ("SIGTERM", "SIGKILL")
    assert started.agent is not None
    assert all(is_gone(pid) for pid in (started.agent.pid, child, escapee))
    assert any(note.startswith("timed out after 1.5s") for note in report["notes"])


def test_sigterm_stops_the_agent_and_is_reported_as_a_cancel(shim_run):
    started = _start(shim_run, shim_run.spec(["sleep", "300"]))
    assert started.agent is not None

    assert process_control.shim_stop(started.shim)
    report = shim_run.report()

    assert (report["stop"], report["signal"]) == ("cancel", "SIGTERM")
    assert is_gone(started.agent.pid)


def test_daemon_left_behind_by_a_finished_agent_is_terminated(shim_run, tmp_path):
    pid_file = tmp_path / "daemon.pid"
    # A double fork into a new session with its output closed: out of the agent's group and
    # pipes, re-parented to the shim (a child subreaper) when its parent exits.
    daemonize = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        for fd in (0, 1, 2): os.close(fd)\n"
        "        open(sys.argv[1], 'w').write(str(os.getpid()))\n"
        "        time.sleep(300)\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\n"
    )

    started = _start(shim_run, shim_run.spec(_python(daemonize, str(pid_file))))
    report = shim_run.report()

    daemon = int(pid_file.read_text())
    assert started.agent is not None
    assert report["exitCode"] == 0
    assert is_gone(daemon)
    assert any("leftover processes" in note for note in report["notes"])


def test_agent_that_cannot_start_is_reported_at_once(shim_run):
    started = _start(shim_run, shim_run.spec(["/no/such/agent"]))

    assert started.agent is None
    assert started.spawn_error == "cannot start '/no/such/agent': command not found"
    assert shim_run.report()["spawnError"] == started.spawn_error


def test_shim_that_cannot_read_its_spec_fails_the_start(tmp_path):
    with pytest.raises(ShimStartError, match="did not start the run"):
        process_control.spawn_run_shim(
            spec={"marker": "x"}, marker="x", shim_log_path=str(tmp_path / "s.log"), timeout=5
        )
