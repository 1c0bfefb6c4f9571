"""What every adapter shares: the run it is asked to invoke, what it returns, how it fails."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from heartbeat.models import RunErrorCode
from heartbeat.shim.run_shim import REDACTED, redact_document

_SECRET_NAME = re.compile(r"(api[-_]?key|token|secret|password|credential|auth)", re.I)
# The adapter_config maps whose values only the board may read: agents see the names (the API
# and the admin mask the values, events show names only, run logs redact the values).
ADAPTER_SECRET_MAPS = ("env", "headers")
# Server configuration that must never reach an agent's process (database password, signing key).
_SERVER_ONLY_ENV = ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")
_SERVER_ONLY_PREFIX = "PAPERCLIP_"
_TEMPLATE_FIELD = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
# The reference's default prompt of its local CLI adapters.
DEFAULT_PROMPT_TEMPLATE = (
    "You are agent {{agent.id}} ({{agent.name}}). Continue your Paperclip work."
)


class AdapterError(Exception):
    """The run cannot be invoked; `error_code` and the message go on the failed run."""

    error_code: str = RunErrorCode.ADAPTER_FAILED


class AdapterUnknown(AdapterError):
    error_code = RunErrorCode.ADAPTER_UNKNOWN


class AdapterConfigInvalid(AdapterError):
    error_code = RunErrorCode.ADAPTER_INVALID


@dataclass(frozen=True)
class RunInvocationContext:
    """Everything an adapter may use to build its invocation; it has no database access."""

    run_id: str
    agent_id: str
    agent_name: str
    agent_role: str
    company_id: str
    adapter_type: str
    adapter_config: Mapping[str, Any]
    context: Mapping[str, Any]
    session_id_before: str | None
    # The PAPERCLIP_* variables an agent needs to call back (DESIGN "The agent environment").
    agent_env: Mapping[str, str]
    api_key: str


@dataclass(frozen=True)
class ProcessInvocation:
    argv: tuple[str, ...]
    cwd: str | None
    env: Mapping[str, str]
    timeout_sec: float
    grace_sec: float
    stdin: bytes | None = None
    # Values redacted from the log and from the adapter.invoke event.
    secret_values: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpInvocation:
    url: str
    method: str
    headers: Mapping[str, str]
    body: bytes
    timeout_sec: float
    secret_values: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


def config_str(config: Mapping[str, Any], key: str, *, default: str | None = None) -> str | None:
    value = config.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise AdapterConfigInvalid(f"adapter_config.{key} must be a non-empty string")
    return value


def config_required_str(config: Mapping[str, Any], key: str) -> str:
    value = config_str(config, key)
    if value is None:
        raise AdapterConfigInvalid(f"adapter_config.{key} is required")
    return value


def config_str_list(config: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = config.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AdapterConfigInvalid(f"adapter_config.{key} must be a list of strings")
    return tuple(value)


def config_str_map(config: Mapping[str, Any], key: str) -> dict[str, str]:
    value = config.get(key) or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise AdapterConfigInvalid(f"adapter_config.{key} must be an object of string values")
    return dict(value)


def config_seconds(config: Mapping[str, Any], key: str, *, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise AdapterConfigInvalid(f"adapter_config.{key} must be a number of seconds >= 0")
    return float(value)


def config_bool(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise AdapterConfigInvalid(f"adapter_config.{key} must be true or false")
    return value


def config_object(config: Any) -> Mapping[str, Any]:
    if not isinstance(config, dict):
        raise AdapterConfigInvalid("adapter_config must be a JSON object")
    return config


def process_env(ctx: RunInvocationContext, extra: Mapping[str, str]) -> dict[str, str]:
    """The worker's environment without server secrets, the adapter's env, then the agent's.

    The agent variables come last so an adapter_config cannot point a run at another server or
    hand it another run's credential.
    """
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name not in _SERVER_ONLY_ENV and not name.startswith(_SERVER_ONLY_PREFIX)
    }
    return {**inherited, **extra, **ctx.agent_env}


def secret_values(ctx: RunInvocationContext, extra: Mapping[str, str]) -> tuple[str, ...]:
    """The run credential and every value of the adapter's env, whatever its name: a name
    that does not look secret (OPENAI_KEY, CODEX_HOME...) may still hold a key, and only the
    board may read what it configured (ADAPTER_SECRET_MAPS)."""
    return (ctx.api_key, *extra.values())


def named_secret_values(values: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(value for name, value in values.items() if _SECRET_NAME.search(name))


def env_for_display(env: Mapping[str, str]) -> dict[str, str]:
    """Adapter-set variables for the adapter.invoke event: the names only (every agent of the
    company may read a run's events)."""
    return dict.fromkeys(env, REDACTED)


def meta_redacted(meta: Mapping[str, Any], secrets: tuple[str, ...]) -> dict[str, Any]:
    """The adapter.invoke event's payload with the run's secrets and credential-shaped text
    replaced in every string (arguments and prompts may carry them too)."""
    return redact_document(meta, secrets)


def adapter_config_masked(config: Any) -> Any:
    """An adapter_config as anyone but the board sees it: the ADAPTER_SECRET_MAPS keep their
    names and lose their values (a malformed map is masked whole)."""
    if not isinstance(config, dict):
        return config
    masked = dict(config)
    for key in ADAPTER_SECRET_MAPS:
        if key in masked:
            value = masked[key]
            masked[key] = dict.fromkeys(value, REDACTED) if isinstance(value, dict) else REDACTED
    return masked


def adapter_config_unmasked(submitted: Any, stored: Any) -> Any:
    """A submitted adapter_config in which every masked value (REDACTED) stands for the value
    stored under the same name: a form shows masked values, and what the board leaves alone
    stays as it was while a value it types replaces the stored one."""
    if not isinstance(submitted, dict):
        return submitted
    stored = stored if isinstance(stored, dict) else {}
    merged = dict(submitted)
    for key in ADAPTER_SECRET_MAPS:
        new, old = merged.get(key), stored.get(key)
        if isinstance(new, dict):
            old_values = old if isinstance(old, dict) else {}
            merged[key] = {
                name: old_values.get(name, value) if value == REDACTED else value
                for name, value in new.items()
            }
        elif new == REDACTED and key in stored:
            merged[key] = old
    return merged


def prompt_render(template: str, ctx: RunInvocationContext) -> str:
    """Fill `{{agent.id}}`, `{{run.id}}`, `{{context.issueId}}`... ; unknown fields become ''."""
    data: dict[str, Any] = {
        "agent": {"id": ctx.agent_id, "name": ctx.agent_name, "role": ctx.agent_role},
        "run": {"id": ctx.run_id},
        "company": {"id": ctx.company_id},
        "context": dict(ctx.context),
    }

    def lookup(match: re.Match[str]) -> str:
        value: Any = data
        for part in match.group(1).split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return "" if value is None else str(value)

    return _TEMPLATE_FIELD.sub(lookup, template)
