"""Benchmark: the CPU one authenticated request costs, per kind of credential.

    .venv/bin/python tests/benchmarks/bench_auth.py [--requests 3000] [--repeat 5]

Creates a scratch database (`bench_auth`, dropped at the end) with one company, an agent with an
API key, a running run (for its run credential) and a board member with a personal token, then
sends small GET requests through Django's WSGI handler in this process (no network) and reports
the CPU time (`time.process_time`) per request, median of the repeats, with the statements each
request runs. PostgreSQL's own CPU is not counted: what is measured is the Python a request costs,
which is what bounds the API's throughput (see bench_api.py). CPU time holds however busy the
machine is, so before/after comparisons stay meaningful on a shared machine.
"""

from __future__ import annotations

import argparse
import os
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
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from heartbeat.models import HeartbeatRun  # noqa: E402
from heartbeat.services import agent_key_create  # noqa: E402
from paperclip.credentials import run_credential_issue, secret_generate  # noqa: E402
from paperclip.models import BoardApiToken, CompanyMembership  # noqa: E402
from tests.benchmarks.bench_api import database_drop, database_recreate  # noqa: E402
from tests.factories import make_agent, make_company, make_run  # noqa: E402

DB_NAME = "bench_auth"
WARM_UP_REQUESTS = 200


def fixture_create() -> dict[str, tuple[str, str]]:
    """(path, Authorization header) per credential kind."""
    company = make_company(name="Bench", issue_prefix="BNCH")
    agent = make_agent(company, name="bench-agent")
    agent_key = agent_key_create(
        agent_id=agent.id, name="bench", actor_type="system", actor_id="bench"
    ).secret
    run = make_run(agent, status=HeartbeatRun.Status.RUNNING)
    run_credential = run_credential_issue(
        run_id=str(run.id), agent_id=str(agent.id), company_id=str(company.id)
    )
    user = get_user_model().objects.create_user(username="bench-board")
    CompanyMembership.objects.create(company=company, user=user)
    board_token, prefix, digest = secret_generate("pcbt_")
    BoardApiToken.objects.create(user=user, name="bench", token_prefix=prefix, token_hash=digest)
    return {
        "agent key, GET /api/agents/me/inbox-lite": (
            "/api/agents/me/inbox-lite",
            f"Bearer {agent_key}",
        ),
        "run credential, GET .../inbox-lite": (
            "/api/agents/me/inbox-lite",
            f"Bearer {run_credential}",
        ),
        "board token, GET /api/companies/{id}": (
            f"/api/companies/{company.id}",
            f"Bearer {board_token}",
        ),
    }


def cpu_per_request(client: Client, path: str, header: str, requests: int) -> float:
    """Microseconds of this process's CPU per request (every answer must be a 200)."""
    started = time.process_time()
    for _ in range(requests):
        response = client.get(path, HTTP_AUTHORIZATION=header)
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code} {response.content[:200]!r}")
    return (time.process_time() - started) / requests * 1e6


def statements_per_request(client: Client, path: str, header: str) -> int:
    # Django clears the query log when a request starts; keep it for this one request.
    request_started.disconnect(reset_queries)
    try:
        with CaptureQueriesContext(connection) as queries:
            client.get(path, HTTP_AUTHORIZATION=header)
    finally:
        request_started.connect(reset_queries)
    return len(queries.captured_queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per repeat")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not 1 <= args.requests <= 100_000 or not 1 <= args.repeat <= 20:
        parser.error("--requests must be 1..100000 and --repeat 1..20")
    previous = database_recreate(DB_NAME)
    try:
        cases = fixture_create()
        client = Client(HTTP_HOST="127.0.0.1")
        print(f"load average {os.getloadavg()[0]:.1f}; {args.requests} requests x {args.repeat}")
        for name, (path, header) in cases.items():
            cpu_per_request(client, path, header, WARM_UP_REQUESTS)
            statements = statements_per_request(client, path, header)
            samples = [
                cpu_per_request(client, path, header, args.requests) for _ in range(args.repeat)
            ]
            print(
                f"{name:40} {statistics.median(samples):7.0f} us CPU/request "
                f"(min {min(samples):.0f}, max {max(samples):.0f}), "
                f"{statements} statements"
            )
    finally:
        database_drop(DB_NAME, previous)


if __name__ == "__main__":
    main()
