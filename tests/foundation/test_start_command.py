"""The README's first command: the whole product comes up and Ctrl-C stops all of it."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
# The interpreter the README's command runs on, outside the project's venv: the launcher claims
# its PAPERCLIP_HOME and port there, then re-executes itself inside .venv, keeping both.
SYSTEM_PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status_of(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return None


@pytest.mark.cluster
@pytest.mark.timeout(400)
def test_start_serves_admin_and_ctrl_c_stops_everything(tmp_path):
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.update(PAPERCLIP_HOME=str(tmp_path / "home"), PAPERCLIP_ADMIN_PASSWORD="pw-for-test")
    launcher = subprocess.Popen(
        [SYSTEM_PYTHON, "-m", "paperclip", "start", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    children: list[psutil.Process] = []
    try:
        login = f"http://127.0.0.1:{port}/admin/login/"
        status = wait_until(
            lambda: _status_of(login), timeout=240, interval=0.5, message=f"{login} answers"
        )
        assert status == 200
        assert psutil.Process(launcher.pid).cmdline()[0] == str(ROOT / ".venv" / "bin" / "python")
        children = psutil.Process(launcher.pid).children(recursive=True)
        assert any("run_cluster" in " ".join(c.cmdline()) for c in children)
        launcher.send_signal(signal.SIGINT)
        output, _ = launcher.communicate(timeout=60)
    finally:
        # The web server and cluster run in sessions of their own: a failed test must not leave
        # them behind (they would hold connections to other suites' databases).
        if launcher.poll() is None:
            children = children or psutil.Process(launcher.pid).children(recursive=True)
            launcher.send_signal(signal.SIGINT)
            try:
                launcher.wait(timeout=30)
            except subprocess.TimeoutExpired:
                launcher.kill()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    assert launcher.returncode == 0, output
    assert "board login: user 'admin', password from PAPERCLIP_ADMIN_PASSWORD" in output
    assert "ready: http://127.0.0.1:" in output
    assert all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in children)
    assert not (tmp_path / "home" / "pgdata" / "postmaster.pid").exists()


@pytest.mark.timeout(60)
def test_start_with_an_unknown_option_says_so_in_one_line_and_exits_2():
    done = subprocess.run(
        [SYSTEM_PYTHON, "-m", "paperclip", "start", "--bogus"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "paperclip: cannot use '--bogus' here; usage: python3 -m paperclip "
        "{start [--port N] [--demo] [--stop-runs] | test [pytest args...]}"
    ]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_to_the_test_command_ends_its_pytest_too(tmp_path):
    pid_file = tmp_path / "pytest.pid"
    sleeper = tmp_path / "test_sleeps.py"
    sleeper.write_text(
        "import os\nimport time\n\n\ndef test_sleeps():\n"
        f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(100)\n"
    )
    command = subprocess.Popen(
        [sys.executable, "-m", "paperclip", "test", str(sleeper), "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pytest_pid = None
    try:
        pytest_pid = int(
            wait_until(
                lambda: pid_file.exists() and pid_file.read_text(),
                timeout=60,
                message="the test command's pytest runs the sleeping test",
            )
        )
        command.send_signal(signal.SIGTERM)
        command.wait(timeout=30)
        wait_until(
            lambda: (
                not psutil.pid_exists(pytest_pid)
                or psutil.Process(pytest_pid).status() == psutil.STATUS_ZOMBIE
            ),
            timeout=30,
            message="pytest ends with the test command",
        )
    finally:
        if command.poll() is None:
            command.kill()
        if pytest_pid is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pytest_pid).kill()
