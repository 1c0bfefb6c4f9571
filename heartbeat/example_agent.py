"""A minimal agent: what any agent does on a heartbeat, with nothing but the standard library.

Run by a `process` agent (`python -m heartbeat.example_agent`), it uses only the environment the
run engine injects (PAPERCLIP_API_URL, PAPERCLIP_API_KEY, PAPERCLIP_RUN_ID, PAPERCLIP_TASK_ID,
PAPERCLIP_WAKE_REASON, ...) and the public REST API, exactly as an agent written for the reference
would: identify itself, read its inbox, check out its task with the run header, read the task's
heartbeat context, comment, and mark the task done. It imports nothing from this project, so it
is also a template for agents in other languages.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

# Statuses the agent may take a task from (the checkout refuses anything else).
CHECKOUT_FROM = ["backlog", "todo", "blocked", "in_progress"]
REQUEST_TIMEOUT_SEC = 30
# A run can start before the web server listens (the cluster and the server start together, and
# a server restarts): a refused connection is retried for this long before the agent gives up.
SERVER_WAIT_SEC = 60


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} answered {status}: {body}")
        self.status = status


class PaperclipApi:
    def __init__(self, base_url: str, api_key: str, run_id: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        if run_id:
            # Links every write to this run: the server counts it as the run's activity.
            self.headers["X-Paperclip-Run-Id"] = run_id

    def call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        deadline = time.monotonic() + SERVER_WAIT_SEC
        while True:
            try:
                with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SEC) as response:
                    payload = response.read()
                break
            except urllib.error.HTTPError as exc:
                body = exc.read().decode(errors="replace")
                raise ApiError(method, path, exc.code, body) from None
            except urllib.error.URLError as exc:
                refused = isinstance(exc.reason, ConnectionRefusedError)
                if not refused or time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        return json.loads(payload) if payload else None

    def get(self, path: str):
        return self.call("GET", path)

    def post(self, path: str, body: dict | None = None):
        return self.call("POST", path, body if body is not None else {})

    def patch(self, path: str, body: dict):
        return self.call("PATCH", path, body)


def say(message: str) -> None:
    print(f"example-agent: {message}", flush=True)


def heartbeat(api: PaperclipApi, task_id: str | None, wake_reason: str | None) -> int:
    me = api.get("/api/agents/me")
    say(f"I am {me['name']} ({me['role']}), woken for {wake_reason or 'no stated reason'}")
    inbox = api.get("/api/agents/me/inbox-lite")
    say(f"{len(inbox)} open issue(s) in my inbox")
    if not task_id:
        if not inbox:
            say("nothing to do")
            return 0
        task_id = inbox[0]["id"]
    issue = api.post(
        f"/api/issues/{task_id}/checkout",
        {"agentId": me["id"], "expectedStatuses": CHECKOUT_FROM},
    )
    say(f"checked out {issue['identifier']}: {issue['title']}")
    context = api.get(f"/api/issues/{task_id}/heartbeat-context")
    comments = context["commentCursor"]["totalComments"]
    say(f"the issue has {comments} comment(s) and {len(context['ancestors'])} ancestor(s)")
    api.post(
        f"/api/issues/{task_id}/comments",
        {
            "body": (
                f"Hello from {me['name']}. I read {issue['identifier']} "
                f"({comments} earlier comment(s)) and I am marking it done."
            )
        },
    )
    done = api.patch(f"/api/issues/{task_id}", {"status": "done"})
    say(f"{done['identifier']} is {done['status']}")
    return 0


def main() -> int:
    try:
        api = PaperclipApi(
            os.environ["PAPERCLIP_API_URL"],
            os.environ["PAPERCLIP_API_KEY"],
            os.environ.get("PAPERCLIP_RUN_ID"),
        )
    except KeyError as exc:
        print(f"example-agent: {exc.args[0]} is not set; run me as a Paperclip agent", flush=True)
        return 2
    try:
        return heartbeat(
            api, os.environ.get("PAPERCLIP_TASK_ID"), os.environ.get("PAPERCLIP_WAKE_REASON")
        )
    except (ApiError, urllib.error.URLError, OSError) as exc:
        print(f"example-agent: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
