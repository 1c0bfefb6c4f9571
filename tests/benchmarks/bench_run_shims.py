"""Benchmark: many long runs at once under run shims, watched by one run supervisor.

    .venv/bin/python tests/benchmarks/bench_run_shims.py [--runs 200] [--sleep 60]

Creates a scratch database (`bench_shims`, dropped at the end), starts `manage.py qcluster`
(4 workers, the default) and `manage.py supervise_runs` on it with a host cap above --runs,
wakes --runs runs of `sleep N` at once (over agents with `maxConcurrentRuns` 10) and measures:

1. how long until every run executes (its agent's identity recorded), from the first wake;
2. while they wait: the supervisor's CPU (share of one core, and CPU per run per minute) and its
   memory, against its memory before the runs (flat in the number of runs or not);
3. the memory each run costs beyond its agent: the PSS of its shim (proportional set size:
   pages shared between the shims counted once), and its USS (pages of its own);
4. how long after the agents end every run is finalized (succeeded, from its exit report).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil
from bench_engine_throughput import (
    MB,
    ShimReaper,
    database_drop,
    database_recreate,
    product_start,
    product_stop,
    wait_until,
    wake_many,
)
from django.conf import settings
from django.db.models import Max, Min

from heartbeat.models import HeartbeatRun, RunSupervisor
from tests.factories import make_agent, make_company


def smaps(pid: int) -> dict[str, int]:
    """The process's smaps_rollup in bytes (Pss, Private_Clean, Private_Dirty, Rss, ...)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--sleep", type=int, default=60)
    parser.add_argument("--watch", type=int, default=30, help="seconds of CPU measurement")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--db", default="bench_shims")
    args = parser.parse_args()

    previous_db = settings.DATABASES["default"]["NAME"]
    scratch = Path(tempfile.mkdtemp(prefix="bench-shims-"))
    database_recreate(args.db)
    company = make_company(name="Benchmark")
    agents = [
        make_agent(
            company,
            adapter_type="process",
            adapter_config={"command": "sleep", "args": [str(args.sleep)]},
            runtime_config={"heartbeat": {"maxConcurrentRuns": 10}},
        )
        for _ in range((args.runs + 9) // 10)
    ]
    procs = product_start(
        args.db, args.workers, scratch, PAPERCLIP_HOST_MAX_CONCURRENT_RUNS=str(args.runs + 16)
    )
    supervisor = psutil.Process(procs[1].pid)
    reaper = ShimReaper(keep={proc.pid for proc in procs})
    try:
        wait_until(
            lambda: RunSupervisor.objects.filter(pid=supervisor.pid).exists(), 60, "the supervisor"
        )
        idle_rss = supervisor.memory_info().rss
        idle_pss = smaps(supervisor.pid)["Pss"]
        load_before = os.getloadavg()[0]
        print(f"{args.runs} runs of `sleep {args.sleep}` woken at once ...", flush=True)
        t0 = time.monotonic()
        run_ids = wake_many(agents, args.runs, "s")
        woken_in = time.monotonic() - t0
        executing = HeartbeatRun.objects.filter(
            pk__in=run_ids, status="running", shim_pid__isnull=False, process_pid__isnull=False
        )
        wait_until(lambda: executing.count() == args.runs, 120, "every run executing")
        all_running_after = time.monotonic() - t0
        print(
            f"  woken in {woken_in:.1f}s; all {args.runs} executing {all_running_after:.1f}s after "
            f"the first wake"
        )

        wait_until(
            lambda: (
                HeartbeatRun.objects.filter(pk__in=run_ids, owner_pid=supervisor.pid).count()
                == args.runs
            ),
            30,
            "the supervisor watching every run",
        )
        cpu_before = supervisor.cpu_times()
        window = min(args.watch, max(args.sleep - all_running_after - 10, 5))
        time.sleep(window)
        cpu_after = supervisor.cpu_times()
        used = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        print(
            f"  supervisor while {args.runs} runs wait ({window:.0f}s): {100 * used / window:.2f}% "
            f"of one core, {1000 * used / window * 60 / args.runs:.2f} ms CPU per run per minute"
        )
        busy_rss = supervisor.memory_info().rss
        busy_pss = smaps(supervisor.pid)["Pss"]
        print(
            f"  supervisor memory: RSS {idle_rss / MB:.1f} MB before the runs, "
            f"{busy_rss / MB:.1f} MB watching {args.runs}; PSS {idle_pss / MB:.1f} -> "
            f"{busy_pss / MB:.1f} MB"
        )

        shims = HeartbeatRun.objects.filter(pk__in=run_ids).values_list("shim_pid", flat=True)
        sizes = [smaps(pid) for pid in shims]
        pss = sorted(size["Pss"] / MB for size in sizes)
        uss = sorted((size["Private_Clean"] + size["Private_Dirty"]) / MB for size in sizes)
        print(
            f"  per run beyond its agent (its shim): PSS median {statistics.median(pss):.2f} MB "
            f"(max {pss[-1]:.2f}), USS median {statistics.median(uss):.2f} MB, "
            f"RSS {psutil.Process(shims[0]).memory_info().rss / MB:.1f} MB"
        )
        load_during = os.getloadavg()[0]

        ended = HeartbeatRun.objects.filter(pk__in=run_ids, status="succeeded")
        wait_until(lambda: ended.count() == args.runs, args.sleep + 120, "every run finalized")
        window_of_runs = HeartbeatRun.objects.filter(pk__in=run_ids).aggregate(
            first=Min("started_at"), last=Max("finished_at")
        )
        span = (window_of_runs["last"] - window_of_runs["first"]).total_seconds()
        reaper.collect()
        print(
            f"  all {args.runs} succeeded; first start to last finish {span:.1f}s "
            f"(agents sleep {args.sleep}s); {reaper.reaped} shims reaped, "
            f"{1000 * reaper.cpu_seconds / max(reaper.reaped, 1):.1f} ms CPU each (with agent)"
        )
        print(
            f"  load average: {load_before:.2f} before, {load_during:.2f} while they waited, "
            f"{os.getloadavg()[0]:.2f} at the end"
        )
    finally:
        product_stop(procs)
        database_drop(args.db, previous_db)


if __name__ == "__main__":
    main()
