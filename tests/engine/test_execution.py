"""Executing runs as real processes under real run shims, watched by a real run supervisor:
outcomes, the whole tree on timeout and cancel, the environment an agent gets, finalize side
effects. Every assertion reads the DB or the process table."""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from heartbeat.models import Agent, AgentRuntimeState, AgentWakeupRequest, HeartbeatRun
from heartbeat.run_log import REDACTED, run_log_path, run_log_read
from heartbeat.services import cancel_run, run_execute, wake_agent
from issues.models import Issue
from paperclip.credentials import run_credential_parse
from tests.factories import make_agent, make_company, make_issue
from tests.polling import wait_until
from tests.supervision import SupervisorDriver

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WAIT_SECONDS = 30.0

TREE_SCRIPT = """
import json, os, subprocess, sys, time
pids_file = sys.argv[1]
grandchild_file = pids_file + ".grandchild"
child = subprocess.Popen([sys.executable, "-c", (
    "import subprocess, sys, time\\n"
    "g = subprocess.Popen(['sleep', '300'])\\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(g.pid))\\n"
    "__import__('os').rename(sys.argv[1] + '.tmp', sys.argv[1])\\n"
    "time.sleep(300)\\n"), grandchild_file])
escapee = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
    start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while not os.path.exists(grandchild_file):
    time.sleep(0.02)
pids = {"root": os.getpid(), "child": child.pid, "escapee": escapee.pid,
        "grandchild": int(open(grandchild_file).read())}
open(pids_file + ".tmp", "w").write(json.dumps(pids))
os.rename(pids_file + ".tmp", pids_file)
print("tree up", flush=True)
time.sleep(300)
"""


def _process_agent(script: str, *args: str, **config) -> Agent:
    return make_agent(
        role="engineer",
        adapter_type="process",
        adapter_config={"command": sys.executable, "args": ["-c", script, *args], **config},
    )


def _queued(agent: Agent, **payload) -> HeartbeatRun:
    return wake_agent(agent_id=agent.id, reason="test", payload=payload).run


def _tree_processes(pids_file: Path) -> list[psutil.Process]:
    wait_until(pids_file.exists, timeout=WAIT_SECONDS, message="the run's process tree is up")
    pids = json.loads(pids_file.read_text())
    assert set(pids) == {"root", "child", "grandchild", "escapee"}
    return [psutil.Process(pid) for pid in pids.values()]


def _gone(proc: psutil.Process) -> bool:
    # Orphans that died stay zombies here (PID 1 does not reap), so a zombie counts as gone.
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _execute_in_thread(run_id) -> tuple[threading.Thread, list]:
    results: list = []

    def target() -> None:
        try:
            results.append(run_execute(run_id=run_id))
        except BaseException as exc:  # surfaced by the test
            results.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, results


def _run_to_end(supervisor: SupervisorDriver, run: HeartbeatRun) -> str:
    """Launch the run as its django-q2 task would, then let the supervisor finalize it."""
    launched = run_execute(run_id=run.id)
    supervisor.settle(run.id)
    run.refresh_from_db()
    assert launched.executed
    return run.status


@pytest.mark.timeout(60)
def test_script_that_prints_and_exits_zero_succeeds_with_its_output_logged(
    run_logs, dispatched, supervisor
):
    agent = _process_agent("import sys; print('hello from run'); print('warn', file=sys.stderr)")
    run = _queued(agent)

    launched = run_execute(run_id=run.id)
    supervisor.settle(run.id)

    run.refresh_from_db()
    assert (launched.executed, launched.status) == (True, "running")
    assert (run.status, run.exit_code, run.error, run.error_code) == ("succeeded", 0, None, None)
    assert run.stdout_excerpt == "hello from run\n"
    assert run.stderr_excerpt == "warn\n"
    lines = run_log_read(run.log_ref)
    assert any(line["chunk"] == "hello from run\n" for line in lines)
    assert run.log_bytes == run_log_path(run.log_ref).stat().st_size
    assert run.log_ref == f"{agent.company_id}/{agent.id}/{run.id}.ndjson"
    assert str(run_logs) in str(run_log_path(run.log_ref))
    # The agent's and its shim's identities were recorded at launch.
    assert run.process_pid and run.process_group_id == run.process_pid
    assert run.process_started_at is not None and run.process_boot_id
    assert run.shim_pid and run.shim_pid != run.process_pid and run.shim_started_at
    assert AgentWakeupRequest.objects.get(pk=run.wakeup_request_id).status == "completed"
    agent.refresh_from_db()
    assert agent.status == "idle" and agent.last_heartbeat_at is not None
    state = AgentRuntimeState.objects.get(pk=agent.pk)
    assert (state.last_run_id, state.last_run_status) == (run.id, "succeeded")
    messages = list(run.events.values_list("seq", "message"))
    assert messages == [
        (1, "run queued"),
        (2, "run started"),
        (3, "adapter invoked"),
        (4, "run succeeded"),
    ]


@pytest.mark.timeout(60)
def test_script_that_exits_one_fails(run_logs, dispatched, supervisor):
    agent = _process_agent("import sys; sys.exit(1)")
    run = _queued(agent)
    assert _run_to_end(supervisor, run) == "failed"
    assert (run.status, run.exit_code, run.error_code) == ("failed", 1, "adapter_failed")
    assert run.error == "Process exited with code 1"
    assert AgentWakeupRequest.objects.get(pk=run.wakeup_request_id).status == "failed"
    agent.refresh_from_db()
    assert agent.status == "error"


@pytest.mark.timeout(60)
def test_agent_killed_by_a_signal_fails_naming_the_signal(run_logs, dispatched, supervisor):
    agent = _process_agent("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    run = _queued(agent)
    assert _run_to_end(supervisor, run) == "failed"
    assert (run.exit_code, run.signal, run.error) == (
        None,
        "SIGKILL",
        "Process terminated by SIGKILL",
    )


@pytest.mark.timeout(90)
def test_run_past_its_timeout_ends_timed_out_with_its_whole_tree_gone(
    run_logs, dispatched, supervisor, tmp_path
):
    pids_file = tmp_path / "pids.json"
    agent = _process_agent(TREE_SCRIPT, str(pids_file), timeoutSec=3, graceSec=1)
    run = _queued(agent)

    run_execute(run_id=run.id)
    tree = _tree_processes(pids_file)
    supervisor.settle(run.id)

    run.refresh_from_db()
    assert (run.status, run.error_code, run.error) == ("timed_out", "timeout", "Timed out after 3s")
    assert run.signal in ("SIGTERM", "SIGKILL")
    assert all(_gone(proc) for proc in tree), [p.pid for p in tree if not _gone(p)]
    assert "tree up" in run.stdout_excerpt
    # What the shim did is on the run, in its words.
    assert run.events.filter(message__startswith="timed out after 3s").exists()


@pytest.mark.timeout(90)
def test_cancel_of_a_running_run_ends_cancelled_with_its_tree_gone(
    run_logs, dispatched, supervisor, tmp_path, telemetry
):
    pids_file = tmp_path / "pids.json"
    agent = _process_agent(TREE_SCRIPT, str(pids_file), graceSec=1)
    run = _queued(agent)
    run_execute(run_id=run.id)
    tree = _tree_processes(pids_file)
    supervisor.tick()

    cancelled = cancel_run(run.id)
    supervisor.settle(run.id)

    assert cancelled.status == "cancelled"
    assert all(_gone(proc) for proc in tree), [p.pid for p in tree if not _gone(p)]
    run.refresh_from_db()
    assert (run.status, run.error_code, run.error) == (
        "cancelled",
        "cancelled",
        "Cancelled by control plane",
    )
    # The output the shim recorded until the end is kept on the cancelled run.
    assert run.signal in ("SIGTERM", "SIGKILL")
    assert "tree up" in run.stdout_excerpt
    assert AgentWakeupRequest.objects.get(pk=run.wakeup_request_id).status == "cancelled"
    agent.refresh_from_db()
    assert agent.status == "idle"
    assert telemetry == [
        ("agent.first_heartbeat", {"agent_role": "engineer", "agent_id": str(agent.id)})
    ]


@pytest.mark.timeout(90)
def test_cancel_written_by_another_host_is_carried_out_by_the_runs_supervisor(
    run_logs, dispatched, supervisor, tmp_path
):
    pids_file = tmp_path / "pids.json"
    agent = _process_agent(TREE_SCRIPT, str(pids_file), graceSec=1)
    run = _queued(agent)
    run_execute(run_id=run.id)
    tree = _tree_processes(pids_file)
    supervisor.tick()

    # Another host can only write the database; it never signals our processes.
    HeartbeatRun.objects.filter(pk=run.id).update(
        status="cancelled", finished_at=timezone.now(), error_code="cancelled"
    )
    cancelled_at = time.monotonic()
    supervisor.settle_until(
        lambda: all(_gone(proc) for proc in tree),
        seconds=WAIT_SECONDS,
        message="the cancelled run's tree is gone",
    )
    stopped_after = time.monotonic() - cancelled_at
    supervisor.settle(run.id)

    assert stopped_after < 2.0
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert run.log_bytes and "tree up" in run.stdout_excerpt
    assert run.events.filter(
        message__startswith="process finished after the run was ended elsewhere"
    ).exists()


@pytest.mark.timeout(90)
def test_two_workers_executing_one_run_give_one_execution(
    run_logs, dispatched, supervisor, tmp_path
):
    marks = tmp_path / "executions.txt"
    agent = _process_agent(f"open({str(marks)!r}, 'a').write('ran\\n')")
    run = _queued(agent)

    first, first_results = _execute_in_thread(run.id)
    second, second_results = _execute_in_thread(run.id)
    first.join(WAIT_SECONDS)
    second.join(WAIT_SECONDS)
    supervisor.settle(run.id)

    executed = [r.executed for r in first_results + second_results]
    assert sorted(executed) == [False, True]
    assert marks.read_text() == "ran\n"
    run.refresh_from_db()
    assert run.status == "succeeded"


@pytest.mark.timeout(60)
def test_executing_a_run_that_is_not_queued_is_a_no_op(run_logs, dispatched, supervisor):
    agent = _process_agent("print('x')")
    run = _queued(agent)
    _run_to_end(supervisor, run)
    finished_at = HeartbeatRun.objects.get(pk=run.id).finished_at

    again = run_execute(run_id=run.id)

    assert (again.executed, again.status) == (False, "not_queued")
    assert HeartbeatRun.objects.get(pk=run.id).finished_at == finished_at


@pytest.mark.timeout(60)
def test_launch_returns_while_the_agent_still_runs(run_logs, dispatched, supervisor):
    agent = _process_agent("import time; time.sleep(3)")
    run = _queued(agent)

    started = time.monotonic()
    launched = run_execute(run_id=run.id)
    took = time.monotonic() - started

    run.refresh_from_db()
    assert (launched.status, run.status) == ("running", "running")
    assert took < 2.0
    assert psutil.Process(run.process_pid).is_running()
    supervisor.settle(run.id)


@pytest.mark.timeout(120)
def test_deferred_wake_is_promoted_when_the_first_run_finishes(run_logs, dispatched, supervisor):
    company = make_company()
    config = {"command": sys.executable, "args": ["-c", "print('ok')"]}
    first_agent = make_agent(company, name="Ada", adapter_type="process", adapter_config=config)
    second_agent = make_agent(company, name="Bob", adapter_type="process", adapter_config=config)
    issue = make_issue(company, status="todo")
    first = wake_agent(agent_id=first_agent.id, payload={"issueId": str(issue.id)}).run
    deferred = wake_agent(agent_id=second_agent.id, payload={"issueId": str(issue.id)})
    assert deferred.outcome == "deferred"

    _run_to_end(supervisor, first)

    deferred.wakeup.refresh_from_db()
    promoted = deferred.wakeup.run
    issue.refresh_from_db()
    assert (deferred.wakeup.status, deferred.wakeup.reason) == (
        "queued",
        "issue_execution_promoted",
    )
    assert promoted.agent_id == second_agent.id and promoted.status == "queued"
    assert issue.execution_run_id == promoted.id
    assert str(promoted.id) in dispatched

    _run_to_end(supervisor, promoted)

    issue.refresh_from_db()
    assert HeartbeatRun.objects.get(pk=promoted.id).status == "succeeded"
    assert issue.execution_run_id is None


@pytest.mark.timeout(60)
def test_fake_codex_on_path_receives_the_cli_invocation_and_agent_environment(
    run_logs, dispatched, supervisor, tmp_path, monkeypatch
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dump = tmp_path / "codex-call.json"
    codex = bin_dir / "codex"
    codex.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "call = {'argv': sys.argv, 'env': dict(os.environ), 'stdin': sys.stdin.read(),"
        " 'cwd': os.getcwd()}\n"
        "open(os.environ['FAKE_CODEX_DUMP'], 'w').write(json.dumps(call))\n"
        "print('key is', os.environ['PAPERCLIP_API_KEY'])\n"
    )
    codex.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:pw@db/secret")
    work = tmp_path / "work"
    work.mkdir()
    agent = make_agent(
        name="Coder",
        adapter_type="codex_local",
        adapter_config={
            "model": "gpt-5-codex",
            "cwd": str(work),
            "extraArgs": ["--skip-git-repo-check"],
            "env": {"FAKE_CODEX_DUMP": str(dump)},
            "promptTemplate": "Hi {{agent.name}}, work on {{context.issueId}}",
        },
    )
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    run = wake_agent(
        agent_id=agent.id, reason="issue_assigned", payload={"issueId": str(issue.id)}
    ).run

    _run_to_end(supervisor, run)

    call = json.loads(dump.read_text())
    env = call["env"]
    assert call["argv"][1:] == [
        "exec",
        "--json",
        "--model",
        "gpt-5-codex",
        "--skip-git-repo-check",
        "-",
    ]
    assert call["stdin"] == f"Hi Coder, work on {issue.id}"
    assert call["cwd"] == str(work)
    assert env["PAPERCLIP_API_URL"] == settings.PAPERCLIP_API_URL
    assert env["PAPERCLIP_RUN_ID"] == str(run.id)
    assert env["PAPERCLIP_AGENT_ID"] == str(agent.id)
    assert env["PAPERCLIP_COMPANY_ID"] == str(agent.company_id)
    assert env["PAPERCLIP_TASK_ID"] == str(issue.id)
    assert env["PAPERCLIP_WAKE_REASON"] == "issue_assigned"
    credential = run_credential_parse(env["PAPERCLIP_API_KEY"])
    assert credential is not None and credential.run_id == str(run.id)
    assert "DATABASE_URL" not in env
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert run.stdout_excerpt == f"key is {REDACTED}\n"
    assert env["PAPERCLIP_API_KEY"] not in run_log_path(run.log_ref).read_text()


@pytest.mark.timeout(60)
def test_first_finished_run_sends_one_telemetry_event_with_the_role(
    run_logs, dispatched, supervisor, telemetry
):
    agent = _process_agent("print('ok')")
    _run_to_end(supervisor, _queued(agent))
    _run_to_end(supervisor, _queued(agent))
    assert telemetry == [
        ("agent.first_heartbeat", {"agent_role": "engineer", "agent_id": str(agent.id)})
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("adapter_type", "config", "code", "message"),
    [
        ("gemini_local", {}, "adapter_unknown", "unknown adapter type 'gemini_local'"),
        ("process", {"args": ["x"]}, "adapter_invalid", "adapter_config.command is required"),
        ("process", {"command": "/no/such/binary"}, "spawn_failed", "command not found"),
        (
            "process",
            {"command": "true", "cwd": "/no/such/workspace"},
            "spawn_failed",
            "working directory '/no/such/workspace'",
        ),
    ],
)
def test_adapter_that_cannot_start_fails_the_run_with_a_clear_error(
    run_logs, dispatched, adapter_type, config, code, message
):
    agent = make_agent(adapter_type=adapter_type, adapter_config=config)
    run = _queued(agent)
    result = run_execute(run_id=run.id)
    run.refresh_from_db()
    assert result.status == "failed"
    assert run.error_code == code and message in run.error
    assert run.process_pid is None
    assert AgentWakeupRequest.objects.get(pk=run.wakeup_request_id).status == "failed"


@pytest.mark.timeout(120)
def test_large_output_is_logged_whole_with_bounded_excerpts(run_logs, dispatched, supervisor):
    agent = _process_agent(
        "import sys\nfor i in range(20000): sys.stdout.write(f'line {i:06d} ' + 'x' * 240 + '\\n')"
    )
    run = _queued(agent)
    _run_to_end(supervisor, run)
    lines = run_log_read(run.log_ref)
    stdout = "".join(line["chunk"] for line in lines if line["stream"] == "stdout")
    assert run.status == "succeeded"
    assert stdout.count("\n") == 20000
    assert len(run.stdout_excerpt) == 32 * 1024
    assert run.stdout_excerpt.endswith("line 019999 " + "x" * 240 + "\n")


@pytest.mark.timeout(60)
def test_issue_run_releases_the_execution_lock_but_keeps_the_checkout(
    run_logs, dispatched, supervisor
):
    agent = _process_agent("print('ok')")
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    run = wake_agent(
        agent_id=agent.id, reason="issue_assigned", payload={"issueId": str(issue.id)}
    ).run
    _run_to_end(supervisor, run)
    issue = Issue.objects.get(pk=issue.pk)
    assert issue.execution_run_id is None
    assert (issue.checkout_run_id, issue.status) == (run.id, "in_progress")


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append({"body": json.loads(body), "auth": self.headers["Authorization"]})
        self.send_response(_Hook.status)
        self.end_headers()
        self.wfile.write(b'{"accepted": true}')

    def log_message(self, *args):
        return None


@pytest.fixture
def hook_url():
    _Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("status", "outcome"), [(200, "succeeded"), (500, "failed")])
def test_http_adapter_posts_the_run_context_and_ends_by_the_answer(
    run_logs, dispatched, supervisor, hook_url, status, outcome
):
    _Hook.status = status
    agent = make_agent(
        adapter_type="http",
        adapter_config={"url": hook_url, "headers": {"Authorization": "Bearer hook-secret-1"}},
    )
    run = _queued(agent, taskKey="report")

    _run_to_end(supervisor, run)

    assert run.status == outcome
    assert run.result_json == {"httpStatus": status}
    assert _Hook.received[0]["body"]["runId"] == str(run.id)
    assert _Hook.received[0]["body"]["context"]["taskKey"] == "report"
    assert _Hook.received[0]["auth"] == "Bearer hook-secret-1"
    assert run.stdout_excerpt == '{"accepted": true}'
    invoked = run.events.get(event_type="adapter.invoke")
    assert invoked.payload["url"] == hook_url


@pytest.mark.timeout(60)
def test_host_runs_at_most_its_cap_and_hands_out_a_parked_run_when_a_slot_frees(
    run_logs, dispatched, supervisor, settings
):
    settings.PAPERCLIP_HEARTBEAT = {**settings.PAPERCLIP_HEARTBEAT, "host_max_concurrent_runs": 1}
    first = _queued(_process_agent("import time; time.sleep(1)"))
    second = _queued(_process_agent("print('second')"))

    assert run_execute(run_id=first.id).status == "running"
    refused = run_execute(run_id=second.id)

    assert (refused.executed, refused.status) == (False, "host_at_capacity")
    second.refresh_from_db()
    assert (second.status, second.lease_expires_at) == ("queued", None)
    dispatched.clear()
    supervisor.settle(first.id)
    # The slot the first run freed goes to the parked run at once, not at the next sweep.
    assert dispatched == [str(second.id)]
