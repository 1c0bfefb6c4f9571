"""Benchmark: the operator console on big tables.

    .venv/bin/python tests/benchmarks/bench_console.py [--runs 500000] [--events-per-run 2]
        [--repeat 5]

Creates a scratch database (`bench_console`, dropped at the end) on the configured server, seeds
runs (95% succeeded, the rest failed / lost / running, spread over 30 days and 3 companies), their
events, issues and lost-run retries with SQL (seconds, not timed), and measures the median wall time
and the SQL statement count of the pages an operator opens most:

- the run list unfiltered (estimated count), filtered (stale, lost), searched by issue identifier;
- the run event list unfiltered;
- the dashboard fragment for an instance admin (all companies) and a board user (one company);
- a run page whose NDJSON log is a sparse 4 GiB file (the log tail reads only its end).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paperclip.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.urls import reverse  # noqa: E402

from heartbeat.models import HeartbeatRun  # noqa: E402
from paperclip.models import Company, CompanyMembership  # noqa: E402


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


def _database_use(name: str) -> None:
    connection.close()
    settings.DATABASES["default"]["NAME"] = name
    connection.settings_dict["NAME"] = name


SEED_SQL = """
INSERT INTO paperclip_company (id, name, status, issue_prefix, issue_counter,
    budget_monthly_cents, spent_monthly_cents, require_board_approval_for_new_agents,
    created_at, updated_at)
SELECT gen_random_uuid(), 'Company ' || c, 'active', 'C' || c, 0, 0, 0, true, now(), now()
FROM generate_series(1, 3) c;

INSERT INTO heartbeat_agent (id, company_id, name, role, status, adapter_type, adapter_config,
    runtime_config, budget_monthly_cents, spent_monthly_cents, permissions, created_at,
    updated_at)
SELECT gen_random_uuid(), co.id, 'agent-' || co.issue_prefix || '-' || a, 'engineer', 'idle',
    'process', '{}', '{}', 0, 0, '{}', now(), now()
FROM paperclip_company co, generate_series(1, 10) a;

INSERT INTO issues_issue (id, company_id, title, status, priority, assignee_agent_id,
    issue_number, identifier, origin_kind, request_depth, created_at, updated_at)
SELECT gen_random_uuid(), ag.company_id, 'Issue ' || i || ' for ' || ag.name,
    CASE WHEN i % 50 = 0 THEN 'todo' ELSE 'done' END, 'medium', ag.id,
    row_number() OVER (PARTITION BY ag.company_id ORDER BY ag.name, i),
    gen_random_uuid()::text, 'manual', 0, now(), now() - interval '1 day'
FROM heartbeat_agent ag, generate_series(1, %(issues_per_agent)s) i;
UPDATE issues_issue i SET identifier = c.issue_prefix || '-' || i.issue_number
FROM paperclip_company c WHERE c.id = i.company_id;

WITH agents AS (
    SELECT id, company_id, row_number() OVER (ORDER BY id) - 1 AS n FROM heartbeat_agent
), issues AS (
    SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM issues_issue
), counts AS (
    SELECT (SELECT count(*) FROM agents) AS agents, (SELECT count(*) FROM issues) AS issues
)
INSERT INTO heartbeat_heartbeatrun (id, company_id, agent_id, invocation_source, status,
    started_at, finished_at, error, error_code, log_compressed, process_pid, process_host,
    process_loss_retry_count, issue_comment_status, context_snapshot, event_seq, created_at,
    updated_at, owner_host, lease_expires_at)
SELECT gen_random_uuid(), ag.company_id, ag.id, 'assignment',
    CASE WHEN r % 100 < 95 THEN 'succeeded' WHEN r % 100 < 99 THEN 'failed'
         WHEN r %% 2 = 0 THEN 'failed' ELSE 'cancelled' END,
    ts, ts + interval '3 minutes',
    CASE WHEN r % 100 >= 95 THEN 'Process lost -- child pid ' || r || ' is gone' END,
    CASE WHEN r % 100 BETWEEN 95 AND 96 THEN 'process_lost'
         WHEN r % 100 BETWEEN 97 AND 98 THEN 'adapter_failed'
         WHEN r % 100 >= 99 AND r %% 2 = 0 THEN 'adapter_failed'
         WHEN r % 100 >= 99 THEN 'cancelled' END,
    false, 10000 + r, 'bench-host', 0, 'not_applicable',
    jsonb_build_object('issueId', iss.id::text), %(events_per_run)s, ts, ts, 'bench-host', NULL
FROM generate_series(1, %(runs)s) r
CROSS JOIN counts
CROSS JOIN LATERAL (SELECT now() - (r::float / %(runs)s) * interval '30 days' AS ts) t
JOIN agents ag ON ag.n = r %% counts.agents
JOIN issues iss ON iss.n = r %% counts.issues;

INSERT INTO heartbeat_heartbeatrunevent (id, company_id, run_id, agent_id, seq, event_type,
    stream, level, message, created_at)
SELECT gen_random_uuid(), run.company_id, run.id, run.agent_id, s, 'lifecycle', 'system',
    'info', 'event ' || s, run.created_at
FROM heartbeat_heartbeatrun run, generate_series(1, %(events_per_run)s) s;

INSERT INTO heartbeat_heartbeatrun (id, company_id, agent_id, invocation_source, status,
    started_at, finished_at, log_compressed, process_loss_retry_count, issue_comment_status,
    context_snapshot, event_seq, created_at, updated_at, retry_of_run_id)
SELECT gen_random_uuid(), lost.company_id, lost.agent_id, 'automation', 'succeeded',
    lost.finished_at, lost.finished_at + interval '2 minutes', false, 1, 'not_applicable',
    lost.context_snapshot || '{"retryReason": "process_lost"}', 0, lost.finished_at,
    lost.finished_at, lost.id
FROM heartbeat_heartbeatrun lost WHERE lost.error_code = 'process_lost';

ANALYZE;
"""


def seed(runs: int, events_per_run: int) -> None:
    sql = SEED_SQL.replace("%%", "%").replace("%(issues_per_agent)s", "200")
    sql = sql.replace("%(runs)s", str(runs)).replace("%(events_per_run)s", str(events_per_run))
    # A few running runs with expired leases, as the dashboard's worst case.
    sql += """
UPDATE heartbeat_heartbeatrun SET status = 'running', finished_at = NULL, error = NULL,
    error_code = NULL, lease_expires_at = now() - interval '5 minutes', created_at = now(),
    started_at = now() - interval '1 hour'
WHERE id IN (SELECT id FROM heartbeat_heartbeatrun WHERE status = 'succeeded'
             AND retry_of_run_id IS NULL ORDER BY created_at DESC LIMIT 40);
"""
    with connection.cursor() as cursor:
        cursor.execute(sql)


def measure(client: Client, url: str, repeat: int) -> tuple[float, int]:
    timings, statements = [], 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url)
            timings.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code)
        statements = len(queries)
    return statistics.median(timings) * 1000, statements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=500_000)
    parser.add_argument("--events-per-run", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", default="bench_console")
    args = parser.parse_args()
    setup_test_environment()
    previous = database_recreate(args.db)
    home = tempfile.TemporaryDirectory()
    try:
        started = time.perf_counter()
        seed(args.runs, args.events_per_run)
        total_runs = HeartbeatRun.objects.count()
        print(
            f"seeded {total_runs} runs, {total_runs * args.events_per_run} events "
            f"in {time.perf_counter() - started:.1f} s (not timed below)"
        )
        User = get_user_model()
        root = User.objects.create_superuser("bench-root", "root@example.com", "pw-bench-123")
        board = User.objects.create_user("bench-board", password="pw-bench-123", is_staff=True)
        company = Company.objects.order_by("name").first()
        CompanyMembership.objects.create(company=company, user=board)
        admin_client, board_client = Client(), Client()
        admin_client.force_login(root)
        board_client.force_login(board)

        settings.PAPERCLIP_HOME = Path(home.name)
        log = Path(home.name) / "run-logs" / "huge.ndjson"
        log.parent.mkdir(parents=True)
        with open(log, "wb") as handle:
            handle.truncate(4 * 1024**3)
            handle.seek(0, 2)
            for i in range(2000):
                record = {"ts": "2026-01-01T00:00:00Z", "stream": "stdout", "chunk": f"line {i}"}
                handle.write(json.dumps(record).encode() + b"\n")
        big_log_run = HeartbeatRun.objects.filter(status="running").first()
        HeartbeatRun.objects.filter(pk=big_log_run.pk).update(log_ref="huge.ndjson")
        identifier = company.issues.order_by("issue_number").values_list("identifier", flat=True)[7]

        runs = reverse("admin:heartbeat_heartbeatrun_changelist")
        pages = [
            ("run list, unfiltered", admin_client, runs),
            ("run list, stale=any", admin_client, runs + "?stale=any"),
            ("run list, lost", admin_client, runs + "?error_code=process_lost"),
            ("run list, search issue", admin_client, runs + f"?q={identifier}"),
            ("run list, board user", board_client, runs),
            (
                "event list, unfiltered",
                admin_client,
                reverse("admin:heartbeat_heartbeatrunevent_changelist"),
            ),
            ("dashboard, all companies", admin_client, reverse("heartbeat-dashboard-fragment")),
            ("dashboard, one company", board_client, reverse("heartbeat-dashboard-fragment")),
            (
                "run page, 4 GiB log",
                admin_client,
                reverse("admin:heartbeat_heartbeatrun_change", args=[big_log_run.pk]),
            ),
        ]
        print(f"median of {args.repeat} requests each")
        for label, client, url in pages:
            elapsed_ms, statements = measure(client, url, args.repeat)
            print(f"{label:<28} {elapsed_ms:8.1f} ms  {statements:3d} SQL statements")
    finally:
        home.cleanup()
        database_drop(args.db, previous)


if __name__ == "__main__":
    main()
