"""The run shim: the small monitor each agent run lives under (DESIGN "How runs execute").

    python -I -S -c "...; import run_shim; sys.exit(run_shim.main(sys.argv))" HANDSHAKE_FD < spec

The launch (process_control.spawn_run_shim) starts it so, with this folder alone on its path,
in a session of its own, and writes the run's spec (JSON) to its stdin. It forks once so that it
is nobody's child in the product (a worker that exits or restarts cannot take it along), starts
the agent as its own child in a new session, owns the agent's stdin, stdout and stderr, writes
the NDJSON run log, enforces the timeout, stops the agent on SIGTERM (a cancel carried out by
the run supervisor), and when the agent has ended writes the exit report atomically beside the
log, then exits. It marks itself a child subreaper, so every descendant of the agent, even one
that left the agent's session, stays in its tree and is terminated with it.

It runs with nothing but the standard library (no Django, no database, no project imports)
because it must keep working while every other part of the product is down; it keeps its imports
lean because one runs per agent (see tests/benchmarks for its memory).

This module also holds the NDJSON log writer; the rest of the product imports it from here
(through heartbeat.run_log), so the log format exists once.
"""

from __future__ import annotations

import binascii
import codecs
import ctypes
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections import namedtuple

# CPython's own SHA-256: hashlib would load OpenSSL, which costs every shim 10 ms of start-up and
# 0.4 MB of memory of its own for the same digest.
try:
    from _sha2 import sha256  # CPython 3.12 and later
except ImportError:
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:
        from hashlib import sha256

REDACTED = "***REDACTED***"
MARKER_ENV = "PAPERCLIP_RUN_MARKER"
# Marks the shim itself among the processes carrying a run's marker.
SHIM_ENV = "PAPERCLIP_RUN_SHIM"
REPORT_VERSION = 1
# Secrets shorter than this are not redacted: replacing "1" or "ab" would shred the log.
_MIN_SECRET_LENGTH = 6
_HEAD_SHARE = 0.6
_TAIL_SHARE = 0.25
_READ_BYTES = 64 * 1024
_HTTP_BODY_EXCERPT_CHARS = 4096
# After SIGKILL, how long to wait for the tree to be gone before reporting survivors.
_KILL_WAIT_SEC = 2.0
_PR_SET_CHILD_SUBREAPER = 36


def chunk_truncate(text: str, max_chars: int) -> str:
    """Cap one chunk as the reference does: keep the first 60% and the last 25%, marked."""
    if len(text) <= max_chars:
        return text
    head = text[: int(max_chars * _HEAD_SHARE)]
    tail = text[len(text) - int(max_chars * _TAIL_SHARE) :]
    dropped = len(text) - len(head) - len(tail)
    return f"{head}\n[... {dropped} characters truncated ...]\n{tail}"


# Credentials with a recognisable shape, redacted from every run's output even when the run's
# configuration did not name them (a key read from a file, a token a tool prints). Each pattern
# starts with a literal so the regex engine skips to candidates at memory speed; the word
# boundary before a match is checked afterwards, since a leading \b would disable that skip
# (measured on a 64 KiB chunk of agent output: 0.27 ms for every pattern here, 10.6 ms with \b).
_CREDENTIAL_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        r"pcak_[A-Za-z0-9_-]{20,}",  # Paperclip agent keys
        r"pcbt_[A-Za-z0-9_-]{20,}",  # Paperclip board tokens
        r"pcr_[A-Za-z0-9_:.-]{20,}",  # Paperclip run credentials (signed)
        r"sk-[A-Za-z0-9_-]{20,}",  # OpenAI and Anthropic (sk-proj-, sk-ant-) keys
        r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
        r"github_pat_[A-Za-z0-9_]{30,}",
        r"glpat-[A-Za-z0-9_-]{20,}",  # GitLab personal tokens
        r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack tokens
        r"AKIA[0-9A-Z]{16}(?![0-9A-Za-z])",  # AWS access key ids
        r"ASIA[0-9A-Z]{16}(?![0-9A-Za-z])",
        r"AIza[0-9A-Za-z_-]{35}",  # Google API keys
        r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",  # JWTs
    )
)
# Whatever follows "Bearer " (the B is checked before the match, like the boundaries above).
_BEARER_TOKEN = re.compile(r"earer ([A-Za-z0-9._~+/-]{16,}=*)")
# A PEM private key is redacted from its BEGIN line to its END line.
_KEY_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_KEY_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")
# A key block without an END line stops being redacted after this much text (the largest PEM
# keys are under 7 KiB), so one stray BEGIN line cannot swallow the rest of a log.
_KEY_BLOCK_MAX_CHARS = 16 * 1024
# Text is redacted a line at a time (no pattern spans lines); a line longer than this is cut at
# a space instead, so memory stays bounded whatever the run prints.
_LINE_MAX_CHARS = 16 * 1024
_LINE_BREAKS = ("\n", "\r")
# Any of the shapes above: a short text none of them matches (most event messages and activity
# details a sweep writes by the thousand) is returned as it is without building a redactor.
_ANY_CREDENTIAL_SHAPE = re.compile(
    "|".join(p.pattern for p in (*_CREDENTIAL_PATTERNS, _BEARER_TOKEN, _KEY_BEGIN))
)


class SecretRedactor:
    """Replaces secret values and credential-shaped text in a stream, including a secret split
    across chunks, in bounded memory.

    Output is released up to the last line break (or, for a very long line, the last space),
    never inside a known secret and never inside the last (longest secret - 1) characters: what
    is held back is unredacted text that may still be completed by the next chunk, and it is
    redacted whole once it is released.
    """

    def __init__(self, secrets) -> None:
        self._secrets = sorted(
            {s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True
        )
        self._hold = max((len(s) for s in self._secrets), default=1) - 1
        self._carry = ""
        self._key_block_chars: int | None = None

    def feed(self, text: str) -> str:
        pending = self._carry + text
        cut = self._release_point(pending)
        self._carry = pending[cut:]
        return self._redact(pending[:cut])

    def flush(self) -> str:
        rest, self._carry = self._carry, ""
        return self._redact(rest)

    def _release_point(self, pending: str) -> int:
        """How much of `pending` may be redacted and released now."""
        limit = len(pending) - self._hold
        if limit <= 0:
            return 0
        cut = max(pending.rfind(brk, 0, limit) for brk in _LINE_BREAKS) + 1
        if cut == 0 and limit > _LINE_MAX_CHARS:
            cut = _space_before(pending, limit)
        moved = True
        while moved:
            moved = False
            for secret in self._secrets:
                # A secret that straddles the cut goes out whole with a later release.
                start = pending.find(secret, max(cut - len(secret) + 1, 0), cut + len(secret) - 1)
                if start != -1:
                    cut, moved = start, True
        return cut

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        out = []
        while text:
            if self._key_block_chars is not None:
                text = self._skip_key_block(text)
                continue
            begin = _KEY_BEGIN.search(text) if "PRIVATE KEY" in text else None
            head = text if begin is None else text[: begin.start()]
            out.append(_credentials_redacted(head))
            if begin is None:
                break
            out.append(REDACTED)
            self._key_block_chars = 0
            text = text[begin.end() :]
        return "".join(out)

    def _skip_key_block(self, text: str) -> str:
        """Drop the inside of a private key block; return the text after it ends."""
        assert self._key_block_chars is not None  # only called inside a block
        allowance = _KEY_BLOCK_MAX_CHARS - self._key_block_chars
        end = _KEY_END.search(text)
        skip = end.end() if end else len(text)
        if end is None and skip <= allowance:
            self._key_block_chars += skip
            return ""
        self._key_block_chars = None
        return text[min(skip, allowance) :]


def _credentials_redacted(text: str) -> str:
    for pattern in _CREDENTIAL_PATTERNS:
        text = pattern.sub(_credential_replacement, text)
    return _BEARER_TOKEN.sub(_bearer_replacement, text)


def _starts_word(text: str, index: int) -> bool:
    """Whether text[index] begins a word (a credential's shape inside a longer word, such as
    "task-..." or "mask-...", is a coincidence, not a key)."""
    return index == 0 or not (text[index - 1].isalnum() or text[index - 1] == "_")


def _credential_replacement(match: re.Match[str]) -> str:
    return REDACTED if _starts_word(match.string, match.start()) else match.group(0)


def _bearer_replacement(match: re.Match[str]) -> str:
    bearer = match.start() - 1
    if bearer < 0 or match.string[bearer] not in "Bb" or not _starts_word(match.string, bearer):
        return match.group(0)
    return "earer " + REDACTED


def _space_before(text: str, limit: int) -> int:
    """Where to cut a very long line: after its last space before `limit`, but never between
    "Bearer" and its token; `limit` itself when the line has no usable space."""
    space = text.rfind(" ", 0, limit)
    if space > 0 and text[max(space - 6, 0) : space].lower() == "bearer":
        space = text.rfind(" ", 0, space - 6)
    return space + 1 if space > 0 else limit


def redact_text(text: str, secrets=()) -> str:
    """One piece of text with the secrets and credential-shaped text replaced."""
    if not secrets and _ANY_CREDENTIAL_SHAPE.search(text) is None:
        return text
    redactor = SecretRedactor(secrets)
    return redactor.feed(text) + redactor.flush()


def redact_document(value, secrets=()):
    """A JSON document with every string in it redacted as by redact_text (keys stay)."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {key: redact_document(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_document(item, secrets) for item in value]
    return value


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


# What a closed log amounts to (a namedtuple: dataclasses would cost every shim 2 MB of imports).
RunLogSummary = namedtuple(
    "RunLogSummary", ["log_bytes", "log_sha256", "stdout_excerpt", "stderr_excerpt"]
)


class _Stream:
    def __init__(self, secrets, excerpt_limit: int) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.redactor = SecretRedactor(secrets)
        self.excerpt = _Excerpt(excerpt_limit)


class RunLogWriter:
    """Appends `{ts, stream, chunk}` lines for stdout and stderr; secrets never reach the file."""

    def __init__(self, *, path, secrets, chunk_max_chars: int, excerpt_max_chars: int) -> None:
        secrets = tuple(secrets)
        os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - closed by close(), the writer's end
        self._sha = sha256()
        self._bytes = 0
        self._chunk_max = chunk_max_chars
        self._streams = {
            "stdout": _Stream(secrets, excerpt_max_chars),
            "stderr": _Stream(secrets, excerpt_max_chars),
        }

    def write(self, stream: str, data: bytes) -> None:
        if self._file.closed:
            return
        state = self._streams[stream]
        self._emit(stream, state.redactor.feed(state.decoder.decode(data)))

    def close(self) -> RunLogSummary:
        if not self._file.closed:
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
        line = json.dumps({"ts": _now_iso(), "stream": stream, "chunk": text}, ensure_ascii=False)
        encoded = (line + "\n").encode("utf-8", errors="replace")
        self._file.write(encoded)
        self._file.flush()
        self._sha.update(encoded)
        self._bytes += len(encoded)


# --- The process table, read from /proc (psutil is not available here) -------------------------


def _boot_time() -> float:
    with open("/proc/stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name, or None if the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    return raw[raw.rindex(b")") + 2 :].split()


def process_start_time(pid: int, boot_time: float) -> float | None:
    """The process's start time in epoch seconds, computed as psutil's create_time() is."""
    fields = _stat_fields(pid)
    return None if fields is None else boot_time + int(fields[19]) / _CLOCK_TICKS


def _carries_marker(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return needle in b"\0" + environ.read()
    except OSError:
        return False


class _Tree:
    """The run's processes: every descendant of the shim, plus anything carrying the marker."""

    def __init__(self, marker: str) -> None:
        self._needle = f"\0{MARKER_ENV}={marker}\0".encode()

    def live(self) -> dict[int, bytes]:
        """pid -> start ticks of every live (not zombie) process of the run but the shim."""
        me = os.getpid()
        parents: dict[int, int] = {}
        starts: dict[int, bytes] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            fields = _stat_fields(pid)
            if fields is None or pid == me or fields[0] == b"Z":
                continue
            parents[pid] = int(fields[1])
            starts[pid] = fields[19]
        tree = {pid for pid in parents if self._descends_from(pid, me, parents)}
        tree |= {pid for pid in parents if pid not in tree and _carries_marker(pid, self._needle)}
        return {pid: starts[pid] for pid in tree}

    @staticmethod
    def _descends_from(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
        seen = 0
        while pid in parents and seen < len(parents):
            pid = parents[pid]
            if pid == ancestor:
                return True
            seen += 1
        return False

    def signal_all(self, sig: int) -> list[int]:
        """Send sig to every live process of the run; returns the pids signalled."""
        sent = []
        for pid, start in self.live().items():
            if _send(pid, start, sig):
                sent.append(pid)
        return sent


def _send(pid: int, start: bytes, sig: int) -> bool:
    """Signal pid only if it is still the process seen in the scan (pids are recycled)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        # The pidfd pins the process: if its start time still matches, the signal reaches it.
        fields = _stat_fields(pid)
        if fields is None or fields[19] != start or fields[0] == b"Z":
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


# --- The shim ----------------------------------------------------------------------------------


def _now_iso() -> str:
    """Now in UTC as datetime.isoformat() writes it (the datetime module costs a shim 7 ms)."""
    now = time.time()
    seconds = int(now)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int((now - seconds) * 1_000_000):06d}+00:00"


def _write_atomically(path: str, document: dict) -> None:
    """Write JSON so that a reader sees the whole document or none (tmp, fsync, rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(document, out, ensure_ascii=False)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Shim:
    """One run: start the agent, pump its output into the log, stop it when told, report."""

    def __init__(self, spec: dict, handshake_fd: int) -> None:
        self.spec = spec
        self.handshake_fd = handshake_fd
        self.tree = _Tree(spec["marker"])
        self.boot_time = _boot_time()
        self.notes: list[str] = []
        self.stop: str | None = None
        self.stop_requested = False
        self.agent: subprocess.Popen | None = None
        self.agent_status: int | None = None
        self.shim_log = open(spec["shimLogPath"], "a", encoding="utf-8")  # noqa: SIM115

    def note(self, text: str) -> None:
        """A line in the shim's own log; notes also go into the exit report as run events."""
        self.notes.append(text)
        self.say(text)

    def say(self, text: str) -> None:
        self.shim_log.write(f"{_now_iso()} shim {os.getpid()}: {text}\n")
        self.shim_log.flush()

    def handshake(self, document: dict) -> None:
        if self.handshake_fd < 0:
            return
        try:
            os.write(self.handshake_fd, (json.dumps(document) + "\n").encode())
        except OSError as exc:
            # The launcher is gone; the run goes on and is adopted by identity and marker.
            self.say(f"handshake not delivered: {exc}")
        os.close(self.handshake_fd)
        self.handshake_fd = -1

    def identity(self) -> dict:
        me = os.getpid()
        return {"shimPid": me, "shimStartedAt": process_start_time(me, self.boot_time)}

    def run(self) -> int:
        _become_subreaper()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _ignore_signal)
        signal.signal(signal.SIGTERM, self._on_term)
        # Its own session already keeps terminal signals away; a stray SIGHUP/SIGINT must not
        # end a run either (only the supervisor's SIGTERM stops it).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        writer = RunLogWriter(
            path=self.spec["logPath"],
            secrets=self.spec.get("secrets") or (),
            chunk_max_chars=self.spec["chunkMaxChars"],
            excerpt_max_chars=self.spec["excerptMaxChars"],
        )
        report: dict = {
            "version": REPORT_VERSION,
            "runId": self.spec["runId"],
            "shimPid": os.getpid(),
            "timeoutSec": self.spec.get("timeoutSec"),
        }
        try:
            if "http" in self.spec:
                report.update(self._http(writer))
            else:
                report.update(self._process(writer, wake_r))
        finally:
            summary = writer.close()
        report.update(
            endedAt=_now_iso(),
            stop=self.stop,
            notes=self.notes,
            log={
                "bytes": summary.log_bytes,
                "sha256": summary.log_sha256,
                "stdoutExcerpt": summary.stdout_excerpt,
                "stderrExcerpt": summary.stderr_excerpt,
            },
        )
        _write_atomically(self.spec["exitReportPath"], report)
        self.say(f"exit report written: {self.spec['exitReportPath']}")
        return 0

    def _on_term(self, signum, frame) -> None:
        self.stop_requested = True

    # -- a process agent ------------------------------------------------------------------------

    def _process(self, writer: RunLogWriter, wake_r: int) -> dict:
        spec = self.spec["process"]
        stdin_data = binascii.a2b_base64(spec["stdin"]) if spec.get("stdin") is not None else None
        try:
            self.agent = subprocess.Popen(
                spec["argv"],
                cwd=spec.get("cwd"),
                env={**spec["env"], MARKER_ENV: self.spec["marker"]},
                stdin=subprocess.DEVNULL if stdin_data is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
                # Its own session and group, so the agent's tree can be signalled together.
                start_new_session=True,
            )
        except OSError as exc:
            reason = _spawn_error(exc, spec["argv"][0], spec.get("cwd"))
            self.handshake({**self.identity(), "spawnError": reason})
            self.say(f"agent did not start: {reason}")
            return {"spawnError": reason, "exitCode": None, "signal": None}
        agent_pid = self.agent.pid
        self.handshake(
            {
                **self.identity(),
                "agentPid": agent_pid,
                "agentStartedAt": process_start_time(agent_pid, self.boot_time),
            }
        )
        self.say(f"agent pid {agent_pid} started: {spec['argv'][0]}")
        self._pump(writer, wake_r, stdin_data)
        status = self.agent_status
        assert status is not None  # _pump returns once the agent is reaped
        code = os.waitstatus_to_exitcode(status)
        return {
            "agentPid": agent_pid,
            "exitCode": code if code >= 0 else None,
            "signal": _signal_name(-code) if code < 0 else None,
        }

    def _pump(self, writer: RunLogWriter, wake_r: int, stdin_data: bytes | None) -> None:
        """Move output into the log until the agent has ended and its output is closed,
        stopping the agent on timeout or request; nothing of its tree outlives the run."""
        agent = self.agent
        assert agent is not None and agent.stdout is not None and agent.stderr is not None
        selector = selectors.DefaultSelector()
        selector.register(wake_r, selectors.EVENT_READ, "wake")
        for pipe, stream in ((agent.stdout, "stdout"), (agent.stderr, "stderr")):
            os.set_blocking(pipe.fileno(), False)
            selector.register(pipe.fileno(), selectors.EVENT_READ, stream)
        pending = memoryview(stdin_data) if stdin_data else None
        if agent.stdin is not None:
            if pending:
                os.set_blocking(agent.stdin.fileno(), False)
                selector.register(agent.stdin.fileno(), selectors.EVENT_WRITE, "stdin")
            else:
                agent.stdin.close()
        open_streams = 2
        timeout_sec = float(self.spec.get("timeoutSec") or 0)
        deadline = time.monotonic() + timeout_sec if timeout_sec > 0 else None
        kill_at: float | None = None
        drain_until: float | None = None
        give_up_at: float | None = None
        while open_streams or self.agent_status is None:
            now = time.monotonic()
            if self.agent_status is None:
                if self.stop is None and self.stop_requested:
                    self._stop("cancel", "stop requested (cancel): terminating the agent's tree")
                elif self.stop is None and deadline is not None and now >= deadline:
                    self._stop("timeout", f"timed out after {timeout_sec:g}s: terminating tree")
                if self.stop is not None and kill_at is None:
                    kill_at = now + float(self.spec.get("graceSec") or 0)
                if kill_at is not None and now >= kill_at:
                    self._kill_tree("grace over: killing what is left of the agent's tree")
                    kill_at = float("inf")
                wake_at = [deadline if self.stop is None else kill_at]
            else:
                # The agent has ended; descendants may still hold its output open.
                if drain_until is None:
                    drain_until = now + float(self.spec.get("drainSec") or 0)
                if give_up_at is None and now >= drain_until:
                    self._leftovers()
                    # Only an unkillable process can still hold the output after this.
                    give_up_at = time.monotonic() + _KILL_WAIT_SEC
                if give_up_at is not None and time.monotonic() >= give_up_at:
                    self.note("output still open after the run's tree was terminated")
                    break
                wake_at = [drain_until if give_up_at is None else give_up_at]
            waits = [at - now for at in wake_at if at is not None and at != float("inf")]
            for key, _mask in selector.select(max(min(waits), 0.0) if waits else None):
                if key.data == "wake":
                    _drain_fd(wake_r)
                elif key.data == "stdin":
                    assert pending is not None
                    pending = self._feed(selector, pending)
                elif not self._read(key.fd, key.data, writer):
                    selector.unregister(key.fd)
                    open_streams -= 1
            self._reap()
        selector.close()
        if give_up_at is None:
            self._leftovers()

    def _feed(self, selector, pending: memoryview) -> memoryview | None:
        agent = self.agent
        assert agent is not None and agent.stdin is not None
        try:
            written = os.write(agent.stdin.fileno(), pending[:_READ_BYTES])
            pending = pending[written:]
        except BlockingIOError:
            return pending
        except OSError:
            # The agent exited or closed its input without reading it: its outcome to report.
            pending = pending[len(pending) :]
        if not pending:
            selector.unregister(agent.stdin.fileno())
            agent.stdin.close()
            return None
        return pending

    @staticmethod
    def _read(fd: int, stream: str, writer: RunLogWriter) -> bool:
        try:
            data = os.read(fd, _READ_BYTES)
        except BlockingIOError:
            return True
        if data:
            writer.write(stream, data)
            return True
        os.close(fd)
        return False

    def _reap(self) -> None:
        """Reap every exited child: the agent, and orphans of its tree handed to us."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            agent = self.agent
            if agent is not None and pid == agent.pid and self.agent_status is None:
                self.agent_status = status
                agent.returncode = os.waitstatus_to_exitcode(status)

    def _stop(self, why: str, note: str) -> None:
        self.stop = why
        self.note(note)
        pids = self.tree.signal_all(signal.SIGTERM)
        self.say(f"SIGTERM sent to {pids}")

    def _kill_tree(self, note: str) -> list[int]:
        pids = self.tree.signal_all(signal.SIGKILL)
        if pids:
            self.note(f"{note}: SIGKILL sent to {pids}")
        return pids

    def _leftovers(self) -> None:
        """The agent has ended: no process of its tree may outlive the run (descendants that
        still held its output, daemons it left behind)."""
        left = self.tree.live()
        if not left:
            return
        self.note(f"agent ended; terminating {len(left)} leftover processes {sorted(left)}")
        self.tree.signal_all(signal.SIGTERM)
        grace_deadline = time.monotonic() + float(self.spec.get("leftoverGraceSec") or 0)
        while self.tree.live() and time.monotonic() < grace_deadline:
            self._reap()
            time.sleep(0.05)
        kill_deadline = time.monotonic() + _KILL_WAIT_SEC
        while self.tree.live() and time.monotonic() < kill_deadline:
            self._kill_tree("leftovers outlived SIGTERM")
            self._reap()
            time.sleep(0.05)
        survivors = sorted(self.tree.live())
        if survivors:
            self.note(f"processes {survivors} survived SIGKILL")
        self._reap()

    # -- an http agent --------------------------------------------------------------------------

    def _http(self, writer: RunLogWriter) -> dict:
        # Imported here: only http runs pay for urllib (and ssl) in memory.
        import urllib.error
        import urllib.request

        spec = self.spec["http"]
        self.handshake(self.identity())
        request = urllib.request.Request(
            spec["url"],
            data=binascii.a2b_base64(spec["body"]),
            headers=spec["headers"],
            method=spec["method"],
        )
        timeout = float(spec.get("timeoutSec") or 0) or None
        # A cancel must interrupt a request blocked on the network: raise out of it.
        signal.signal(signal.SIGTERM, _raise_cancelled)
        try:
            if self.stop_requested:
                raise _Cancelled()
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read(_HTTP_BODY_EXCERPT_CHARS)
                status, error = response.status, None
        except urllib.error.HTTPError as exc:
            body, status, error = exc.read(_HTTP_BODY_EXCERPT_CHARS), exc.code, f"HTTP {exc.code}"
        except _Cancelled:
            self.stop = "cancel"
            self.note("stop requested (cancel): request abandoned")
            return {"exitCode": None, "signal": None, "http": {"status": None, "error": None}}
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            body, status, error = b"", None, f"request failed: {reason}"
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if body:
            writer.write("stdout", body)
        return {"exitCode": None, "signal": None, "http": {"status": status, "error": error}}


class _Cancelled(Exception):
    """SIGTERM during an http run: the request is abandoned."""


def _raise_cancelled(signum, frame) -> None:
    raise _Cancelled()


def _ignore_signal(signum, frame) -> None:
    """A Python-level handler, so the signal wakes the loop through the wakeup fd."""


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        return


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def _spawn_error(exc: OSError, command: str, cwd: str | None) -> str:
    if cwd is not None and exc.filename == cwd:
        reason = f"working directory {cwd!r}: {exc.strerror}"
    elif isinstance(exc, FileNotFoundError):
        reason = "command not found"
    else:
        reason = exc.strerror or str(exc)
    return f"cannot start {command!r}: {reason}"


def _become_subreaper() -> None:
    # Orphaned descendants of the agent (double forks, setsid daemons) are re-parented to the
    # shim instead of init: they stay in the run's tree, and the shim reaps them (init does not
    # reap in some containers, where they would stay zombies forever).
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].lstrip("-").isdigit():
        print("usage: run_shim.py HANDSHAKE_FD < spec.json", file=sys.stderr)
        return 2
    handshake_fd = int(argv[1])
    spec = json.loads(sys.stdin.buffer.read())
    # The launcher's child exits at once; the monitor is re-parented away from the product.
    if os.fork() > 0:
        os._exit(0)
    # The launcher's stdin and stdout are of no use to the run; keep them from pinning pipes.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    os.close(devnull)
    shim = Shim(spec, handshake_fd)
    try:
        return shim.run()
    except BaseException as exc:
        shim.say(f"shim failed: {type(exc).__name__}: {exc}")
        shim.handshake({**shim.identity(), "shimError": f"{type(exc).__name__}: {exc}"})
        if shim.agent is not None and shim.agent_status is None:
            # Without a monitor the run cannot be reported: the reaper must find it lost.
            shim.tree.signal_all(signal.SIGKILL)
        raise
    finally:
        shim.shim_log.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
