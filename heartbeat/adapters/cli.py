"""Local coding-agent CLIs: `codex_local` (codex exec) and `claude_local` (claude --print).

adapter_config: command (path, default the CLI's name), model, cwd, extraArgs, promptTemplate, env,
timeoutSec (default 0 = none), graceSec (default 20), and per CLI: codex `search`,
`dangerouslyBypassApprovalsAndSandbox`; claude `maxTurnsPerRun`, `dangerouslySkipPermissions`.
The prompt is rendered from the template and given on stdin.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from heartbeat.adapters.base import (
    DEFAULT_PROMPT_TEMPLATE,
    AdapterConfigInvalid,
    ProcessInvocation,
    RunInvocationContext,
    config_bool,
    config_object,
    config_seconds,
    config_str,
    config_str_list,
    config_str_map,
    env_for_display,
    meta_redacted,
    process_env,
    prompt_render,
    secret_values,
)
from heartbeat.adapters.cli_output import (
    ClaudeStreamJsonParser,
    CliOutputParser,
    CodexJsonParser,
)

# The reference's local CLI adapters: no timeout, 20 s grace between TERM and KILL.
_CLI_TIMEOUT_SEC = 0.0
_CLI_GRACE_SEC = 20.0


class _CliAdapter(ABC):
    adapter_type: str
    default_command: str
    # Each run starts or resumes a CLI session (`--resume` / `exec resume`).
    resumes_sessions = True

    @abstractmethod
    def cli_args(self, config: Mapping[str, Any], ctx: RunInvocationContext) -> list[str]:
        """The CLI's arguments after the command, ending with where the prompt comes from."""

    @abstractmethod
    def output_parser(self) -> CliOutputParser:
        """A parser for what the CLI prints (read back from the run log at finalize)."""

    def invocation(self, ctx: RunInvocationContext) -> ProcessInvocation:
        config = config_object(ctx.adapter_config)
        command = config_str(config, "command", default=self.default_command)
        assert command is not None  # defaulted above
        argv = (command, *self.cli_args(config, ctx))
        extra_env = config_str_map(config, "env")
        secrets = secret_values(ctx, extra_env)
        template = config_str(config, "promptTemplate", default=DEFAULT_PROMPT_TEMPLATE)
        assert template is not None  # defaulted above
        prompt = prompt_render(template, ctx)
        cwd = config_str(config, "cwd")
        return ProcessInvocation(
            argv=argv,
            cwd=cwd,
            env=process_env(ctx, extra_env),
            timeout_sec=config_seconds(config, "timeoutSec", default=_CLI_TIMEOUT_SEC),
            grace_sec=config_seconds(config, "graceSec", default=_CLI_GRACE_SEC),
            stdin=prompt.encode(),
            secret_values=secrets,
            meta=meta_redacted(
                {
                    "adapterType": self.adapter_type,
                    "command": command,
                    "commandArgs": list(argv[1:]),
                    "cwd": cwd,
                    "env": env_for_display(extra_env),
                    "prompt": prompt,
                },
                secrets,
            ),
        )


class CodexLocalAdapter(_CliAdapter):
    adapter_type = "codex_local"
    default_command = "codex"

    def output_parser(self) -> CliOutputParser:
        return CodexJsonParser()

    def cli_args(self, config: Mapping[str, Any], ctx: RunInvocationContext) -> list[str]:
        args = ["exec", "--json"]
        if config_bool(config, "search"):
            args.append("--search")
        if config_bool(config, "dangerouslyBypassApprovalsAndSandbox"):
            args.append("--dangerously-bypass-approvals-and-sandbox")
        model = config_str(config, "model")
        if model:
            args += ["--model", model]
        args += config_str_list(config, "extraArgs")
        if ctx.session_id_before:
            args += ["resume", ctx.session_id_before]
        # "-": read the prompt from stdin.
        return [*args, "-"]


class ClaudeLocalAdapter(_CliAdapter):
    adapter_type = "claude_local"
    default_command = "claude"

    def output_parser(self) -> CliOutputParser:
        return ClaudeStreamJsonParser()

    def cli_args(self, config: Mapping[str, Any], ctx: RunInvocationContext) -> list[str]:
        args = ["--print", "-", "--output-format", "stream-json", "--verbose"]
        if ctx.session_id_before:
            args += ["--resume", ctx.session_id_before]
        if config_bool(config, "dangerouslySkipPermissions"):
            args.append("--dangerously-skip-permissions")
        model = config_str(config, "model")
        if model:
            args += ["--model", model]
        max_turns = config.get("maxTurnsPerRun")
        if max_turns is not None:
            if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
                raise AdapterConfigInvalid("adapter_config.maxTurnsPerRun must be an integer >= 1")
            args += ["--max-turns", str(max_turns)]
        return [*args, *config_str_list(config, "extraArgs")]
