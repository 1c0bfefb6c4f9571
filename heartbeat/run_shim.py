"""The run shim: the small monitor each agent run lives under (DESIGN "How runs execute").

It must run with nothing but the standard library: no Django, no database, no project imports,
because it keeps working while every other part of the product is down.

This module also holds the NDJSON log writer the shim writes the run log with; the rest of the
product imports it from here (through heartbeat.run_log), so the log format exists once.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REDACTED = "***REDACTED***"
# Secrets shorter than this are not redacted: replacing "1" or "ab" would shred the log.
_MIN_SECRET_LENGTH = 6
_HEAD_SHARE = 0.6
_TAIL_SHARE = 0.25


def chunk_truncate(text: str, max_chars: int) -> str:
    """Cap one chunk as the reference does: keep the first 60% and the last 25%, marked."""
    if len(text) <= max_chars:
        return text
    head = text[: int(max_chars * _HEAD_SHARE)]
    tail = text[len(text) - int(max_chars * _TAIL_SHARE) :]
    dropped = len(text) - len(head) - len(tail)
    return f"{head}\n[... {dropped} characters truncated ...]\n{tail}"


class SecretRedactor:
    """Replaces secret values in a stream of text, including a secret split across two chunks.

    The last (longest secret - 1) characters are held back until more text or the end arrives:
    a secret that is not complete yet must start in that tail, so it is only ever emitted
    whole, and then as REDACTED.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted(
            {s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True
        )
        self._hold = max((len(s) for s in self._secrets), default=1) - 1
        self._carry = ""

    def _replace(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def feed(self, text: str) -> str:
        if not self._secrets:
            return text
        pending = self._replace(self._carry + text)
        cut = max(len(pending) - self._hold, 0)
        self._carry = pending[cut:]
        return pending[:cut]

    def flush(self) -> str:
        rest, self._carry = self._carry, ""
        return self._replace(rest)


class _Excerpt:
    """The last `limit` characters of a stream, in bounded memory."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._text = ""

    def add(self, text: str) -> None:
        self._text += text
        if len(self._text) > 2 * self._limit:
            self._text = self._text[-self._limit :]

    def value(self) -> str | None:
        return self._text[-self._limit :] or None


@dataclass(frozen=True)
class RunLogSummary:
    log_bytes: int
    log_sha256: str
    stdout_excerpt: str | None
    stderr_excerpt: str | None


class _Stream:
    def __init__(self, secrets: Iterable[str], excerpt_limit: int) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.redactor = SecretRedactor(secrets)
        self.excerpt = _Excerpt(excerpt_limit)


class RunLogWriter:
    """Appends `{ts, stream, chunk}` lines; safe to call from one reader thread per stream."""

    def __init__(
        self, *, path: Path, secrets: Iterable[str], chunk_max_chars: int, excerpt_max_chars: int
    ) -> None:
        secrets = tuple(secrets)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._sha = hashlib.sha256()
        self._bytes = 0
        self._chunk_max = chunk_max_chars
        self._streams = {
            "stdout": _Stream(secrets, excerpt_max_chars),
            "stderr": _Stream(secrets, excerpt_max_chars),
        }
        self._lock = threading.Lock()

    def write(self, stream: str, data: bytes) -> None:
        with self._lock:
            if self._file.closed:
                return
            state = self._streams[stream]
            self._emit(stream, state.redactor.feed(state.decoder.decode(data)))

    def close(self) -> RunLogSummary:
        with self._lock:
            for name, state in self._streams.items():
                self._emit(name, state.redactor.feed(state.decoder.decode(b"", final=True)))
                self._emit(name, state.redactor.flush())
            self._file.close()
            return RunLogSummary(
                log_bytes=self._bytes,
                log_sha256=self._sha.hexdigest(),
                stdout_excerpt=self._streams["stdout"].excerpt.value(),
                stderr_excerpt=self._streams["stderr"].excerpt.value(),
            )

    def _emit(self, stream: str, text: str) -> None:
        if not text:
            return
        text = chunk_truncate(text, self._chunk_max)
        self._streams[stream].excerpt.add(text)
        line = json.dumps(
            {"ts": datetime.now(UTC).isoformat(), "stream": stream, "chunk": text},
            ensure_ascii=False,
        )
        encoded = (line + "\n").encode("utf-8", errors="replace")
        self._file.write(encoded)
        self._file.flush()
        self._sha.update(encoded)
        self._bytes += len(encoded)
