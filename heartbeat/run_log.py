"""The run log: a run's stdout and stderr as NDJSON lines under PAPERCLIP_HOME/run-logs.

Output is written as it arrives and never held whole in memory: the writer keeps a SHA-256, a byte
count and the last excerpt of each stream, so a run printing gigabytes costs the worker the same
memory as one printing a line. Secret values are redacted before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings

from heartbeat.conf import heartbeat_conf

# The writer lives in the stdlib-only run shim, which writes every run's log.
from heartbeat.run_shim import (
    REDACTED,
    RunLogSummary,
    RunLogWriter,
    SecretRedactor,
    chunk_truncate,
)

__all__ = [
    "LOG_STORE",
    "REDACTED",
    "RunLogSummary",
    "RunLogWriter",
    "SecretRedactor",
    "chunk_truncate",
    "run_log_path",
    "run_log_read",
    "run_log_ref",
    "run_log_root",
]

LOG_STORE = "local_file"


def run_log_ref(*, company_id: object, agent_id: object, run_id: object) -> str:
    """The log's path relative to the log root (stored as the run's log_ref)."""
    return f"{company_id}/{agent_id}/{run_id}.ndjson"


def run_log_root() -> Path:
    configured = heartbeat_conf().run_log_dir
    return Path(configured) if configured else Path(settings.PAPERCLIP_HOME) / "run-logs"


def run_log_path(log_ref: str) -> Path:
    return run_log_root() / log_ref


def run_log_read(log_ref: str) -> list[dict]:
    """Every line of a run's log (for tests and small logs; large logs are streamed by callers)."""
    path = run_log_path(log_ref)
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
