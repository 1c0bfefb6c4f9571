"""Benchmark: the reaper and the reconciler at 100, 1,000 and 10,000 items.

    .venv/bin/python tests/benchmarks/bench_recovery.py [--sizes 100,1000,10000]
        [--runs-per-agent 10] [--finished 100000]

Creates a scratch database (`bench_recovery`, dropped at the end) on the configured server and
measures, for each size N:

1. reap: N orphaned running runs (owner gone, pid dead, each holding its issue's lock) reaped,
   each failed and retried once: wall time, SQL statements per run;
2. reconcile: N stranded `todo` issues re-dispatched (latest run failed), and N escalated to
   blocked with a comment (latest run was the recovery): wall time, statements per issue;
3. memory: peak Python allocations (tracemalloc) of one reap and one reconcile sweep, in a
   separate pass because tracing slows Python down;

and once: a reap sweep finding one orphan among 100,000 finished runs (ms and statements),
and one finding none. Seeding uses bulk inserts so it takes seconds, and is not timed.

Each line also gives the CPU per item of this process (Python) and of the embedded PostgreSQL's
processes, and the load average: on a shared machine the wall time varies with the load, the
CPU per item does not (much).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
import uuid
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paperclip.settings")

import django  # noqa: E402

django.setup()

import psutil  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from heartbeat import process_control  # noqa: E402
from heartbeat.models import Agent, AgentWakeupRequest, HeartbeatRun  # noqa: E402
from heartbeat.services import (  # noqa: E402
    reap_orphaned_runs,
    reconcile_stranded_assigned_issues,
)
from issues.models import Issue  # noqa: E402
from paperclip.models import Company  # noqa: E402

DEAD_PID = 999_999_999
MB = 1024 * 1024


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


def database_clear() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE paperclip_activitylog, issues_issuecomment, issues_issue, "
            "heartbeat_heartbeatrunevent, heartbeat_agentwakeuprequest, heartbeat_heartbeatrun, "
            "heartbeat_agentruntimestate, heartbeat_agent, heartbeat_sweeprecord, "
            "django_q_ormq, paperclip_company CASCADE"
        )


def seed_agents(
    n_items: int, runs_per_agent: int, status: str = Agent.Status.RUNNING
) -> tuple[Company, list[Agent]]:
    """Agents that ran before (their first heartbeat is behind them), n_items per agent."""
    company = Company.objects.create(name="Bench", issue_prefix=f"B{uuid.uuid4().hex[:6]}")
    agents = Agent.objects.bulk_create(
        Agent(
            company=company,
            name=f"agent-{i}",
            status=status,
            last_heartbeat_at=timezone.now(),
        )
        for i in range(max(1, n_items // runs_per_agent))
    )
    return company, agents


def seed_issues(company: Company, agents: list[Agent], n: int, status: str) -> list[Issue]:
    issues = Issue.objects.bulk_create(
        (
            Issue(
                company=company,
                title=f"issue {i}",
                status=status,
                assignee_agent=agents[i % len(agents)],
                issue_number=i + 1,
                identifier=f"{company.issue_prefix}-{i + 1}",
            )
            for i in range(n)
        ),
        batch_size=5000,
    )
    return issues


def seed_orphans(n: int, runs_per_agent: int, agent_status: str = Agent.Status.RUNNING) -> None:
    """N running runs whose worker is gone and whose process is dead, each locking its issue."""
    company, agents = seed_agents(n, runs_per_agent, agent_status)
    issues = seed_issues(company, agents, n, Issue.Status.IN_PROGRESS)
    host, boot_id = process_control.current_host(), process_control.current_boot_id()
    long_ago = timezone.now() - timedelta(minutes=10)
    wakeups, runs = [], []
    for i, issue in enumerate(issues):
        agent = agents[i % len(agents)]
        run_id, wakeup_id = uuid.uuid4(), uuid.uuid4()
        wakeups.append(
            AgentWakeupRequest(
                id=wakeup_id,
                company=company,
                agent=agent,
                source="assignment",
                status=AgentWakeupRequest.Status.CLAIMED,
                payload={"issueId": str(issue.id)},
                run_id=run_id,
            )
        )
        runs.append(
            HeartbeatRun(
                id=run_id,
                company=company,
                agent=agent,
                status=HeartbeatRun.Status.RUNNING,
                started_at=long_ago,
                wakeup_request_id=wakeup_id,
                context_snapshot={"issueId": str(issue.id), "wakeReason": "issue_assigned"},
                process_pid=DEAD_PID,
                process_group_id=DEAD_PID,
                process_host=host,
                process_boot_id=boot_id,
                owner_host=host,
                owner_boot_id=boot_id,
                owner_pid=DEAD_PID,
                lease_expires_at=long_ago,
            )
        )
    # The wake and the run point at each other: one transaction, foreign keys checked at commit.
    with transaction.atomic():
        AgentWakeupRequest.objects.bulk_create(wakeups, batch_size=5000)
        HeartbeatRun.objects.bulk_create(runs, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE issues_issue AS i SET execution_run_id = r.id, checkout_run_id = r.id, "
            "execution_agent_name_key = lower(a.name), execution_locked_at = now() "
            "FROM heartbeat_heartbeatrun AS r JOIN heartbeat_agent AS a ON a.id = r.agent_id "
            "WHERE (r.context_snapshot ->> 'issueId') = i.id::text"
        )
        cursor.execute("UPDATE heartbeat_heartbeatrun SET updated_at = %s", [long_ago])
        cursor.execute("ANALYZE")


def seed_stranded(n: int, runs_per_agent: int, retry_reason: str | None) -> None:
    """N todo issues assigned to agents, whose latest run failed; nothing else is pending."""
    company, agents = seed_agents(n, runs_per_agent)
    issues = seed_issues(company, agents, n, Issue.Status.TODO)
    now = timezone.now()
    runs = []
    for i, issue in enumerate(issues):
        context = {"issueId": str(issue.id)}
        if retry_reason:
            context["retryReason"] = retry_reason
        runs.append(
            HeartbeatRun(
                company=company,
                agent=agents[i % len(agents)],
                status=HeartbeatRun.Status.FAILED,
                started_at=now,
                finished_at=now,
                error_code="process_lost",
                error="run failed before issue advanced",
                context_snapshot=context,
            )
        )
    HeartbeatRun.objects.bulk_create(runs, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def seed_finished(n: int) -> None:
    """N succeeded runs (one agent), inserted by one INSERT ... SELECT."""
    company, (agent,) = seed_agents(1, 1)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO heartbeat_heartbeatrun (id, company_id, agent_id, invocation_source, "
            "status, started_at, finished_at, log_compressed, process_loss_retry_count, "
            "issue_comment_status, event_seq, context_snapshot, created_at, updated_at) "
            "SELECT gen_random_uuid(), %s, %s, 'on_demand', 'succeeded', now(), now(), false, "
            "0, 'not_applicable', 0, jsonb_build_object('issueId', gen_random_uuid()::text), "
            "now() - (g * interval '1 second'), now() - (g * interval '1 second') "
            "FROM generate_series(1, %s) AS g",
            [company.id, agent.id, n],
        )
        cursor.execute("ANALYZE")


def postgres_processes() -> list[psutil.Process]:
    """The embedded PostgreSQL's processes (none for DATABASE_URL: that server is not ours)."""
    pid_file = Path(settings.PAPERCLIP_HOME) / "pgdata" / "postmaster.pid"
    if os.environ.get("DATABASE_URL") or not pid_file.exists():
        return []
    postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
    return [postmaster, *postmaster.children(recursive=True)]


def postgres_cpu_seconds() -> float:
    total = 0.0
    for process in postgres_processes():
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def measure(sweep, n: int) -> tuple[float, int, object]:
    """Wall time, statements and result of one sweep; its CPU (this process's Python and the
    database server's processes) goes to LAST_CPU and LAST_DB_CPU: the figures that hold
    however busy the machine is."""
    global LAST_CPU, LAST_DB_CPU
    with CaptureQueriesContext(connection) as queries:
        db_cpu = postgres_cpu_seconds()
        started, cpu = time.perf_counter(), time.process_time()
        result = sweep()
        elapsed = time.perf_counter() - started
        LAST_CPU = time.process_time() - cpu
        LAST_DB_CPU = postgres_cpu_seconds() - db_cpu
    return elapsed, len(queries), result


LAST_CPU = 0.0
LAST_DB_CPU = 0.0


def peak_memory(sweep) -> float:
    tracemalloc.start()
    sweep()
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / MB


def reap() -> object:
    return reap_orphaned_runs(stale_threshold_sec=0)


def line(label: str, n: int, elapsed: float, statements: int) -> str:
    per_item = statements / n if n else float(statements)
    items = max(n, 1)
    # The machine is shared: the load average says how much of the wall time was waiting, the
    # CPU per item what the sweep costs whatever else runs.
    return (
        f"{label:<26} N={n:>6}  {elapsed * 1000:>9.1f} ms  {n / elapsed:>8.0f}/s  "
        f"{statements:>5} statements ({per_item:.2f}/item)  CPU per item: python "
        f"{LAST_CPU * 1000 / items:.3f} ms + postgres {LAST_DB_CPU * 1000 / items:.3f} ms  "
        f"load {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--runs-per-agent", type=int, default=10)
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--db", default="bench_recovery")
    parser.add_argument(
        "--paused",
        action="store_true",
        help="reaped runs' agents paused, as in the reference's fixture: retries stay queued "
        "and none is dispatched (reconciled issues' agents are always invokable)",
    )
    args = parser.parse_args()
    reap_agents = Agent.Status.PAUSED if args.paused else Agent.Status.RUNNING
    sizes = [int(size) for size in args.sizes.split(",")]
    previous = database_recreate(args.db)
    try:
        print(
            f"items per agent: {args.runs_per_agent}; reaped runs' agents {reap_agents}; "
            "batch size: sweep_batch_size (500)"
        )
        for n in sizes:
            database_clear()
            seed_orphans(n, args.runs_per_agent, reap_agents)
            elapsed, statements, result = measure(reap, n)
            assert result.reaped == n, result
            assert HeartbeatRun.objects.filter(retry_of_run__isnull=False).count() == n
            print(line("reap (fail + retry)", n, elapsed, statements))

            database_clear()
            seed_stranded(n, args.runs_per_agent, retry_reason=None)
            elapsed, statements, result = measure(reconcile_stranded_assigned_issues, n)
            assert result.dispatch_requeued == n, result
            print(line("reconcile (re-dispatch)", n, elapsed, statements))

            database_clear()
            seed_stranded(n, args.runs_per_agent, retry_reason="assignment_recovery")
            elapsed, statements, result = measure(reconcile_stranded_assigned_issues, n)
            assert result.escalated == n, result
            print(line("reconcile (escalate)", n, elapsed, statements))

        for n in sizes[-2:]:
            database_clear()
            seed_orphans(n, args.runs_per_agent, reap_agents)
            reap_peak = peak_memory(reap)
            database_clear()
            seed_stranded(n, args.runs_per_agent, retry_reason=None)
            reconcile_peak = peak_memory(reconcile_stranded_assigned_issues)
            print(
                f"peak Python memory          N={n:>6}  reap {reap_peak:6.1f} MB  "
                f"reconcile {reconcile_peak:6.1f} MB"
            )

        database_clear()
        seed_finished(args.finished)
        reap()  # warm the connection and the plan cache, as a periodic sweep would be
        elapsed, statements, result = measure(reap, 0)
        assert result.reaped == 0, result
        print(line(f"reap, 0 of {args.finished} finished", 0, max(elapsed, 1e-9), statements))
        seed_orphans(1, 1, reap_agents)
        elapsed, statements, result = measure(reap, 1)
        assert result.reaped == 1, result
        print(line(f"reap, 1 among {args.finished}", 1, elapsed, statements))
    finally:
        database_drop(args.db, previous)


if __name__ == "__main__":
    main()
