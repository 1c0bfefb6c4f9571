"""The run log: a run's stdout and stderr as NDJSON lines under PAPERCLIP_HOME/run-logs.

The run shim writes it as output arrives and never holds it whole in memory: the writer keeps a
SHA-256, a byte count and the last excerpt of each stream, so a run printing gigabytes costs the
same memory as one printing a line. Secret values are redacted before anything is written.
Beside each log the shim keeps its own log (`.shim.log`) and, once the agent has ended, the exit
report (`.exit.json`) the run is finalized from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from django.conf import settings

from heartbeat.conf import heartbeat_conf

# The writer lives in the stdlib-only run shim, which writes every run's log.
from heartbeat.shim.run_shim import (
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
    "run_exit_report_path",
    "run_exit_report_read",
    "run_log_path",
    "run_log_read",
    "run_log_ref",
    "run_log_root",
    "run_log_tail_excerpts",
    "run_shim_log_path",
]

logger = logging.getLogger(__name__)

LOG_STORE = "local_file"


def run_log_ref(*, company_id: object, agent_id: object, run_id: object) -> str:
    """The log's path relative to the log root (stored as the run's log_ref)."""
    return f"{company_id}/{agent_id}/{run_id}.ndjson"


def run_log_root() -> Path:
    configured = heartbeat_conf().run_log_dir
    return Path(configured) if configured else Path(settings.PAPERCLIP_HOME) / "run-logs"


def run_log_path(log_ref: str) -> Path:
    return run_log_root() / log_ref


def run_exit_report_path(log_ref: str) -> Path:
    """Where the run shim writes how the agent ended (atomically, once)."""
    return run_log_path(log_ref).with_suffix(".exit.json")


def run_shim_log_path(log_ref: str) -> Path:
    """The run shim's own log: what it did to the agent and why, with times."""
    return run_log_path(log_ref).with_suffix(".shim.log")


def run_exit_report_read(log_ref: str) -> dict | None:
    """The run's exit report, or None while the agent has not ended (or no report was written)."""
    path = run_exit_report_path(log_ref)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        # Written by rename, so never half-written; an unreadable one is as good as none.
        logger.error("exit report %s is unreadable: %s", path, exc)
        return None
    return report if isinstance(report, dict) else None


def run_log_tail_excerpts(
    log_ref: str, *, max_chars: int
) -> tuple[int, str | None, str | None] | None:
    """The log's size and the last max_chars of each stream, read from the log's end only.

    For following a run while it executes (the exact excerpts come with the exit report). None
    when the log does not exist yet.
    """
    path = run_log_path(log_ref)
    try:
        with path.open("rb") as log:
            size = log.seek(0, 2)
            # Escaped JSON is longer than its text: read a generous tail, then keep whole lines.
            start = max(size - 4 * max_chars, 0)
            log.seek(start)
            tail = log.read(size - start)
    except FileNotFoundError:
        return None
    lines = tail.split(b"\n")
    if start > 0:
        lines = lines[1:]
    chunks: dict[str, list[str]] = {"stdout": [], "stderr": []}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("stream") in chunks:
            chunks[entry["stream"]].append(str(entry.get("chunk", "")))
    stdout, stderr = ("".join(chunks[name])[-max_chars:] or None for name in chunks)
    return size, stdout, stderr


def run_log_read(log_ref: str) -> list[dict]:
    """Every line of a run's log (for tests and small logs; large logs are streamed by callers)."""
    path = run_log_path(log_ref)
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
