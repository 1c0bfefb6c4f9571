"""Paperclip's own CLI (`paperclipai` 2026.916.1 on Node 24) against the running product.

The product is started as a user starts it (`python3 -m paperclip start`, its own embedded
PostgreSQL in a temporary PAPERCLIP_HOME) and every client command of the CLI that this product
serves is run as a user runs it, with `--json` where the command has it; each test asserts on
what the command printed. The CLI comes from the npm registry into a cache outside the checkout
(tests/cli/npm_cache.py, prepared by .ci/run); the tests skip only when the registry cannot be
reached.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import npm_cache
from tests.polling import wait_until

pytestmark = [pytest.mark.process, pytest.mark.cluster, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SEC = 180
RUN_TIMEOUT_SEC = 60
# The agent: a process that reports how it was woken, then asks nothing more of the API.
AGENT_SCRIPT = (
    "import os\n"
    "print('woken', os.environ.get('PAPERCLIP_WAKE_REASON'),"
    " os.environ.get('PAPERCLIP_WAKE_COMMENT_ID'), flush=True)\n"
)


@pytest.fixture(scope="module")
def cli() -> npm_cache.PaperclipCli:
    ready = npm_cache.installed()
    if ready is None:
        try:
            ready = npm_cache.prepare()
        except npm_cache.RegistryUnreachable as exc:
            pytest.skip(f"Paperclip's CLI cannot be installed: {exc}")
    return ready


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _product_env(home: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PAPERCLIP_") and name not in ("DATABASE_URL",)
    }
    env.update(PAPERCLIP_HOME=str(home), PAPERCLIP_ADMIN_PASSWORD="cli-e2e-password")
    return env


@dataclass(frozen=True)
class Product:
    origin: str
    env: dict[str, str]

    def board_token(self) -> str:
        """A board token made as the README says: `manage.py create_board_token`."""
        done = subprocess.run(
            [sys.executable, "manage.py", "create_board_token"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def get(self, path: str, token: str) -> dict:
        request = urllib.request.Request(
            f"{self.origin}{path}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


@pytest.fixture(scope="module")
def product(cli, tmp_path_factory) -> Product:
    home = tmp_path_factory.mktemp("paperclip-home")
    port = _free_port()
    env = _product_env(home)
    log = (home / "start.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "paperclip", "start", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    origin = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _answers(f"{origin}/api/health"),
            timeout=START_TIMEOUT_SEC,
            interval=0.3,
            message="`start` answers /api/health",
        )
        yield Product(origin=origin, env=env)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@dataclass
class Runner:
    """Runs the CLI as a user would, authenticated with one token."""

    cli: npm_cache.PaperclipCli
    origin: str
    token: str
    home: Path

    def text(self, *args: str) -> str:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.home), "NO_COLOR": "1"}
        done = subprocess.run(
            self.cli.command(*args, "--api-base", self.origin, "--api-key", self.token),
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SEC + 30,
            check=False,
        )
        assert done.returncode == 0, f"paperclipai {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done.stdout

    def json(self, *args: str):
        return json.loads(self.text(*args, "--json"))


@pytest.fixture(scope="module")
def board(cli, product, tmp_path_factory) -> Runner:
    return Runner(cli, product.origin, product.board_token(), tmp_path_factory.mktemp("cli-home"))


@pytest.fixture(scope="module")
def company(board) -> dict:
    return board.json(
        "company",
        "create",
        "--payload-json",
        json.dumps(
            {"name": "CLI Works", "issuePrefix": "CLI", "requireBoardApprovalForNewAgents": False}
        ),
    )


def _create_agent(board: Runner, company: dict, name: str) -> dict:
    payload = {
        "name": name,
        "role": "engineer",
        "adapterType": "process",
        "adapterConfig": {"command": sys.executable, "args": ["-c", AGENT_SCRIPT]},
    }
    return board.json("agent", "create", "-C", company["id"], "--payload-json", json.dumps(payload))


@pytest.fixture(scope="module")
def agent(board, company) -> dict:
    return _create_agent(board, company, "Builder")


@pytest.fixture(scope="module")
def agent_runner(board, company, agent, tmp_path_factory) -> Runner:
    created = board.json("token", "agent", "create", "-C", company["id"], "--agent", agent["id"])
    home = tmp_path_factory.mktemp("agent-cli-home")
    return Runner(board.cli, board.origin, created["key"]["token"], home)


def _issue(board: Runner, company: dict, title: str, *options: str) -> dict:
    return board.json("issue", "create", "-C", company["id"], "--title", title, *options)


def _finished_run_of(product: Product, board: Runner, issue_id: str, reason: str) -> dict:
    """The issue's run woken for `reason`, once it has finished."""

    def finished():
        for summary in board.json("issue", "runs", issue_id):
            run = product.get(f"/api/heartbeat-runs/{summary['id']}", board.token)
            context = run["contextSnapshot"] or {}
            if context.get("wakeReason") == reason and run["status"] == "succeeded":
                return run
        return None

    return wait_until(
        finished, timeout=RUN_TIMEOUT_SEC, interval=0.3, message=f"a {reason} run has succeeded"
    )


# Server, identity, documents


def test_health_reports_the_database_up(board):
    health = board.json("health")
    assert (health["status"], health["database"]["ok"]) == ("ok", True)


def test_whoami_names_the_board_user_and_its_key(board):
    me = board.json("whoami")
    assert (me["user"]["name"], me["source"], me["isInstanceAdmin"]) == ("admin", "board_key", True)
    assert uuid.UUID(me["keyId"])


def test_cli_reads_the_server_and_the_token_from_the_environment(cli, product, tmp_path):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PAPERCLIP_API_URL": product.origin,
        "PAPERCLIP_API_KEY": product.board_token(),
    }
    done = subprocess.run(
        cli.command("whoami", "--json"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["user"]["name"] == "admin"


def test_openapi_prints_the_api_document(board):
    document = board.json("openapi")
    assert "/api/issues/{issue_ref}/comments" in document["paths"]


# Companies


def test_company_create_answers_the_new_company(company):
    assert (company["name"], company["issuePrefix"]) == ("CLI Works", "CLI")


def test_company_list_includes_the_company(board, company):
    assert company["id"] in {row["id"] for row in board.json("company", "list")}


def test_company_get_reads_the_company(board, company):
    assert board.json("company", "get", company["id"])["name"] == "CLI Works"


def test_company_update_changes_the_description(board, company):
    payload = json.dumps({"description": "driven by paperclipai"})
    updated = board.json("company", "update", company["id"], "--payload-json", payload)
    assert updated["description"] == "driven by paperclipai"


# Agents


def test_agent_create_answers_the_new_agent(agent):
    assert (agent["name"], agent["adapterType"], agent["status"]) == ("Builder", "process", "idle")


def test_agent_list_includes_the_agent(board, company, agent):
    assert agent["id"] in {row["id"] for row in board.json("agent", "list", "-C", company["id"])}


def test_agent_get_reads_the_agent(board, agent):
    assert board.json("agent", "get", agent["id"])["name"] == "Builder"


def test_agent_update_changes_the_title(board, agent):
    updated = board.json(
        "agent", "update", agent["id"], "--payload-json", json.dumps({"title": "Build engineer"})
    )
    assert updated["title"] == "Build engineer"


def test_agent_pause_and_resume_answer_the_agent(board, company):
    other = _create_agent(board, company, "Pausable")
    assert board.json("agent", "pause", other["id"])["status"] == "paused"
    assert board.json("agent", "resume", other["id"])["status"] == "idle"


def test_agent_terminate_answers_the_terminated_agent(board, company):
    other = _create_agent(board, company, "Leaving")
    assert board.json("agent", "terminate", other["id"])["status"] == "terminated"


def test_agent_wake_by_short_name_queues_a_run(board, company, agent):
    run = board.json("agent", "wake", "builder", "-C", company["id"], "--reason", "cli check")
    assert (run["agentId"], run["contextSnapshot"]["wakeReason"]) == (agent["id"], "cli check")


def test_agent_heartbeat_invoke_queues_an_on_demand_run(board, agent):
    run = board.json("agent", "heartbeat:invoke", agent["id"])
    assert (run["agentId"], run["invocationSource"]) == (agent["id"], "on_demand")


def test_agent_runtime_state_after_a_run(board, product, agent):
    board.text("heartbeat", "run", "--agent-id", agent["id"], "--timeout-ms", "60000")
    state = board.json("agent", "runtime-state", agent["id"])
    assert state["agentId"] == agent["id"]
    assert state["lastRunStatus"] == "succeeded"


def test_agent_me_with_the_agents_key(agent_runner, agent):
    assert agent_runner.json("agent", "me")["id"] == agent["id"]


def test_agent_inbox_lists_the_agents_open_issues(board, company, agent, agent_runner):
    issue = _issue(board, company, "For the inbox", "--assignee-agent-id", agent["id"])
    assert issue["id"] in {row["id"] for row in agent_runner.json("agent", "inbox")}


# Heartbeat runs


def test_heartbeat_run_streams_the_command_and_ends_succeeded(board, agent):
    output = board.text("heartbeat", "run", "--agent-id", agent["id"], "--timeout-ms", "60000")
    assert f"Command: {sys.executable} -c" in output
    assert "completed with status succeeded" in output


# Issues


def test_issue_create_with_an_agent_wakes_it(board, product, company, agent):
    issue = _issue(
        board, company, "Wake on create", "--status", "todo", "--assignee-agent-id", agent["id"]
    )
    assert issue["identifier"].startswith("CLI-")
    run = _finished_run_of(product, board, issue["id"], "issue_assigned")
    assert run["contextSnapshot"]["source"] == "issue.create"


def test_issue_list_filters_by_status(board, company):
    issue = _issue(board, company, "Listed", "--status", "todo")
    rows = board.json("issue", "list", "-C", company["id"], "--status", "todo")
    assert issue["id"] in {row["id"] for row in rows}
    assert {row["status"] for row in rows} == {"todo"}


def test_issue_get_by_identifier(board, company):
    issue = _issue(board, company, "By identifier")
    assert board.json("issue", "get", issue["identifier"])["id"] == issue["id"]


def test_issue_update_back_to_todo_with_a_comment_wakes_the_agent_with_it(
    board, product, company, agent
):
    issue = _issue(
        board, company, "Blocked", "--status", "todo", "--assignee-agent-id", agent["id"]
    )
    # The assignment's run checks the issue out; then the work gets blocked, and a person
    # unblocks it with a comment.
    _finished_run_of(product, board, issue["id"], "issue_assigned")
    board.json("issue", "update", issue["id"], "--status", "blocked")
    board.json("issue", "update", issue["id"], "--status", "todo", "--comment", "CI is green")
    comment = board.json("issue", "comments", issue["id"])[-1]
    run = _finished_run_of(product, board, issue["id"], "issue_reopened_via_comment")
    assert run["contextSnapshot"]["wakeCommentId"] == comment["id"]
    log = product.get(f"/api/heartbeat-runs/{run['id']}/log", board.token)["content"]
    assert f"woken issue_reopened_via_comment {comment['id']}" in log


def test_issue_comment_on_an_issue_in_review_wakes_the_agent(board, product, company, agent):
    issue = _issue(board, company, "In review", "--status", "in_review")
    board.json("issue", "update", issue["id"], "--assignee-agent-id", agent["id"])
    comment = board.json("issue", "comment", issue["id"], "--body", "Rename the flag")
    run = _finished_run_of(product, board, issue["id"], "issue_commented")
    assert run["contextSnapshot"]["wakeCommentId"] == comment["id"]


def test_issue_comments_after_a_comment_id(board, company):
    issue = _issue(board, company, "Thread")
    ids = [board.json("issue", "comment", issue["id"], "--body", b)["id"] for b in "abc"]
    rows = board.json("issue", "comments", issue["id"], "--after-comment-id", ids[0])
    assert [row["id"] for row in rows] == ids[1:]


def test_issue_comment_get_reads_one_comment(board, company):
    issue = _issue(board, company, "One comment")
    comment = board.json("issue", "comment", issue["id"], "--body", "hello")
    assert board.json("issue", "comment:get", issue["id"], comment["id"])["body"] == "hello"


def test_issue_comment_delete_leaves_a_tombstone(board, company):
    issue = _issue(board, company, "Deleted comment")
    comment = board.json("issue", "comment", issue["id"], "--body", "typo")
    deleted = board.json("issue", "comment:delete", issue["id"], comment["id"])
    assert (deleted["id"], deleted["body"]) == (comment["id"], "")
    assert deleted["deletedAt"]


def test_issue_heartbeat_context_has_the_comment_cursor(board, company):
    issue = _issue(board, company, "Context")
    comment = board.json("issue", "comment", issue["id"], "--body", "latest")
    context = board.json("issue", "heartbeat-context", issue["id"])
    assert context["commentCursor"]["latestCommentId"] == comment["id"]


def test_issue_checkout_and_release(board, company, agent):
    issue = _issue(board, company, "Checkout", "--status", "todo")
    checked_out = board.json("issue", "checkout", issue["id"], "--agent-id", agent["id"])
    assert (checked_out["status"], checked_out["assigneeAgentId"]) == ("in_progress", agent["id"])
    released = board.json("issue", "release", issue["id"])
    assert (released["status"], released["assigneeAgentId"]) == ("todo", None)


def test_issue_runs_live_runs_and_active_run(board, product, company, agent):
    issue = _issue(board, company, "Runs", "--status", "todo", "--assignee-agent-id", agent["id"])
    run = _finished_run_of(product, board, issue["id"], "issue_assigned")
    assert run["id"] in {row["id"] for row in board.json("issue", "runs", issue["id"])}
    assert board.json("issue", "live-runs", issue["id"]) == []
    assert board.json("issue", "active-run", issue["id"]) is None


def test_issue_delete_removes_the_issue(board, company):
    issue = _issue(board, company, "To delete")
    board.text("issue", "delete", issue["id"], "--yes")
    remaining = board.json("issue", "list", "-C", company["id"])
    assert issue["id"] not in {row["id"] for row in remaining}


# Activity and the dashboard


def test_activity_list_shows_the_companys_entries(board, company):
    issue = _issue(board, company, "Logged")
    rows = board.json("activity", "list", "-C", company["id"], "--entity-id", issue["id"])
    assert [row["action"] for row in rows] == ["issue.created"]


def test_activity_issue_lists_the_issues_history(board, company):
    issue = _issue(board, company, "History")
    board.json("issue", "comment", issue["id"], "--body", "note")
    actions = [row["action"] for row in board.json("activity", "issue", issue["id"])]
    assert actions == ["issue.comment_added", "issue.created"]


def test_dashboard_get_summarises_the_company(board, company):
    summary = board.json("dashboard", "get", "-C", company["id"])
    assert summary["companyId"] == company["id"]
    assert summary["tasks"]["open"] >= 1
    assert len(summary["runActivity"]) == 14


# Tokens


def test_token_agent_create_list_and_revoke(board, company, agent):
    created = board.json(
        "token", "agent", "create", "-C", company["id"], "--agent", agent["id"], "--name", "ci"
    )
    key = created["key"]
    assert key["token"].startswith("pcak_")
    listed = board.json("token", "agent", "list", "-C", company["id"], "--agent", agent["id"])
    assert key["id"] in {row["id"] for row in listed["keys"]}
    revoked = board.json(
        "token", "agent", "revoke", key["id"], "-C", company["id"], "--agent", agent["id"]
    )
    assert (revoked["ok"], revoked["revokedAt"] is not None) == (True, True)


def test_token_board_create_list_and_revoke(board):
    key = board.json("token", "board", "create", "--name", "laptop")["key"]
    assert key["token"].startswith("pcbt_") and key["expiresAt"]
    assert key["id"] in {row["id"] for row in board.json("token", "board", "list")}
    assert board.json("token", "board", "revoke", key["id"]) == {"ok": True, "keyId": key["id"]}
    assert key["id"] not in {row["id"] for row in board.json("token", "board", "list")}
