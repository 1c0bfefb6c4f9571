"""Events in the formats the coding-agent CLIs print, as recorded from their documented output:
Claude Code's `--output-format stream-json --verbose` and Codex's `exec --json`. The fake CLIs
beside this module print them; the parser tests feed them. Standard library only."""

from __future__ import annotations

CLAUDE_MODEL = "claude-sonnet-4-5-20250929"


def claude_init(session_id: str, *, cwd: str = "/work") -> dict:
    return {
        "type": "system",
        "subtype": "init",
        "cwd": cwd,
        "session_id": session_id,
        "tools": ["Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "TodoWrite"],
        "mcp_servers": [],
        "model": CLAUDE_MODEL,
        "permissionMode": "bypassPermissions",
        "slash_commands": ["compact", "cost", "review"],
        "apiKeySource": "ANTHROPIC_API_KEY",
        "output_style": "default",
        "uuid": "8b1b3e55-7a0e-4bbd-9e0c-5d52b2b3c0a1",
    }


def _assistant(session_id: str, content: list[dict], message_id: str) -> dict:
    return {
        "type": "assistant",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": CLAUDE_MODEL,
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 4,
                "cache_creation_input_tokens": 1864,
                "cache_read_input_tokens": 13927,
                "output_tokens": 1,
                "service_tier": "standard",
            },
        },
        "parent_tool_use_id": None,
        "session_id": session_id,
        "uuid": f"{message_id}-uuid",
    }


def claude_assistant_text(session_id: str, text: str, *, message_id: str = "msg_01A") -> dict:
    return _assistant(session_id, [{"type": "text", "text": text}], message_id)


def claude_tool_round(session_id: str, command: str, output: str) -> list[dict]:
    """A Bash tool call and its result, as they appear in the stream."""
    return [
        _assistant(
            session_id,
            [
                {
                    "type": "tool_use",
                    "id": "toolu_01Bash",
                    "name": "Bash",
                    "input": {"command": command, "description": "Run a command"},
                }
            ],
            "msg_01B",
        ),
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {
                        "tool_use_id": "toolu_01Bash",
                        "type": "tool_result",
                        "content": output,
                        "is_error": False,
                    }
                ],
            },
            "parent_tool_use_id": None,
            "session_id": session_id,
            "uuid": "tool-result-uuid",
        },
    ]


def claude_result(
    session_id: str,
    *,
    result: str,
    cost_usd: float,
    input_tokens: int,
    cached_input_tokens: int,
    output_tokens: int,
    subtype: str = "success",
    is_error: bool = False,
    errors: list[str] | None = None,
    num_turns: int = 3,
) -> dict:
    event = {
        "type": "result",
        "subtype": subtype,
        "is_error": is_error,
        "duration_ms": 18734,
        "duration_api_ms": 17021,
        "num_turns": num_turns,
        "result": result,
        "session_id": session_id,
        "total_cost_usd": cost_usd,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 1864,
            "cache_read_input_tokens": cached_input_tokens,
            "output_tokens": output_tokens,
            "server_tool_use": {"web_search_requests": 0},
            "service_tier": "standard",
        },
        "modelUsage": {
            CLAUDE_MODEL: {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "cacheReadInputTokens": cached_input_tokens,
                "cacheCreationInputTokens": 1864,
                "webSearchRequests": 0,
                "costUSD": cost_usd,
                "contextWindow": 200000,
            }
        },
        "permission_denials": [],
        "uuid": "6f1fd8c0-4e5e-4a43-9f0a-1d8b7e1c2f3a",
    }
    if errors is not None:
        event["errors"] = errors
    return event


def claude_unknown_session(session_id: str, *, new_session_id: str) -> tuple[list[dict], str]:
    """`claude --resume <id>` for a session it does not have: an error result on stdout and
    the message on stderr; the CLI exits 1."""
    message = f"No conversation found with session ID: {session_id}"
    event = claude_result(
        new_session_id,
        result="",
        cost_usd=0,
        input_tokens=0,
        cached_input_tokens=0,
        output_tokens=0,
        subtype="error_during_execution",
        is_error=True,
        errors=[message],
        num_turns=0,
    )
    return [event], message


def codex_thread_started(thread_id: str) -> dict:
    return {"type": "thread.started", "thread_id": thread_id}


def codex_turn(message: str, *, command: str, output: str) -> list[dict]:
    """One turn's items up to the agent's final message (turn.completed comes after)."""
    return [
        {"type": "turn.started"},
        {
            "type": "item.completed",
            "item": {"id": "item_0", "type": "reasoning", "text": "**Reading the issue**"},
        },
        {
            "type": "item.started",
            "item": {
                "id": "item_1",
                "type": "command_execution",
                "command": f"bash -lc '{command}'",
                "aggregated_output": "",
                "exit_code": None,
                "status": "in_progress",
            },
        },
        {
            "type": "item.completed",
            "item": {
                "id": "item_1",
                "type": "command_execution",
                "command": f"bash -lc '{command}'",
                "aggregated_output": output,
                "exit_code": 0,
                "status": "completed",
            },
        },
        {
            "type": "item.completed",
            "item": {"id": "item_2", "type": "agent_message", "text": message},
        },
    ]


def codex_turn_completed(
    *, input_tokens: int, cached_input_tokens: int, output_tokens: int
) -> dict:
    return {
        "type": "turn.completed",
        "usage": {
            "input_tokens": input_tokens,
            "cached_input_tokens": cached_input_tokens,
            "output_tokens": output_tokens,
        },
    }


def codex_unknown_session_stderr(thread_id: str) -> str:
    """What `codex exec resume <id>` says for a thread it has no rollout of (it exits 1)."""
    return f"Error: thread/resume failed: no rollout found for thread id {thread_id}"
