"""`process`: run any command (adapter_config: command, args, cwd, env, timeoutSec, graceSec)."""

from __future__ import annotations

from heartbeat.adapters.base import (
    ProcessInvocation,
    RunInvocationContext,
    config_object,
    config_required_str,
    config_seconds,
    config_str,
    config_str_list,
    config_str_map,
    env_for_display,
    meta_redacted,
    process_env,
    secret_values,
)
from heartbeat.conf import heartbeat_conf


class ProcessAdapter:
    adapter_type = "process"

    resumes_sessions = False

    def output_parser(self) -> None:
        """Its output is logged as it is: no format to read a session or usage from."""
        return None

    def invocation(self, ctx: RunInvocationContext) -> ProcessInvocation:
        config = config_object(ctx.adapter_config)
        conf = heartbeat_conf()
        command = config_required_str(config, "command")
        args = config_str_list(config, "args")
        extra_env = config_str_map(config, "env")
        secrets = secret_values(ctx, extra_env)
        cwd = config_str(config, "cwd")
        return ProcessInvocation(
            argv=(command, *args),
            cwd=cwd,
            env=process_env(ctx, extra_env),
            timeout_sec=config_seconds(config, "timeoutSec", default=conf.adapter_timeout_sec),
            grace_sec=config_seconds(config, "graceSec", default=conf.adapter_grace_sec),
            secret_values=secrets,
            meta=meta_redacted(
                {
                    "adapterType": self.adapter_type,
                    "command": command,
                    "commandArgs": list(args),
                    "cwd": cwd,
                    "env": env_for_display(extra_env),
                },
                secrets,
            ),
        )
