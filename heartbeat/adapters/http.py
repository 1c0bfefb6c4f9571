"""`http`: POST the run's context to a URL; no agent process (adapter_config: url, method,
headers, timeoutSec). The run shim sends the request (so a long request outlives the control
plane too); a 2xx answer succeeds the run, anything else fails it with the status."""

from __future__ import annotations

import json
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
    meta_redacted,
    named_secret_values,
)
from heartbeat.conf import heartbeat_conf


class HttpAdapter:
    adapter_type = "http"

    resumes_sessions = False

    def output_parser(self) -> None:
        """Its output is logged as it is: no format to read a session or usage from."""
        return None

    def invocation(self, ctx: RunInvocationContext) -> HttpInvocation:
        config = config_object(ctx.adapter_config)
        url = config_required_str(config, "url")
        if urlparse(url).scheme not in ("http", "https"):
            raise AdapterConfigInvalid("adapter_config.url must be an http or https URL")
        method = (config_str(config, "method", default="POST") or "POST").upper()
        headers = {"Content-Type": "application/json", **config_str_map(config, "headers")}
        secrets = named_secret_values(headers)
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
            secret_values=secrets,
            meta=meta_redacted(
                {"adapterType": self.adapter_type, "url": url, "method": method}, secrets
            ),
        )
