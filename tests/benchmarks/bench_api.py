"""Benchmark: the REST API behind gunicorn on the configured PostgreSQL (embedded by default).

    .venv/bin/python tests/benchmarks/bench_api.py [--duration 10] [--clients 32]
        [--workers 2] [--threads 8] [--issues 100000] [--runs 1000000] [--rate 1000]

Creates a scratch database (`bench_api`, dropped at the end), fills it, starts gunicorn on
127.0.0.1 (loopback only) as `start` does (gthread, 2 workers x 8 threads by default), and
drives it with keep-alive HTTP/1.1 clients from this process:

1. `GET /api/agents/me/inbox-lite` and `GET /api/issues/{id}` as an agent (API key), 32
   concurrent clients: requests/s, p50 and p99 latency, and the CPU per request of gunicorn's
   processes (targets: >= 1,000 req/s, p99 < 60 ms, <= 1.2 ms CPU per request), first as fast
   as the clients can go (saturation: the throughput), then with the 32 clients offering 1,000
   requests/s in all (`--rate`; latency from each request's scheduled send time);
2. `POST /api/issues/{id}/comments` as a board member, 32 clients each on its own issue
   (targets: >= 400 req/s, p99 < 150 ms);
3. the list routes on a company with 100,000 issues and 1,000,000 runs against the same routes
   on a company with one page of rows: SQL queries per request and PostgreSQL's execution time
   of them (EXPLAIN ANALYZE, independent of the machine's load), and HTTP p50; they must match
   (no N+1, every list walks an index).

Every load phase is bounded by time and by request count, and the server is stopped at the end.
The load generator shares the machine with the server and the database, so the numbers are a
floor for what the server does on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paperclip.settings")

import django  # noqa: E402

django.setup()

import psutil  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from heartbeat.services import agent_key_create  # noqa: E402
from paperclip.credentials import secret_generate  # noqa: E402
from paperclip.models import BoardApiToken, CompanyMembership  # noqa: E402
from tests.factories import make_agent, make_company, make_issue, make_run  # noqa: E402

DB_NAME = "bench_api"
HOST = "127.0.0.1"
# Never more requests than this per phase, whatever the duration (a bounded loop).
MAX_REQUESTS_PER_PHASE = 200_000
# Rows in the baseline company: a little more than one page (the API's page size is 50).
PAGE_ROWS = 60


# Database


def _database_use(name: str) -> None:
    connection.close()
    settings.DATABASES["default"]["NAME"] = name
    connection.settings_dict["NAME"] = name


def database_recreate(name: str) -> str:
    previous = settings.DATABASES["default"]["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    _database_use(name)
    call_command("migrate", verbosity=0)
    return previous


def database_drop(name: str, previous: str) -> None:
    _database_use(previous)
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Fixture:
    agent_key: str
    board_token: str
    busy_company: str
    busy_issue: str
    small_company: str
    small_issue: str
    comment_issues: list[str]


def _fill_big_company(company, agents, issues: int, runs: int) -> str:
    """Bulk rows with SQL (the ORM would take many minutes for a million runs). The bulk issues
    are assigned to agents[1:]; agents[0], the one whose key the load phases use, keeps a
    realistic inbox."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO issues_issue (id, company_id, title, status, priority, issue_number,
                identifier, origin_kind, request_depth, created_at, updated_at,
                assignee_agent_id)
            SELECT gen_random_uuid(), %s, 'Bulk issue ' || n,
                (ARRAY['backlog','todo','in_progress','done','blocked'])[1 + n %% 5],
                (ARRAY['low','medium','high','critical'])[1 + n %% 4],
                n, %s || '-' || n, 'manual', 0, now() - n * interval '1 second', now(),
                CASE WHEN n %% 5 = 2 THEN (%s::uuid[])[1 + n %% %s] ELSE NULL END
            FROM generate_series(1, %s) AS n
            """,
            [
                company.id,
                company.issue_prefix,
                [str(a.id) for a in agents[1:]],
                len(agents) - 1,
                issues,
            ],
        )
        cursor.execute(
            "UPDATE paperclip_company SET issue_counter = %s WHERE id = %s", [issues, company.id]
        )
        cursor.execute(
            "SELECT id FROM issues_issue WHERE company_id = %s ORDER BY issue_number LIMIT 1",
            [company.id],
        )
        hot_issue = cursor.fetchone()[0]
        agent_ids = [str(a.id) for a in agents]
        # Run n works on issue number 1 + n % issues, so every issue has runs and the first
        # (the one measured) has runs / issues of them.
        cursor.execute(
            """
            INSERT INTO heartbeat_heartbeatrun (id, company_id, agent_id, invocation_source,
                status, started_at, finished_at, log_compressed, process_loss_retry_count,
                issue_comment_status, context_snapshot, event_seq, created_at, updated_at)
            SELECT gen_random_uuid(), %s, (%s::uuid[])[1 + n %% %s], 'assignment',
                CASE WHEN n %% 10 = 0 THEN 'failed' ELSE 'succeeded' END,
                now() - n * interval '1 second', now() - n * interval '1 second',
                false, 0, 'not_applicable', jsonb_build_object('issueId', i.id::text),
                0, now() - n * interval '1 second', now() - n * interval '1 second'
            FROM generate_series(1, %s) AS n
            JOIN issues_issue AS i ON i.company_id = %s AND i.issue_number = 1 + n %% %s
            """,
            [company.id, agent_ids, len(agent_ids), runs, company.id, issues],
        )
        # VACUUM too, not only ANALYZE: otherwise autovacuum's first pass over the million new
        # runs lands in the measured phases and their tail measures it, not the server.
        cursor.execute("VACUUM (ANALYZE)")
    return str(hot_issue)


def fixture_create(issues: int, runs: int, clients: int) -> Fixture:
    user = get_user_model().objects.create_user(username="bench-board")
    secret, prefix, digest = secret_generate("pcbt_")
    BoardApiToken.objects.create(user=user, name="bench", token_prefix=prefix, token_hash=digest)

    busy = make_company(name="Busy", issue_prefix="BUSY")
    small = make_company(name="One page", issue_prefix="PAGE")
    for company in (busy, small):
        CompanyMembership.objects.create(company=company, user=user)
    busy_agents = [make_agent(busy, name=f"busy-{n}") for n in range(10)]
    small_agent = make_agent(small, name="one-page-agent")
    agent_key = agent_key_create(
        agent_id=busy_agents[0].id, name="bench", actor_type="system", actor_id="bench"
    ).secret
    started = time.monotonic()
    busy_issue = _fill_big_company(busy, busy_agents, issues, runs)
    print(f"filled {issues} issues and {runs} runs in {time.monotonic() - started:.0f} s")
    for priority in ("low", "medium", "high", "critical", "medium"):
        for status in ("todo", "in_progress"):
            make_issue(busy, status=status, priority=priority, assignee_agent_id=busy_agents[0].id)
    # The baseline company holds one full page of each list (and no more), so both answers
    # carry the same number of rows and only the size of the tables behind them differs.
    small_issue = make_issue(small, status="todo", assignee_agent_id=small_agent.id)
    for _ in range(PAGE_ROWS):
        make_issue(small, status="todo")
        make_run(small_agent, status="succeeded", context_snapshot={"issueId": str(small_issue.id)})
    comment_issues = [str(make_issue(busy, status="todo").id) for _ in range(clients)]
    return Fixture(
        agent_key=agent_key,
        board_token=secret,
        busy_company=str(busy.id),
        busy_issue=busy_issue,
        small_company=str(small.id),
        small_issue=str(small_issue.id),
        comment_issues=comment_issues,
    )


# Server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def gunicorn_start(port: int, workers: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "PAPERCLIP_DB_NAME": DB_NAME, "PAPERCLIP_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "paperclip.wsgi:application",
            "--bind",
            f"{HOST}:{port}",
            "--workers",
            str(workers),
            "--worker-class",
            "gthread",
            "--threads",
            str(threads),
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
        start_new_session=True,
    )


def wait_ready(port: int, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("gunicorn exited during start-up")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/api/health", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("gunicorn did not answer /api/health within a minute")


def gunicorn_stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


# Load


def _process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def server_processes(server: subprocess.Popen) -> dict[str, list[psutil.Process]]:
    """gunicorn's processes and, for the embedded server, PostgreSQL's (the database is ours)."""
    processes = {"gunicorn": _process_tree(server.pid), "postgres": []}
    pid_file = Path(settings.PAPERCLIP_HOME) / "pgdata" / "postmaster.pid"
    if not os.environ.get("DATABASE_URL") and pid_file.exists():
        processes["postgres"] = _process_tree(int(pid_file.read_text().split()[0]))
    return processes


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


@dataclass
class PhaseResult:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    cpu_ms: dict[str, float] | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def _request(method: str, path: str, token: str, body: dict | None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {HOST}",
        f"Authorization: Bearer {token}",
        "Accept: application/json",
        f"Content-Length: {len(payload)}",
    ]
    if body is not None:
        lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _client(port, requests, deadline, budget, latencies, counters, expected, pace=None):
    """Send back to back, or, with `pace` (first send time, interval), at fixed times: then the
    latency counts from the scheduled time, so a server that falls behind cannot hide its queue
    by slowing the client down (coordinated omission)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    n = 0
    try:
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            raw = requests[n % len(requests)]
            if pace is None:
                started = time.perf_counter()
            else:
                first, interval = pace
                started = first + n * interval
                await asyncio.sleep(max(0.0, started - time.perf_counter()))
            n += 1
            writer.write(raw)
            status = int((await reader.readline()).split()[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            counters[0] += 1
            if status != expected:
                counters[1] += 1
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
    finally:
        writer.close()


def run_phase(name, port, per_client_requests, duration, expected=200, server=None, rate=None):
    """Closed loop (each client sends its next request when the last answered), or, with `rate`,
    the clients together offer `rate` requests/s, spread evenly in time."""

    async def main():
        latencies: list[float] = []
        counters = [0, 0]
        budget = [MAX_REQUESTS_PER_PHASE]
        started = time.monotonic()
        deadline = started + duration
        clients = len(per_client_requests)
        interval = clients / rate if rate else 0.0
        first = time.perf_counter() + 0.05
        await asyncio.gather(
            *(
                _client(
                    port,
                    reqs,
                    deadline,
                    budget,
                    latencies,
                    counters,
                    expected,
                    (first + i * interval / clients, interval) if rate else None,
                )
                for i, reqs in enumerate(per_client_requests)
            )
        )
        return PhaseResult(name, counters[0], counters[1], time.monotonic() - started, latencies)

    processes = server_processes(server) if server is not None else {}
    before = {kind: cpu_seconds(procs) for kind, procs in processes.items()}
    client_before = time.process_time()
    result = asyncio.run(main())
    if processes and result.requests:
        result.cpu_ms = {"client": (time.process_time() - client_before) * 1000 / result.requests}
        for kind, procs in processes.items():
            after = cpu_seconds(procs)
            spent = sum(after[pid] - before[kind][pid] for pid in after if pid in before[kind])
            result.cpu_ms[kind] = spent * 1000 / result.requests
    return result


def report(
    result: PhaseResult, target_rate: float, target_p99_ms: float, target_cpu_ms: float | None
) -> None:
    ok = (
        result.rate >= target_rate
        and result.percentile(0.99) < target_p99_ms
        and not result.errors
        and (target_cpu_ms is None or (result.cpu_ms or {}).get("gunicorn", 0) <= target_cpu_ms)
    )
    cpu_target = f", <= {target_cpu_ms} ms CPU" if target_cpu_ms is not None else ""
    verdict = (
        f"  target >= {target_rate:.0f}/s, p99 < {target_p99_ms:.0f} ms{cpu_target}: "
        f"{'met' if ok else 'MISSED'}"
    )
    print(
        f"{result.name:<28} {result.rate:6.0f} req/s  p50 {result.percentile(0.5):6.1f} ms  "
        f"p99 {result.percentile(0.99):6.1f} ms  errors {result.errors}  "
        f"load {os.getloadavg()[0]:.1f}{verdict}"
    )
    if result.cpu_ms:
        cpu = result.cpu_ms
        server_ms = cpu["gunicorn"] + cpu["postgres"]
        print(
            f"{'':<28} CPU per request: gunicorn {cpu['gunicorn']:.2f} ms, postgres "
            f"{cpu['postgres']:.2f} ms, load generator {cpu['client']:.2f} ms -> two cores "
            f"serve about {2000 / server_ms:.0f} req/s when nothing else runs on them"
        )


def _db_milliseconds(sql: str) -> float:
    """PostgreSQL's own execution time of a query (best of three): independent of the load
    that the rest of the machine puts on the Python processes."""
    best = float("inf")
    with connection.cursor() as cursor:
        for _ in range(3):
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            best = min(best, plan[0]["Execution Time"])
    return best


def list_profile(fixture: Fixture, route: str) -> list[tuple[int, float]]:
    """(SQL queries per request, their total execution ms) on the busy and the one-page company."""
    profile = []
    client = Client(HTTP_AUTHORIZATION=f"Bearer {fixture.board_token}", HTTP_HOST=HOST)
    for company, issue in (
        (fixture.busy_company, fixture.busy_issue),
        (fixture.small_company, fixture.small_issue),
    ):
        url = route.format(company=company, issue=issue)
        client.get(url)
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code == 200, (url, response.content[:200])
        selects = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT")]
        profile.append((len(captured), sum(_db_milliseconds(sql) for sql in selects)))
    return profile


LIST_ROUTES = [
    "/api/companies/{company}/issues",
    "/api/companies/{company}/issues?status=todo,blocked",
    "/api/companies/{company}/heartbeat-runs",
    "/api/companies/{company}/heartbeat-runs?status=failed",
    "/api/companies/{company}/live-runs?minCount=20",
    "/api/companies/{company}/agents",
    "/api/companies/{company}/activity",
    "/api/issues/{issue}/runs",
    "/api/issues/{issue}/live-runs",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker")
    parser.add_argument("--issues", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="requests/s the paced read phases offer"
    )
    args = parser.parse_args()

    previous = database_recreate(DB_NAME)
    server = None
    try:
        fixture = fixture_create(args.issues, args.runs, args.clients)
        port = free_port()
        server = gunicorn_start(port, args.workers, args.threads)
        wait_ready(port, server)
        print(
            f"load average before the phases: {os.getloadavg()[0]:.1f}; "
            f"gunicorn {args.workers} workers x {args.threads} threads on {HOST}:{port}; "
            f"{args.clients} clients, {args.duration:.0f} s per phase"
        )
        agent, board = fixture.agent_key, fixture.board_token
        inbox = [_request("GET", "/api/agents/me/inbox-lite", agent, None)]
        issue = [_request("GET", f"/api/issues/{fixture.comment_issues[0]}", agent, None)]
        warm = [inbox + issue] * args.clients
        run_phase("warm-up", port, warm, min(3.0, args.duration))
        for name, requests in (("GET inbox-lite (agent)", inbox), ("GET issue (agent)", issue)):
            phase = run_phase(name, port, [requests] * args.clients, args.duration, server=server)
            report(phase, 1000, 60, 1.2)
            # Closed-loop clients drive the server to saturation, where p99 is the depth of its
            # queue; the latency a client sees at the target rate is measured at that rate.
            phase = run_phase(
                f"{name} at {args.rate:.0f}/s",
                port,
                [requests] * args.clients,
                args.duration,
                server=server,
                rate=args.rate,
            )
            report(phase, args.rate * 0.98, 60, 1.2)
        comments = [
            [_request("POST", f"/api/issues/{iid}/comments", board, {"body": "benchmark"})]
            for iid in fixture.comment_issues[: args.clients]
        ]
        phase = run_phase("POST comment (board)", port, comments, args.duration, 201, server)
        report(phase, 400, 150, None)

        print(
            f"\nlist routes, busy ({args.issues} issues, {args.runs} runs) / one-page company: "
            "queries per request, their PostgreSQL execution time, HTTP p50 at 8 clients"
        )
        list_duration = max(2.0, args.duration / 3)
        for route in LIST_ROUTES:
            rows = {}
            for label, company, issue_id in (
                ("busy", fixture.busy_company, fixture.busy_issue),
                ("small", fixture.small_company, fixture.small_issue),
            ):
                path = route.format(company=company, issue=issue_id)
                requests = [[_request("GET", path, board, None)]] * 8
                rows[label] = run_phase(f"{label} {route}", port, requests, list_duration)
            (busy_q, busy_db), (small_q, small_db) = list_profile(fixture, route)
            busy, small = rows["busy"], rows["small"]
            same = busy_q == small_q and not busy.errors and not small.errors
            print(
                f"{route:<54} queries {busy_q}/{small_q}  SQL {busy_db:5.2f}/{small_db:5.2f} ms  "
                f"p50 {busy.percentile(0.5):6.1f}/{small.percentile(0.5):6.1f} ms"
                f"{'' if same else '  <-- DIFFERS'}"
            )
    finally:
        if server is not None:
            gunicorn_stop(server)
        database_drop(DB_NAME, previous)


if __name__ == "__main__":
    main()
