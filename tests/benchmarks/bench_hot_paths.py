"""Benchmark: the CPU each hot API route costs in the web process, route by route.

    .venv/bin/python tests/benchmarks/bench_hot_paths.py [--requests 2000] [--repeat 5]
        [--profile ROUTE]

Creates a scratch database (`bench_hot_paths`, dropped at the end) with one company, an agent
holding an API key and a running run (its run credential), a board member with a personal token,
a realistic inbox, an issue with a parent and comments, then calls the production WSGI
application (paperclip.wsgi) in this process with the environ a WSGI server hands it (no
network, no test client) and reports,
per route, this process's CPU per request (`time.process_time`, median of the repeats) and the
statements each request runs. PostgreSQL's CPU is not counted. CPU time holds however busy the
machine is, so before/after comparisons stay meaningful on a shared machine; the load average is
printed beside the figures. `--profile ROUTE` (a substring of a route's name) prints where that
route's time goes (cProfile, cumulative).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paperclip.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.signals import request_started  # noqa: E402
from django.db import connection, reset_queries  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from heartbeat.models import HeartbeatRun  # noqa: E402
from heartbeat.services import agent_key_create  # noqa: E402
from issues.services import issue_comment_post  # noqa: E402
from paperclip.credentials import run_credential_issue, secret_generate  # noqa: E402
from paperclip.models import BoardApiToken, CompanyMembership  # noqa: E402
from paperclip.wsgi import PaperclipWSGIHandler  # noqa: E402
from tests.benchmarks.bench_api import database_drop, database_recreate  # noqa: E402
from tests.factories import make_agent, make_company, make_issue, make_run  # noqa: E402

DB_NAME = "bench_hot_paths"
WARM_UP_REQUESTS = 200


class Route:
    def __init__(self, name, method, path, header, body=None, status=200):
        self.name, self.method, self.path, self.header = name, method, path, header
        self.body = json.dumps(body).encode() if body is not None else b""
        self.status = status

    def environ(self) -> dict:
        path, _, query = self.path.partition("?")
        environ = {
            "REQUEST_METHOD": self.method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_ACCEPT": "application/json",
            "HTTP_AUTHORIZATION": self.header,
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(self.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        if self.body:
            environ["CONTENT_TYPE"] = "application/json"
            environ["CONTENT_LENGTH"] = str(len(self.body))
        return environ


def fixture_create() -> list[Route]:
    company = make_company(name="Bench", issue_prefix="BNCH")
    agent = make_agent(company, name="bench-agent")
    agent_key = (
        "Bearer "
        + agent_key_create(
            agent_id=agent.id, name="bench", actor_type="system", actor_id="bench"
        ).secret
    )
    run = make_run(agent, status=HeartbeatRun.Status.RUNNING)
    run_key = "Bearer " + run_credential_issue(
        run_id=str(run.id), agent_id=str(agent.id), company_id=str(company.id)
    )
    user = get_user_model().objects.create_user(username="bench-board")
    CompanyMembership.objects.create(company=company, user=user)
    board_token, prefix, digest = secret_generate("pcbt_")
    BoardApiToken.objects.create(user=user, name="bench", token_prefix=prefix, token_hash=digest)
    board = f"Bearer {board_token}"
    for priority in ("low", "medium", "high", "critical", "medium"):
        for status in ("todo", "in_progress"):
            make_issue(company, status=status, priority=priority, assignee_agent_id=agent.id)
    parent = make_issue(company, status="todo")
    issue = make_issue(company, status="todo", parent_id=parent.id, assignee_agent_id=agent.id)
    for n in range(10):
        make_issue(company, status="backlog", title=f"Other {n}")
    comment = None
    for n in range(20):
        comment = issue_comment_post(
            issue_id=issue.id,
            company_id=company.id,
            body=f"Comment {n}",
            actor_type="user",
            actor_id=str(user.pk),
        )
    post_issue = make_issue(company, status="todo")
    return [
        Route("inbox-lite, agent key", "GET", "/api/agents/me/inbox-lite", agent_key),
        Route("inbox-lite, run credential", "GET", "/api/agents/me/inbox-lite", run_key),
        Route("issue read, agent key", "GET", f"/api/issues/{issue.id}", agent_key),
        Route("issue read by identifier", "GET", f"/api/issues/{issue.identifier}", agent_key),
        Route("company read, board token", "GET", f"/api/companies/{company.id}", board),
        Route("issue list, board", "GET", f"/api/companies/{company.id}/issues", board),
        Route(
            "heartbeat-context, run credential",
            "GET",
            f"/api/issues/{issue.id}/heartbeat-context?wakeCommentId={comment.id}",
            run_key,
        ),
        Route("comment list, agent key", "GET", f"/api/issues/{issue.id}/comments", agent_key),
        Route("agents/me, agent key", "GET", "/api/agents/me", agent_key),
        Route(
            "comment POST, board",
            "POST",
            f"/api/issues/{post_issue.id}/comments",
            board,
            {"body": "benchmark"},
            201,
        ),
        Route(
            "comment POST, run credential",
            "POST",
            f"/api/issues/{post_issue.id}/comments",
            run_key,
            {"body": "benchmark"},
            201,
        ),
    ]


def _call(app: PaperclipWSGIHandler, route: Route) -> None:
    statuses = []
    body = app(route.environ(), lambda status, headers, *_: statuses.append(status))
    payload = b"".join(body)
    if hasattr(body, "close"):
        body.close()
    code = int(statuses[0].split()[0])
    if code != route.status:
        raise SystemExit(f"{route.name}: HTTP {code} {payload[:300]!r}")


def cpu_per_request(app: PaperclipWSGIHandler, route: Route, requests: int) -> float:
    """Microseconds of this process's CPU per request."""
    started = time.process_time()
    for _ in range(requests):
        _call(app, route)
    return (time.process_time() - started) / requests * 1e6


def statements_of_request(app: PaperclipWSGIHandler, route: Route) -> list[str]:
    # Django clears the query log when a request starts; keep it for this one request.
    request_started.disconnect(reset_queries)
    try:
        with CaptureQueriesContext(connection) as queries:
            _call(app, route)
    finally:
        request_started.connect(reset_queries)
    return [query["sql"] for query in queries.captured_queries]


def profile(app: PaperclipWSGIHandler, route: Route, requests: int) -> None:
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for _ in range(requests):
        _call(app, route)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per repeat")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", help="profile the route whose name contains this")
    parser.add_argument("--only", help="measure only the routes whose names contain this")
    parser.add_argument("--sql", action="store_true", help="print each route's statements")
    args = parser.parse_args()
    if not 1 <= args.requests <= 100_000 or not 1 <= args.repeat <= 20:
        parser.error("--requests must be 1..100000 and --repeat 1..20")
    previous = database_recreate(DB_NAME)
    try:
        routes = fixture_create()
        app = PaperclipWSGIHandler()
        if args.profile:
            route = next(r for r in routes if args.profile in r.name)
            cpu_per_request(app, route, WARM_UP_REQUESTS)
            profile(app, route, args.requests)
            return
        print(f"{args.requests} requests x {args.repeat} per route")
        for route in [r for r in routes if not args.only or args.only in r.name]:
            cpu_per_request(app, route, WARM_UP_REQUESTS)
            statements = statements_of_request(app, route)
            if args.sql:
                print("\n".join(f"    {sql[:160]}" for sql in statements))
            samples = [cpu_per_request(app, route, args.requests) for _ in range(args.repeat)]
            print(
                f"{route.name:36} {statistics.median(samples):6.0f} us CPU/request "
                f"(min {min(samples):.0f}, max {max(samples):.0f}), {len(statements)} statements, "
                f"load {os.getloadavg()[0]:.1f}"
            )
    finally:
        database_drop(DB_NAME, previous)


if __name__ == "__main__":
    main()
