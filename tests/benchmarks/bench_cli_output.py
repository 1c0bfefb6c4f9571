"""Benchmark: reading what coding-agent CLIs print, and recording their cost under concurrency.

    .venv/bin/python tests/benchmarks/bench_cli_output.py [--sizes 1,10,100] [--runs 1000]
        [--threads 16] [--agents 20]

1. parse: run logs of Claude `stream-json` and Codex `exec --json` output of 1, 10 and 100 MB
   (tool results making up most of it, as in real runs) are parsed as finalize parses them
   (RunTranscript: the log streamed line by line): time per MB of log, and peak Python
   memory (tracemalloc), which must not grow with the log;
2. spend: on a scratch database (`bench_costs`, dropped at the end), `--runs` running Claude
   runs of `--agents` agents of one company, each with its log, are finalized from their exit
   reports by `--threads` threads at once (as several hosts' supervisors and reapers would):
   finalizations per second, and whether the spend of every agent and of the company equals
   the sum of the cost records exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paperclip.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Sum  # noqa: E402

from heartbeat.adapters.cli_output import ClaudeStreamJsonParser, CodexJsonParser  # noqa: E402
from heartbeat.models import Agent, CostEvent, HeartbeatRun  # noqa: E402
from heartbeat.run_log import RunLogWriter, RunTranscript, run_log_path, run_log_ref  # noqa: E402
from heartbeat.services import run_finalize_from_report  # noqa: E402
from tests.benchmarks.bench_recovery import database_drop, database_recreate  # noqa: E402
from tests.factories import make_agent, make_company, make_run  # noqa: E402
from tests.fake_cli import recorded  # noqa: E402

MB = 1024 * 1024
SESSION = "4f0c1e8a-7b7c-4d2b-9b1e-2f6d1c3b5a90"


def claude_events(size: int):
    """Events of a Claude run whose stream is about `size` bytes, mostly tool results."""
    yield recorded.claude_init(SESSION)
    written, step = 0, 0
    while written < size:
        step += 1
        text = recorded.claude_assistant_text(SESSION, f"Step {step}: reading the next file.")
        output = f"line {step} of a file the agent read\n" * 400
        for event in (text, *recorded.claude_tool_round(SESSION, f"cat f{step}", output)):
            written += len(json.dumps(event))
            yield event
    yield recorded.claude_result(
        SESSION,
        result="Done.",
        cost_usd=1.2345,
        input_tokens=1,
        cached_input_tokens=2,
        output_tokens=3,
    )


def codex_events(size: int):
    yield recorded.codex_thread_started(SESSION)
    written, step = 0, 0
    while written < size:
        step += 1
        output = f"line {step} of a file the agent read\n" * 400
        for event in recorded.codex_turn(f"Step {step}.", command=f"cat f{step}", output=output):
            written += len(json.dumps(event))
            yield event
    yield recorded.codex_turn_completed(input_tokens=10, cached_input_tokens=5, output_tokens=2)


def write_log(log_ref: str, events) -> int:
    """Write events as the run shim logs the agent's stdout (64 KiB reads); the log's size."""
    writer = RunLogWriter(
        path=run_log_path(log_ref),
        secrets=("pcr_secret_credential",),
        chunk_max_chars=65536,
        excerpt_max_chars=32768,
    )
    pending = b""
    for event in events:
        pending += (json.dumps(event) + "\n").encode()
        while len(pending) >= 65536:
            writer.write("stdout", pending[:65536])
            pending = pending[65536:]
    writer.write("stdout", pending)
    return writer.close().log_bytes


def bench_parse(sizes: list[int]) -> None:
    for name, events, parser in (
        ("claude", claude_events, ClaudeStreamJsonParser),
        ("codex", codex_events, CodexJsonParser),
    ):
        for size_mb in sizes:
            log_ref = f"bench/{name}/{size_mb}.ndjson"
            size = write_log(log_ref, events(size_mb * MB))
            started = time.perf_counter()
            output = RunTranscript(log_ref, parser()).finish()
            took = time.perf_counter() - started
            tracemalloc.start()
            RunTranscript(log_ref, parser()).finish()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert output.session_id == SESSION and output.usage is not None
            print(
                f"parse {name:6} log {size / MB:7.1f} MB  {took:6.2f} s  "
                f"{took * 1000 / (size / MB):5.1f} ms/MB  {output.lines:>7} lines  "
                f"peak {peak / MB:5.2f} MB"
            )


def race(targets: list[Callable[[], object]], threads: int) -> list[object]:
    """Run the targets on `threads` threads, each with its own connection, started together."""
    results: list[object] = [None] * len(targets)
    barrier = threading.Barrier(threads)
    lock = threading.Lock()
    queue = list(range(len(targets)))

    def worker() -> None:
        barrier.wait()
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    index = queue.pop()
                try:
                    results[index] = targets[index]()
                except Exception as exc:  # reported by the caller
                    results[index] = exc
        finally:
            connection.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return results


def bench_spend(runs: int, threads: int, agents: int) -> None:
    company = make_company(budget_monthly_cents=10**9)
    team = [
        make_agent(company, adapter_type="claude_local", adapter_config={}) for _ in range(agents)
    ]
    reports = []
    for index in range(runs):
        agent = team[index % agents]
        run = make_run(agent, status="running", context_snapshot={"taskKey": f"t{index}"})
        log_ref = run_log_ref(company_id=company.id, agent_id=agent.id, run_id=run.id)
        HeartbeatRun.objects.filter(pk=run.pk).update(log_ref=log_ref)
        session = f"s-{index}"
        events = [
            recorded.claude_init(session),
            recorded.claude_result(
                session,
                result="ok",
                cost_usd=round(0.001 + (index % 997) * 0.0173, 4),
                input_tokens=index,
                cached_input_tokens=0,
                output_tokens=1,
            ),
        ]
        size = write_log(log_ref, events)
        reports.append((run.id, {"exitCode": 0, "log": {"bytes": size, "sha256": f"{index:064x}"}}))
    started = time.perf_counter()
    results = race(
        [
            lambda run_id=run_id, report=report: run_finalize_from_report(
                run_id=run_id, report=report
            )
            for run_id, report in reports
        ],
        threads,
    )
    took = time.perf_counter() - started
    failures = [result for result in results if result != "succeeded"]
    recorded_cents = CostEvent.objects.aggregate(total=Sum("cost_cents"))["total"]
    company.refresh_from_db()
    exact = company.spent_monthly_cents == recorded_cents and all(
        agent.spent_monthly_cents
        == CostEvent.objects.filter(agent=agent).aggregate(total=Sum("cost_cents"))["total"]
        for agent in Agent.objects.filter(company=company)
    )
    print(
        f"spend  {runs} runs of {agents} agents finalized by {threads} threads: {took:.2f} s "
        f"({runs / took:.0f}/s); {len(failures)} failures; cost records "
        f"{CostEvent.objects.count()}, {recorded_cents} cents; company spend "
        f"{company.spent_monthly_cents}; spend exact: {exact}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--db", default="bench_costs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs:
        settings.PAPERCLIP_HEARTBEAT = {"run_log_dir": logs}
        bench_parse([int(size) for size in args.sizes.split(",")])
        previous = database_recreate(args.db)
        try:
            bench_spend(args.runs, args.threads, args.agents)
        finally:
            database_drop(args.db, previous)


if __name__ == "__main__":
    main()
