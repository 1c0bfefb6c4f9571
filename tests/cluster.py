"""A real django-q2 cluster (`manage.py qcluster`) on the test database, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection


@contextmanager
def running_qcluster(tmp_path: Path, *, workers: int = 2) -> Iterator[subprocess.Popen]:
    """Start a cluster in a session of its own; stop it, gracefully first, whatever the test did."""
    env = {
        **os.environ,
        "PAPERCLIP_DB_NAME": connection.settings_dict["NAME"],
        "PAPERCLIP_RUN_LOG_DIR": str(tmp_path / "run-logs"),
        "PAPERCLIP_Q_WORKERS": str(workers),
    }
    with (tmp_path / "qcluster.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "qcluster"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
