"""Benchmark: trivial `process` runs end to end through a real django-q2 cluster and run
supervisor.

    .venv/bin/python tests/benchmarks/bench_engine_throughput.py [--runs 1000] [--workers 4]

Creates a scratch database (`bench_engine`, dropped at the end) on the configured server, starts
`manage.py qcluster` and `manage.py supervise_runs` on it, and measures:

1. throughput of trivial runs (a shell script that exits at once), twice: N runs woken before
   the cluster starts (a backlog: the engine's own rate), then N runs woken while it runs (end to
   end, the waking process competing for the same CPUs); runs/s over the whole phase and from
   the first claim to the last finish; CPU per run (cluster, supervisor, the runs' shims and
   agents, PostgreSQL) and the load average;
2. latency: runs woken one at a time, wake -> agent start at the median and p95 (start = the
   `adapter invoked` event, committed with the shim's and agent's identities right after the
   shim reported the agent started; the OS start time is only accurate to a second, so it is
   not used);
3. memory: RSS of the cluster's and the supervisor's processes before, during and after the
   runs, and while one run prints 200 MB.

Run shims leave the product's process tree (they are re-parented at once), so this script makes
itself a child subreaper: they end up its children, and their CPU (with their agents') is read
from their exit status when it reaps them.
"""

from __future__ import annotations

import argparse
import ctypes
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


def product_start(db_name: str, workers: int, log_dir: Path, **env: str) -> list[subprocess.Popen]:
    """`qcluster` and `supervise_runs` on the scratch database (the cluster first in the list)."""
    environment = {
        **os.environ,
        "PAPERCLIP_DB_NAME": db_name,
        "PAPERCLIP_Q_WORKERS": str(workers),
        "PAPERCLIP_RUN_LOG_DIR": str(log_dir / "run-logs"),
        "PAPERCLIP_LOG_LEVEL": "WARNING",
        **env,
    }
    return [
        subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), command],
            env=environment,
            stdout=(log_dir / f"{command}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for command in ("qcluster", "supervise_runs")
    ]


def product_stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class ShimReaper:
    """Makes this process a child subreaper and adds up the CPU of the run shims it reaps."""

    def __init__(self, keep: set[int]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        self.keep = keep
        self.cpu_seconds = 0.0
        self.reaped = 0

    def collect(self) -> None:
        while True:
            try:
                seen = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if seen is None or seen.si_pid in self.keep:
                return
            _pid, _status, usage = os.wait4(seen.si_pid, 0)
            # A shim's own CPU plus its agent's (and whatever else it reaped).
            self.cpu_seconds += usage.ru_utime + usage.ru_stime
            self.reaped += 1


def product_rss(procs: list[subprocess.Popen]) -> dict[int, int]:
    """RSS of the product's Python processes (cluster sentinel, pusher, monitor, workers, and
    the supervisor), by pid."""
    found = {}
    for root in procs:
        top = psutil.Process(root.pid)
        for proc in [top, *top.children(recursive=True)]:
            try:
                if "manage.py" in " ".join(proc.cmdline()):
                    found[proc.pid] = proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
    return found


def product_cpu_seconds(procs: list[subprocess.Popen]) -> list[float]:
    """CPU used so far by each of the product's commands (cluster with its recycled workers,
    then the supervisor)."""
    totals = []
    for root in procs:
        top = psutil.Process(root.pid)
        total = 0.0
        for proc in [top, *top.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
        totals.append(total)
    return totals


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


def drain(procs, reaper: ShimReaper, run_ids, rss_peak: dict[int, int]) -> None:
    """Wait until every run finished, sampling the product's RSS and reaping shims."""
    started = time.monotonic()
    while (done := finished(run_ids)) < len(run_ids):
        reaper.collect()
        for pid, rss in product_rss(procs).items():
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
    load_before = os.getloadavg()[0]
    procs = product_start(args.db, args.workers, scratch)
    reaper = ShimReaper(keep={proc.pid for proc in procs})
    try:
        t0 = time.monotonic()
        rss_peak: dict[int, int] = {}
        drain(procs, reaper, backlog, rss_peak)
        report_runs("backlog drained", backlog, time.monotonic() - t0)
        time.sleep(1)
        reaper.collect()
        # Load-independent: what one run costs the machine (the host is shared while measuring).
        cluster_ms, supervisor_ms = (
            seconds * 1000 / len(backlog) for seconds in product_cpu_seconds(procs)
        )
        shims_ms = reaper.cpu_seconds * 1000 / len(backlog)
        database_ms = database_cpu_seconds(args.db) * 1000 / len(backlog)
        total_ms = cluster_ms + supervisor_ms + shims_ms + database_ms
        print(
            f"  CPU per run: {cluster_ms:.0f} ms cluster (launch) + {supervisor_ms:.0f} ms "
            f"supervisor (finalize) + {shims_ms:.0f} ms its shim and agent ({reaper.reaped} shims "
            f"reaped) + {database_ms:.0f} ms PostgreSQL = about {2000 / total_ms:.0f} runs/s on "
            "two idle cores"
        )
        print(f"  load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
        rss_after_backlog = product_rss(procs)

        print(f"end to end: {args.runs} runs woken while the cluster runs ...", flush=True)
        t0 = time.monotonic()
        live = wake_many(agents, args.runs, "t")
        woken_in = time.monotonic() - t0
        drain(procs, reaper, live, rss_peak)
        report_runs(f"woken in {woken_in:.1f}s, finished", live, time.monotonic() - t0)
        rss_after = product_rss(procs)

        print(f"latency: {args.latency_runs} runs woken one at a time ...", flush=True)
        paced = []
        for i in range(args.latency_runs):
            run_id = wake_agent(
                agent_id=agents[i % len(agents)].id, payload={"taskKey": f"l{i}"}
            ).run.id
            paced.append(run_id)
            wait_until(lambda run_id=run_id: finished([run_id]) == 1, 60, "a paced run")
            reaper.collect()
        latencies = spawn_latencies(paced)
        print(
            f"  wake -> agent start: median {statistics.median(latencies):.0f} ms, "
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
        drain(procs, reaper, [big], big_peak)
        big_run = HeartbeatRun.objects.get(pk=big)
        print(
            f"  run {big_run.status}: log {big_run.log_bytes / MB:.0f} MB, "
            f"excerpt {len(big_run.stdout_excerpt or '')} chars"
        )

        def fmt(sample: dict[int, int]) -> str:
            return ", ".join(f"{rss / MB:.0f}" for _, rss in sorted(sample.items()))

        print("RSS of the product's processes (MB; cluster processes, then the supervisor):")
        print(f"  after the backlog ({args.runs} runs):  {fmt(rss_after_backlog)}")
        print(f"  after {2 * args.runs} runs:               {fmt(rss_after)}")
        print(f"  peak during those runs:          {fmt(rss_peak)}")
        print(f"  peak during the {args.big_output_mb} MB run:       {fmt(big_peak)}")
        print(f"  load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        product_stop(procs)
        database_drop(args.db, previous_db)


if __name__ == "__main__":
    main()
