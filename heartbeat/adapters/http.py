"""`http`: POST the run's context to a URL; no process (adapter_config: url, method, headers,
timeoutSec). A 2xx answer succeeds the run, anything else fails it with the status."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlparse

from heartbeat.adapters.base import (
    AdapterConfigInvalid,
    HttpInvocation,
    RunInvocationContext,
    config_object,
    config_required_str,
    config_seconds,
    config_str,
    config_str_map,
    named_secret_values,
)
from heartbeat.conf import heartbeat_conf

_BODY_EXCERPT_CHARS = 4096


@dataclass(frozen=True)
class HttpOutcome:
    status: int | None
    body_excerpt: str
    error: str | None


class HttpAdapter:
    adapter_type = "http"

    def invocation(self, ctx: RunInvocationContext) -> HttpInvocation:
        config = config_object(ctx.adapter_config)
        url = config_required_str(config, "url")
        if urlparse(url).scheme not in ("http", "https"):
            raise AdapterConfigInvalid("adapter_config.url must be an http or https URL")
        method = (config_str(config, "method", default="POST") or "POST").upper()
        headers = {"Content-Type": "application/json", **config_str_map(config, "headers")}
        body = {
            "runId": ctx.run_id,
            "agentId": ctx.agent_id,
            "companyId": ctx.company_id,
            "context": dict(ctx.context),
        }
        return HttpInvocation(
            url=url,
            method=method,
            headers=headers,
            body=json.dumps(body).encode(),
            timeout_sec=config_seconds(
                config, "timeoutSec", default=heartbeat_conf().http_adapter_timeout_sec
            ),
            secret_values=named_secret_values(headers),
            meta={"adapterType": self.adapter_type, "url": url, "method": method},
        )


def http_invoke(invocation: HttpInvocation) -> HttpOutcome:
    request = urllib.request.Request(
        invocation.url,
        data=invocation.body,
        headers=dict(invocation.headers),
        method=invocation.method,
    )
    try:
        with urllib.request.urlopen(request, timeout=invocation.timeout_sec or None) as response:
            body = response.read(_BODY_EXCERPT_CHARS).decode("utf-8", errors="replace")
            return HttpOutcome(status=response.status, body_excerpt=body, error=None)
    except urllib.error.HTTPError as exc:
        body = exc.read(_BODY_EXCERPT_CHARS).decode("utf-8", errors="replace")
        return HttpOutcome(status=exc.code, body_excerpt=body, error=f"HTTP {exc.code}")
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return HttpOutcome(status=None, body_excerpt="", error=f"request failed: {reason}")
