"""What the coding-agent CLIs print, read line by line: Claude Code's `stream-json` and Codex's
`exec --json` events, the formats Paperclip's claude-local and codex-local adapters parse.

A parser is fed one line of the agent's output at a time (taken from the run log, never the
whole output at once) and keeps only what the run's record needs, in bounded memory: the
session id, the model, token usage, cost, the final result text and whether the CLI itself
reported a failure. No line can fail a run: one that is not JSON, not an object, of an unknown
type or with fields of the wrong type is counted and skipped.
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

logger = logging.getLogger(__name__)

# The run's summary (the final result text) kept on the run and posted as its issue comment.
SUMMARY_MAX_CHARS = 32 * 1024
# An error message taken from the output (the first stderr line, a CLI's error event).
_ERROR_MAX_CHARS = 1000
# How much of a stderr line is searched for an unknown-session message.
_STDERR_SCAN_CHARS = 2000

# Said by `claude --resume` and `codex exec resume` when the session no longer exists (the
# patterns Paperclip's adapters retry on).
_CLAUDE_UNKNOWN_SESSION = re.compile(
    r"no conversation found with session id|unknown session|session .* not found|"
    r"not a valid uuid|--resume requires a valid session|is not a uuid|"
    r"does not match any session title",
    re.IGNORECASE,
)
_CODEX_UNKNOWN_SESSION = re.compile(
    r"unknown (session|thread)|session .* not found|thread .* not found|"
    r"conversation .* not found|missing rollout path for thread|"
    r"state db missing rollout path|no rollout found for thread id",
    re.IGNORECASE,
)


class UsageBasis(StrEnum):
    """What a CLI's token counts cover."""

    # This invocation only (Claude's final result).
    PER_RUN = "per_run"
    # The whole session so far, across resumed invocations (Codex's turn.completed): a run's
    # own usage is the difference from the session's previous run.
    SESSION_CUMULATIVE = "session_cumulative"


@dataclass(frozen=True)
class TokenUsage:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    # Claude only: input written to the prompt cache (billed apart from input_tokens).
    cache_creation_input_tokens: int = 0

    def minus(self, earlier: TokenUsage) -> TokenUsage:
        """The usage since `earlier` (a previous total of the same session)."""
        return TokenUsage(
            input_tokens=max(self.input_tokens - earlier.input_tokens, 0),
            cached_input_tokens=max(self.cached_input_tokens - earlier.cached_input_tokens, 0),
            output_tokens=max(self.output_tokens - earlier.output_tokens, 0),
            cache_creation_input_tokens=max(
                self.cache_creation_input_tokens - earlier.cache_creation_input_tokens, 0
            ),
        )

    def covers(self, earlier: TokenUsage) -> bool:
        """Whether this total can follow `earlier` in one session (no counter went back)."""
        return (
            self.input_tokens >= earlier.input_tokens
            and self.cached_input_tokens >= earlier.cached_input_tokens
            and self.output_tokens >= earlier.output_tokens
        )


@dataclass(frozen=True)
class CliOutput:
    """What a CLI's output says about its run (None: the output did not say)."""

    cli: str
    provider: str
    usage_basis: UsageBasis
    session_id: str | None = None
    model: str | None = None
    usage: TokenUsage | None = None
    cost_usd: Decimal | None = None
    summary: str | None = None
    # The CLI reported the run failed, even if it exited 0 (Claude's `is_error`).
    failed: bool = False
    error: str | None = None
    # The output says a resumed session does not exist (the run retries without it).
    unknown_session: bool = False
    # Small facts of the CLI's final report for the run's result_json (camelCase keys).
    details: dict[str, Any] = field(default_factory=dict)
    lines: int = 0
    malformed_lines: int = 0
    # Lines too long to keep, dropped before parsing (set by whoever reads the output).
    oversized_lines: int = 0

    @property
    def cost_cents(self) -> int:
        """The cost in whole cents, rounded half up (0 when the CLI reported none)."""
        if self.cost_usd is None:
            return 0
        return int((self.cost_usd * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _int(value: Any) -> int:
    """A token count: non-negative integers only; anything else counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    try:
        return max(int(value), 0)
    except (OverflowError, ValueError):
        return 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _cost(value: Any) -> Decimal | None:
    """A reported dollar cost, exact as printed; None if it is not a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        return None
    return cost if cost.is_finite() and cost >= 0 else None


def _capped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _TextTail:
    """The last `limit` characters of text pieces joined by a separator, in bounded memory."""

    def __init__(self, limit: int, separator: str) -> None:
        self._limit = limit
        self._separator = separator
        self._text = ""

    def add(self, piece: str) -> None:
        self._text = f"{self._text}{self._separator}{piece}" if self._text else piece
        if len(self._text) > 2 * self._limit:
            self._text = self._text[-self._limit :]

    def value(self) -> str | None:
        text = self._text[-self._limit :].strip()
        return text or None


class CliOutputParser(ABC):
    """Fed the agent's output one line at a time; `result()` says what it amounts to."""

    cli: str
    provider: str
    usage_basis: UsageBasis
    unknown_session_pattern: re.Pattern[str]

    def __init__(self) -> None:
        self.lines = 0
        self.malformed_lines = 0
        self.unknown_session = False
        self.first_stderr_line: str | None = None
        self.session_id: str | None = None

    def feed(self, stream: str, line: str) -> None:
        """Take one line the agent printed on `stream` (without its newline)."""
        if stream == "stderr":
            self._stderr(line)
            return
        text = line.strip()
        if not text:
            return
        self.lines += 1
        try:
            event = json.loads(text)
        except ValueError:
            self.malformed_lines += 1
            self._not_json(text)
            return
        if not isinstance(event, dict):
            self.malformed_lines += 1
            return
        try:
            self.event(event)
        except Exception:
            # A field of a shape no version of the CLI printed: skip the line, keep the run.
            self.malformed_lines += 1
            logger.debug("%s output line skipped", self.cli, exc_info=True)

    def _stderr(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        if self.first_stderr_line is None:
            self.first_stderr_line = _capped(text, _ERROR_MAX_CHARS)
        self._check_unknown_session(text[:_STDERR_SCAN_CHARS])

    def _not_json(self, text: str) -> None:
        self._check_unknown_session(text[:_STDERR_SCAN_CHARS])

    def _check_unknown_session(self, text: str | None) -> None:
        if text and not self.unknown_session and self.unknown_session_pattern.search(text):
            self.unknown_session = True

    @abstractmethod
    def event(self, event: dict[str, Any]) -> None:
        """Take one JSON event of the CLI's stream."""

    @abstractmethod
    def result(self) -> CliOutput:
        """What the output fed so far says."""

    def _output(self, **facts: Any) -> CliOutput:
        return CliOutput(
            cli=self.cli,
            provider=self.provider,
            usage_basis=self.usage_basis,
            session_id=self.session_id,
            unknown_session=self.unknown_session,
            lines=self.lines,
            malformed_lines=self.malformed_lines,
            **facts,
        )


class ClaudeStreamJsonParser(CliOutputParser):
    """`claude --print --output-format stream-json --verbose`: a `system`/`init` event with
    the session id and model, `assistant` messages, and a final `result` with the usage, the
    cost (`total_cost_usd`) and the result text."""

    cli = "claude"
    provider = "anthropic"
    usage_basis = UsageBasis.PER_RUN
    unknown_session_pattern = _CLAUDE_UNKNOWN_SESSION

    def __init__(self) -> None:
        super().__init__()
        self.model: str | None = None
        self.assistant_text = _TextTail(SUMMARY_MAX_CHARS, "\n\n")
        self.final: dict[str, Any] | None = None

    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            self.session_id = _str(event.get("session_id")) or self.session_id
            self.model = _str(event.get("model")) or self.model
        elif kind == "assistant":
            self.session_id = _str(event.get("session_id")) or self.session_id
            message = event.get("message")
            if isinstance(message, dict):
                self.model = self.model or _str(message.get("model"))
                content = message.get("content")
                for block in content if isinstance(content, list) else ():
                    if isinstance(block, dict) and block.get("type") == "text":
                        text = _str(block.get("text"))
                        if text:
                            self.assistant_text.add(text)
        elif kind == "result":
            self.session_id = _str(event.get("session_id")) or self.session_id
            self.final = self._final(event)
            for message in (self.final["result"], *self.final["errors"]):
                self._check_unknown_session(message)

    @staticmethod
    def _final(event: dict[str, Any]) -> dict[str, Any]:
        """The parts of the result event the run keeps (the event itself may be large)."""
        usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
        errors = event.get("errors") if isinstance(event.get("errors"), list) else []
        messages = []
        for entry in errors[:10]:
            if isinstance(entry, dict):
                entry = entry.get("message") or entry.get("error") or entry.get("code")
            if _str(entry):
                messages.append(_capped(entry.strip(), _ERROR_MAX_CHARS))
        return {
            "subtype": _str(event.get("subtype")),
            "is_error": event.get("is_error") is True,
            "result": _str(event.get("result")),
            "errors": messages,
            "cost_usd": _cost(event.get("total_cost_usd")),
            "usage": TokenUsage(
                input_tokens=_int(usage.get("input_tokens")),
                cached_input_tokens=_int(usage.get("cache_read_input_tokens")),
                output_tokens=_int(usage.get("output_tokens")),
                cache_creation_input_tokens=_int(usage.get("cache_creation_input_tokens")),
            ),
            "num_turns": _int(event.get("num_turns")) if "num_turns" in event else None,
            "duration_ms": _int(event.get("duration_ms")) if "duration_ms" in event else None,
            "stop_reason": _str(event.get("stop_reason")),
        }

    def result(self) -> CliOutput:
        final = self.final
        if final is None:
            return self._output(
                model=self.model, summary=self.assistant_text.value(), error=self.first_stderr_line
            )
        succeeded = final["subtype"] == "success" and not final["is_error"]
        summary = final["result"] or self.assistant_text.value()
        return self._output(
            model=self.model,
            usage=final["usage"],
            cost_usd=final["cost_usd"],
            summary=_capped(summary.strip(), SUMMARY_MAX_CHARS) if summary else None,
            failed=final["is_error"],
            error=None if succeeded else self._failure(final),
            details={
                key: value
                for key, value in (
                    ("subtype", final["subtype"]),
                    ("isError", final["is_error"]),
                    ("numTurns", final["num_turns"]),
                    ("durationMs", final["duration_ms"]),
                    ("stopReason", final["stop_reason"]),
                    ("errors", final["errors"] or None),
                )
                if value is not None
            },
        )

    def _failure(self, final: dict[str, Any]) -> str:
        """Paperclip's wording: `Claude run failed: subtype=<subtype>: <detail>`."""
        detail = final["result"] or (final["errors"][0] if final["errors"] else None)
        parts = ["Claude run failed"]
        if final["subtype"]:
            parts.append(f"subtype={final['subtype']}")
        if detail:
            parts.append(_capped(detail.strip(), _ERROR_MAX_CHARS))
        return ": ".join(parts)


class CodexJsonParser(CliOutputParser):
    """`codex exec --json`: `thread.started` with the session (thread) id, `item.completed`
    agent messages, `turn.completed` with the session's token totals, `turn.failed` and
    `error` events. Codex reports no cost."""

    cli = "codex"
    provider = "openai"
    usage_basis = UsageBasis.SESSION_CUMULATIVE
    unknown_session_pattern = _CODEX_UNKNOWN_SESSION

    def __init__(self) -> None:
        super().__init__()
        self.message: str | None = None
        self.usage: TokenUsage | None = None
        self.error: str | None = None
        self.turn: str | None = None

    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "thread.started":
            self.session_id = _str(event.get("thread_id")) or self.session_id
        elif kind == "item.completed":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "agent_message":
                text = _str(item.get("text")) or self._content_text(item.get("content"))
                if text:
                    self.message = _capped(text.strip(), SUMMARY_MAX_CHARS)
        elif kind == "turn.completed":
            self.turn = "completed"
            usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
            self.usage = TokenUsage(
                input_tokens=_int(usage.get("input_tokens")),
                cached_input_tokens=_int(usage.get("cached_input_tokens")),
                output_tokens=_int(usage.get("output_tokens")),
            )
        elif kind == "turn.failed":
            self.turn = "failed"
            error = event.get("error")
            message = _str(error.get("message")) if isinstance(error, dict) else None
            self._error(message)
        elif kind == "error":
            self._error(_str(event.get("message")))

    @staticmethod
    def _content_text(content: Any) -> str | None:
        pieces = [
            block["text"]
            for block in (content if isinstance(content, list) else ())
            if isinstance(block, dict) and isinstance(block.get("text"), str)
        ]
        return _str("".join(pieces))

    def _error(self, message: str | None) -> None:
        if message:
            self.error = _capped(message.strip(), _ERROR_MAX_CHARS)
            self._check_unknown_session(message)

    def result(self) -> CliOutput:
        return self._output(
            usage=self.usage,
            summary=self.message,
            failed=self.turn == "failed",
            error=self.error or self.first_stderr_line,
            details={"turn": self.turn} if self.turn else {},
        )
