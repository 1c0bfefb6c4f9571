"""Benchmark: trivial `process` runs end to end through a real django-q2 cluster.

    .venv/bin/python tests/benchmarks/bench_engine_throughput.py [--runs 1000] [--workers 4]

Creates a scratch database (`bench_engine`, dropped at the end) on the configured server, starts
`manage.py qcluster` on it, and measures:

1. throughput of trivial runs (a shell script that exits at once), twice: N runs woken before
   the cluster starts (a backlog: the engine's own rate), then N runs woken while it runs (end to
   end, the waking process competing for the same CPUs); runs/s over the whole phase and from
   the first claim to the last finish;
2. latency: runs woken one at a time, wake -> process spawn at the median and p95 (spawn = the
   `adapter invoked` event, committed with the process identity right after the fork; the OS
   start time is only accurate to a second, so it is not used);
3. memory: RSS of the cluster's workers before, during and after the runs, and while one run
   prints 200 MB.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paperclip.settings")

import django  # noqa: E402

django.setup()

import psutil  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count, Max, Min  # noqa: E402

from heartbeat.models import HeartbeatRun, HeartbeatRunEvent  # noqa: E402
from heartbeat.services import wake_agent  # noqa: E402
from tests.factories import make_agent, make_company  # noqa: E402

MB = 1024 * 1024


def database_recreate(name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    _database_use(name)
    call_command("migrate", verbosity=0)


def database_drop(name: str, previous: str) -> None:
    _database_use(previous)
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _database_use(name: str) -> None:
    connection.close()
    settings.DATABASES["default"]["NAME"] = name
    connection.settings_dict["NAME"] = name


def cluster_start(db_name: str, workers: int, log_dir: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PAPERCLIP_DB_NAME": db_name,
        "PAPERCLIP_Q_WORKERS": str(workers),
        "PAPERCLIP_RUN_LOG_DIR": str(log_dir / "run-logs"),
        "PAPERCLIP_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "qcluster"],
        env=env,
        stdout=(log_dir / "qcluster.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def cluster_stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def worker_rss(cluster: subprocess.Popen) -> dict[int, int]:
    """RSS of the cluster's Python processes (sentinel, pusher, monitor, workers), by pid."""
    found = {}
    for proc in psutil.Process(cluster.pid).children(recursive=True):
        try:
            if "qcluster" in " ".join(proc.cmdline()):
                found[proc.pid] = proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return found


def cluster_cpu_seconds(cluster: subprocess.Popen) -> float:
    """CPU used by the cluster so far: its processes, recycled workers and the runs they reaped."""
    root = psutil.Process(cluster.pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def database_cpu_seconds(db_name: str) -> float:
    """CPU used so far by the PostgreSQL backends serving the scratch database."""
    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if f" {db_name} " in " ".join(proc.info["cmdline"] or []) + " ":
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.05)


def finished(run_ids) -> int:
    return HeartbeatRun.objects.filter(pk__in=run_ids, finished_at__isnull=False).count()


def spawn_latencies(run_ids) -> list[float]:
    spawned = dict(
        HeartbeatRunEvent.objects.filter(
            run_id__in=run_ids, event_type="adapter.invoke"
        ).values_list("run_id", "created_at")
    )
    woken = dict(
        HeartbeatRun.objects.filter(pk__in=run_ids).values_list(
            "id", "wakeup_request__requested_at"
        )
    )
    return sorted(
        (spawned[run_id] - woken[run_id]).total_seconds() * 1000
        for run_id in run_ids
        if run_id in spawned
    )


def wake_many(agents, count: int, prefix: str) -> list:
    return [
        wake_agent(agent_id=agents[i % len(agents)].id, payload={"taskKey": f"{prefix}{i}"}).run.id
        for i in range(count)
    ]


def drain(cluster, run_ids, rss_peak: dict[int, int]) -> None:
    """Wait until every run finished, sampling the cluster's RSS."""
    started = time.monotonic()
    while (done := finished(run_ids)) < len(run_ids):
        for pid, rss in worker_rss(cluster).items():
            rss_peak[pid] = max(rss_peak.get(pid, 0), rss)
        if time.monotonic() - started > 1800:
            raise SystemExit(f"only {done} of {len(run_ids)} runs finished in 30 minutes")
        time.sleep(0.5)


def report_runs(label: str, run_ids, elapsed: float) -> None:
    runs = HeartbeatRun.objects.filter(pk__in=run_ids)
    statuses = dict(runs.values_list("status").annotate(n=Count("id")))
    window = runs.aggregate(first=Min("started_at"), last=Max("finished_at"))
    executing = (window["last"] - window["first"]).total_seconds()
    print(f"  {label}: {statuses} in {elapsed:.1f}s")
    print(
        f"  {len(run_ids) / elapsed:.1f} runs/s end to end; {len(run_ids) / executing:.1f} runs/s "
        f"from first claim to last finish ({executing:.1f}s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--big-output-mb", type=int, default=200)
    parser.add_argument("--db", default="bench_engine")
    args = parser.parse_args()

    previous_db = settings.DATABASES["default"]["NAME"]
    scratch = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    database_recreate(args.db)
    exits_at_once = scratch / "exit0.sh"
    exits_at_once.write_text("#!/bin/sh\nexit 0\n")
    exits_at_once.chmod(0o755)
    company = make_company(name="Benchmark")
    # Many agents with a cap each, so the per-agent cap is not what limits throughput.
    agents = [
        make_agent(
            company,
            adapter_type="process",
            adapter_config={"command": str(exits_at_once)},
            runtime_config={"heartbeat": {"maxConcurrentRuns": 10}},
        )
        for _ in range(args.agents)
    ]
    print(f"backlog: {args.runs} runs woken before the cluster starts ...", flush=True)
    backlog = wake_many(agents, args.runs, "b")
    cluster = cluster_start(args.db, args.workers, scratch)
    try:
        t0 = time.monotonic()
        rss_peak: dict[int, int] = {}
        drain(cluster, backlog, rss_peak)
        report_runs("backlog drained", backlog, time.monotonic() - t0)
        # Load-independent: what one run costs the machine (the host is shared while measuring).
        cluster_ms = cluster_cpu_seconds(cluster) * 1000 / len(backlog)
        database_ms = database_cpu_seconds(args.db) * 1000 / len(backlog)
        print(
            f"  CPU per run: {cluster_ms:.0f} ms in the cluster (workers, runs, pusher, monitor) "
            f"+ {database_ms:.0f} ms in PostgreSQL = about "
            f"{2000 / (cluster_ms + database_ms):.0f} runs/s on two otherwise idle cores"
        )
        rss_after_backlog = worker_rss(cluster)

        print(f"end to end: {args.runs} runs woken while the cluster runs ...", flush=True)
        t0 = time.monotonic()
        live = wake_many(agents, args.runs, "t")
        woken_in = time.monotonic() - t0
        drain(cluster, live, rss_peak)
        report_runs(f"woken in {woken_in:.1f}s, finished", live, time.monotonic() - t0)
        rss_after = worker_rss(cluster)

        print(f"latency: {args.latency_runs} runs woken one at a time ...", flush=True)
        paced = []
        for i in range(args.latency_runs):
            run_id = wake_agent(
                agent_id=agents[i % len(agents)].id, payload={"taskKey": f"l{i}"}
            ).run.id
            paced.append(run_id)
            wait_until(lambda run_id=run_id: finished([run_id]) == 1, 60, "a paced run")
        latencies = spawn_latencies(paced)
        print(
            f"  wake -> spawn: median {statistics.median(latencies):.0f} ms, "
            f"p95 {latencies[int(len(latencies) * 0.95) - 1]:.0f} ms, max {latencies[-1]:.0f} ms"
        )

        print(f"memory: one run printing {args.big_output_mb} MB ...", flush=True)
        loud = make_agent(
            company,
            adapter_type="process",
            adapter_config={
                "command": sys.executable,
                "args": [
                    "-c",
                    "import sys\nline = b'x' * 1023 + b'\\n'\n"
                    f"for _ in range({args.big_output_mb} * 1024): sys.stdout.buffer.write(line)",
                ],
            },
        )
        big = wake_agent(agent_id=loud.id).run.id
        big_peak: dict[int, int] = {}
        drain(cluster, [big], big_peak)
        big_run = HeartbeatRun.objects.get(pk=big)
        print(
            f"  run {big_run.status}: log {big_run.log_bytes / MB:.0f} MB, "
            f"excerpt {len(big_run.stdout_excerpt or '')} chars"
        )

        def fmt(sample: dict[int, int]) -> str:
            return ", ".join(f"{rss / MB:.0f}" for _, rss in sorted(sample.items()))

        print("RSS of the cluster's processes (MB; sentinel, pusher, monitor and workers):")
        print(f"  after the backlog ({args.runs} runs):  {fmt(rss_after_backlog)}")
        print(f"  after {2 * args.runs} runs:               {fmt(rss_after)}")
        print(f"  peak during those runs:          {fmt(rss_peak)}")
        print(f"  peak during the {args.big_output_mb} MB run:       {fmt(big_peak)}")
    finally:
        cluster_stop(cluster)
        database_drop(args.db, previous_db)


if __name__ == "__main__":
    main()
