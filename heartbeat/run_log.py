"""The run log: a run's stdout and stderr as NDJSON lines under the log root (run_log_root).

The run shim writes it as output arrives and never holds it whole in memory: the writer keeps a
SHA-256, a byte count and the last excerpt of each stream, so a run printing gigabytes costs the
same memory as one printing a line. Secret values are redacted before anything is written.
Beside each log the shim keeps its own log (`.shim.log`) and, once the agent has ended, the exit
report (`.exit.json`) the run is finalized from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from heartbeat.adapters.cli_output import CliOutput, CliOutputParser
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
    "RunLogLines",
    "RunLogSummary",
    "RunLogWriter",
    "RunTranscript",
    "SecretRedactor",
    "chunk_truncate",
    "run_exit_report_path",
    "run_exit_report_read",
    "run_log_path",
    "run_log_path_inside_root",
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
    """Where every run log lives: PAPERCLIP_RUN_LOG_DIR, else PAPERCLIP_HOME/run-logs."""
    configured = heartbeat_conf().run_log_dir
    return Path(configured) if configured else Path(settings.PAPERCLIP_HOME) / "run-logs"


def run_log_path(log_ref: str) -> Path:
    """The run's log file: its log_ref under the log root (the one place that says so)."""
    return run_log_root() / log_ref


def run_log_path_inside_root(log_ref: str) -> Path | None:
    """The run's log file for reading, or None when its log_ref reaches outside the log root (an
    absolute or `..` ref written into the row by hand): readers never open a file elsewhere."""
    root = run_log_root().resolve()
    path = (root / log_ref).resolve()
    return path if path.is_relative_to(root) else None


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


# A log line is one chunk of at most log_chunk_max_bytes characters, JSON-escaped: well under
# this. A longer one is not a line the shim wrote whole; it is skipped.
_LOG_LINE_MAX_BYTES = 16 * 1024 * 1024


class RunLogLines:
    """The lines the agent printed, read back from its run log: each stream's chunks joined and
    split at newlines again, from where the last read stopped.

    Memory stays bounded however large the log: one log line at a time, and per stream the
    unfinished line, which is dropped (and counted in `oversized`) once it passes
    max_line_chars. A partly written last log line is left for the next read.
    """

    def __init__(self, log_ref: str, *, max_line_chars: int) -> None:
        self.path = run_log_path(log_ref)
        self.offset = 0
        self.oversized = 0
        self._max_line_chars = max_line_chars
        self._partial: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._partial_chars = {"stdout": 0, "stderr": 0}
        # A stream whose current line was dropped: its text is skipped up to the next newline.
        self._skipping = {"stdout": False, "stderr": False}

    def read(self, *, max_bytes: int | None = None) -> Iterator[tuple[str, str]]:
        """(stream, line) for each line completed by the log written since the last read;
        stops after about max_bytes of log (None: up to the end)."""
        try:
            log = self.path.open("rb")
        except FileNotFoundError:
            return
        with log:
            log.seek(self.offset)
            start = self.offset
            while max_bytes is None or self.offset - start < max_bytes:
                raw = log.readline(_LOG_LINE_MAX_BYTES)
                if not raw.endswith(b"\n"):
                    if len(raw) < _LOG_LINE_MAX_BYTES:
                        # The end of the log, or a line the shim is writing right now.
                        return
                    while raw and not raw.endswith(b"\n"):
                        raw = log.readline(_LOG_LINE_MAX_BYTES)
                    self.offset = log.tell()
                    continue
                self.offset += len(raw)
                yield from self._log_line(raw)

    def close(self) -> Iterator[tuple[str, str]]:
        """The streams' last lines, which ended without a newline (the agent has ended)."""
        for stream, pieces in self._partial.items():
            if pieces and not self._skipping[stream]:
                yield stream, "".join(pieces)
            pieces.clear()
            self._partial_chars[stream] = 0

    def _log_line(self, raw: bytes) -> Iterator[tuple[str, str]]:
        try:
            entry = json.loads(raw)
        except ValueError:
            return
        if not isinstance(entry, dict) or entry.get("stream") not in self._partial:
            return
        chunk = entry.get("chunk")
        if isinstance(chunk, str):
            yield from self._chunk(entry["stream"], chunk)

    def _chunk(self, stream: str, chunk: str) -> Iterator[tuple[str, str]]:
        pieces = self._partial[stream]
        *complete, rest = chunk.split("\n")
        for piece in complete:
            if self._skipping[stream]:
                self._skipping[stream] = False
            else:
                pieces.append(piece)
                yield stream, "".join(pieces)
            pieces.clear()
            self._partial_chars[stream] = 0
        if self._skipping[stream] or not rest:
            return
        pieces.append(rest)
        self._partial_chars[stream] += len(rest)
        if self._partial_chars[stream] > self._max_line_chars:
            self.oversized += 1
            self._skipping[stream] = True
            pieces.clear()
            self._partial_chars[stream] = 0


# The longest output line parsed: far above any CLI event the run's record needs (a final
# result is at most the model's longest answer); longer ones, such as a huge tool result
# echoed in the stream, are skipped.
OUTPUT_LINE_MAX_CHARS = 4 * 1024 * 1024


class RunTranscript:
    """A CLI run's output, parsed from its run log as far as the log has been read."""

    def __init__(self, log_ref: str, parser: CliOutputParser) -> None:
        self.lines = RunLogLines(log_ref, max_line_chars=OUTPUT_LINE_MAX_CHARS)
        self.parser = parser

    def advance(self, *, max_bytes: int | None = None) -> None:
        """Parse what the log gained since the last call (at most about max_bytes of it)."""
        for stream, line in self.lines.read(max_bytes=max_bytes):
            self.parser.feed(stream, line)

    def finish(self) -> CliOutput:
        """What the whole output says (call once the agent has ended)."""
        self.advance()
        for stream, line in self.lines.close():
            self.parser.feed(stream, line)
        return dataclasses.replace(self.parser.result(), oversized_lines=self.lines.oversized)
