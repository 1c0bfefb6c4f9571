"""Real processes for tests, started the way a run's agent is: in a session of their own, with
the run marker in their environment, output piped, identity read before anything else.

The product starts agents only through run shims (heartbeat/shim/run_shim.py); tests that exercise
probing, terminating and reaping start such processes directly.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

import psutil

from heartbeat import process_control
from heartbeat.process_control import MARKER_ENV, ProcessIdentity


@dataclass
class SpawnedProcess:
    """A child of the test; the test reads its pipes and reaps it with wait()."""

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


def spawn(
    *,
    argv: Sequence[str],
    env: Mapping[str, str],
    marker: str,
    cwd: str | None = None,
    stdin_data: bytes | None = None,
) -> SpawnedProcess:
    """Start argv in its own session with piped output and the run marker in its environment."""
    popen = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env={**env, MARKER_ENV: marker},
        stdin=subprocess.DEVNULL if stdin_data is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    # Unreaped until the test waits, so the start time is readable even after an early exit.
    identity = ProcessIdentity(
        pid=popen.pid,
        pgid=popen.pid,
        started_at=datetime.fromtimestamp(psutil.Process(popen.pid).create_time(), tz=UTC),
        host=process_control.current_host(),
        boot_id=process_control.current_boot_id(),
    )
    if popen.stdin is not None:
        threading.Thread(target=_feed, args=(popen.stdin, stdin_data), daemon=True).start()
    assert popen.stdout is not None and popen.stderr is not None  # both requested as PIPE
    return SpawnedProcess(identity=identity, popen=popen, stdout=popen.stdout, stderr=popen.stderr)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError), pipe:
        pipe.write(data)
