"""Adapters, keyed by Agent.adapter_type: each turns a run into a process or HTTP invocation."""

from __future__ import annotations

from heartbeat.adapters.base import (
    AdapterConfigInvalid,
    AdapterError,
    AdapterUnknown,
    HttpInvocation,
    ProcessInvocation,
    RunInvocationContext,
)
from heartbeat.adapters.cli import ClaudeLocalAdapter, CodexLocalAdapter
from heartbeat.adapters.cli_output import CliOutput, CliOutputParser, TokenUsage, UsageBasis
from heartbeat.adapters.http import HttpAdapter
from heartbeat.adapters.process import ProcessAdapter

ADAPTERS = {
    adapter.adapter_type: adapter
    for adapter in (ProcessAdapter(), CodexLocalAdapter(), ClaudeLocalAdapter(), HttpAdapter())
}


def adapter_invocation(ctx: RunInvocationContext) -> ProcessInvocation | HttpInvocation:
    """The invocation of a run; AdapterUnknown / AdapterConfigInvalid say why there is none."""
    adapter = ADAPTERS.get(ctx.adapter_type)
    if adapter is None:
        known = ", ".join(sorted(ADAPTERS))
        raise AdapterUnknown(f"unknown adapter type {ctx.adapter_type!r} (known: {known})")
    return adapter.invocation(ctx)


def adapter_resumes_sessions(adapter_type: str) -> bool:
    """Whether this adapter's agents keep a session a later run can resume (the CLIs do)."""
    adapter = ADAPTERS.get(adapter_type)
    return adapter is not None and adapter.resumes_sessions


def adapter_output_parser(adapter_type: str) -> CliOutputParser | None:
    """A parser for the output of this adapter's agents; None when it prints no known format
    (a `process` or `http` agent's output is only logged)."""
    adapter = ADAPTERS.get(adapter_type)
    return adapter.output_parser() if adapter is not None else None


__all__ = [
    "ADAPTERS",
    "AdapterConfigInvalid",
    "AdapterError",
    "AdapterUnknown",
    "CliOutput",
    "CliOutputParser",
    "HttpInvocation",
    "ProcessInvocation",
    "RunInvocationContext",
    "TokenUsage",
    "UsageBasis",
    "adapter_invocation",
    "adapter_output_parser",
    "adapter_resumes_sessions",
]
