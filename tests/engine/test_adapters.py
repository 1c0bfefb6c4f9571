"""Adapters turn a run into an invocation; bad configuration is a clear error, never a crash."""

from __future__ import annotations

import pytest

from heartbeat.adapters import (
    AdapterConfigInvalid,
    AdapterUnknown,
    HttpInvocation,
    ProcessInvocation,
    RunInvocationContext,
    adapter_invocation,
)


def _ctx(adapter_type: str, config: object, **fields) -> RunInvocationContext:
    values = {
        "run_id": "run-1",
        "agent_id": "agent-1",
        "agent_name": "Ada",
        "agent_role": "engineer",
        "company_id": "company-1",
        "adapter_type": adapter_type,
        "adapter_config": config,
        "context": {"issueId": "issue-1", "wakeReason": "issue_assigned"},
        "session_id_before": None,
        "agent_env": {"PAPERCLIP_RUN_ID": "run-1", "PAPERCLIP_API_KEY": "pcr_secret_key"},
        "api_key": "pcr_secret_key",
    }
    return RunInvocationContext(**{**values, **fields})


def test_unknown_adapter_type_names_the_known_ones():
    with pytest.raises(AdapterUnknown, match=r"unknown adapter type 'gemini_local'.*process"):
        adapter_invocation(_ctx("gemini_local", {}))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([], "adapter_config must be a JSON object"),
        ({}, "adapter_config.command is required"),
        ({"command": "x", "args": "a b"}, "args must be a list of strings"),
        ({"command": "x", "env": {"A": 1}}, "env must be an object of string values"),
        ({"command": "x", "timeoutSec": -1}, "timeoutSec must be a number of seconds"),
    ],
)
def test_invalid_process_config_is_refused_with_the_field(config, message):
    with pytest.raises(AdapterConfigInvalid, match=message):
        adapter_invocation(_ctx("process", config))


def test_process_invocation_carries_agent_env_over_adapter_env_and_hides_server_secrets(
    monkeypatch,
):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@h/db")
    monkeypatch.setenv("PAPERCLIP_SECRET_KEY", "server-key")
    config = {
        "command": "python3",
        "args": ["-V"],
        "env": {"PAPERCLIP_RUN_ID": "spoofed", "GITHUB_TOKEN": "ghp_abcdef"},
        "timeoutSec": 5,
        "graceSec": 1,
    }
    invocation = adapter_invocation(_ctx("process", config))
    assert isinstance(invocation, ProcessInvocation)
    assert invocation.argv == ("python3", "-V")
    assert invocation.env["PAPERCLIP_RUN_ID"] == "run-1"
    assert "DATABASE_URL" not in invocation.env
    assert "PAPERCLIP_SECRET_KEY" not in invocation.env
    assert set(invocation.secret_values) == {"pcr_secret_key", "spoofed", "ghp_abcdef"}
    assert invocation.meta["env"]["GITHUB_TOKEN"] == "***REDACTED***"
    assert (invocation.timeout_sec, invocation.grace_sec) == (5.0, 1.0)


@pytest.mark.parametrize("adapter_type", ["process", "codex_local", "claude_local"])
def test_every_adapter_env_value_is_secret_whatever_its_name(adapter_type):
    config = {"command": "agent", "env": {"OPENAI_KEY": "k-live-1234567", "MODE": "fast-mode"}}
    invocation = adapter_invocation(_ctx(adapter_type, config))
    assert set(invocation.secret_values) == {"pcr_secret_key", "k-live-1234567", "fast-mode"}
    assert invocation.meta["env"] == {"OPENAI_KEY": "***REDACTED***", "MODE": "***REDACTED***"}


def test_invoke_event_payload_redacts_secrets_passed_as_arguments():
    config = {
        "command": "agent",
        "args": ["--key=k-live-1234567", "--token", "sk-proj-Abcdefghijklmnopqrstuvwx"],
        "env": {"OPENAI_KEY": "k-live-1234567"},
    }
    invocation = adapter_invocation(_ctx("process", config))
    assert invocation.meta["commandArgs"] == ["--key=***REDACTED***", "--token", "***REDACTED***"]
    assert invocation.argv[1] == "--key=k-live-1234567"


def test_codex_invocation_is_codex_exec_with_model_extra_args_and_prompt_on_stdin():
    config = {
        "command": "/opt/codex",
        "model": "gpt-5",
        "extraArgs": ["--skip-git-repo-check"],
        "promptTemplate": "Agent {{agent.name}} on {{context.issueId}}",
    }
    invocation = adapter_invocation(_ctx("codex_local", config))
    assert invocation.argv == (
        "/opt/codex",
        "exec",
        "--json",
        "--model",
        "gpt-5",
        "--skip-git-repo-check",
        "-",
    )
    assert invocation.stdin == b"Agent Ada on issue-1"
    assert (invocation.timeout_sec, invocation.grace_sec) == (0.0, 20.0)


def test_claude_invocation_resumes_the_session_and_caps_turns():
    config = {"maxTurnsPerRun": 3, "dangerouslySkipPermissions": True}
    invocation = adapter_invocation(_ctx("claude_local", config, session_id_before="sess-9"))
    assert invocation.argv == (
        "claude",
        "--print",
        "-",
        "--output-format",
        "stream-json",
        "--verbose",
        "--resume",
        "sess-9",
        "--dangerously-skip-permissions",
        "--max-turns",
        "3",
    )
    assert invocation.stdin == b"You are agent agent-1 (Ada). Continue your Paperclip work."


def test_claude_refuses_a_non_integer_turn_cap():
    with pytest.raises(AdapterConfigInvalid, match="maxTurnsPerRun"):
        adapter_invocation(_ctx("claude_local", {"maxTurnsPerRun": "many"}))


def test_http_invocation_posts_the_run_context():
    config = {"url": "https://example.test/hook", "headers": {"Authorization": "Bearer xyz123"}}
    invocation = adapter_invocation(_ctx("http", config))
    assert isinstance(invocation, HttpInvocation)
    assert invocation.method == "POST"
    assert b'"runId": "run-1"' in invocation.body
    assert invocation.secret_values == ("Bearer xyz123",)


def test_http_refuses_a_non_http_url():
    with pytest.raises(AdapterConfigInvalid, match="http or https"):
        adapter_invocation(_ctx("http", {"url": "file:///etc/passwd"}))


@pytest.mark.parametrize(
    ("adapter_type", "config", "command_args"),
    [
        ("process", {"command": "python3", "args": ["-V"]}, ["-V"]),
        ("codex_local", {"command": "/opt/codex"}, ["exec", "--json", "-"]),
    ],
)
def test_invoke_event_names_the_arguments_commandargs_as_paperclips_cli_reads(
    adapter_type, config, command_args
):
    meta = adapter_invocation(_ctx(adapter_type, config)).meta
    assert meta["commandArgs"] == command_args
    assert {"adapterType", "command", "cwd", "env"} <= set(meta)
