"""Claude Code and Codex agents end to end: fake `claude` and `codex` executables (tests/fake_cli)
print recorded-format output under real run shims, watched by a real run supervisor. What they
print becomes the run's session, usage, cost and summary; the next run on the task resumes the
session; a session the CLI no longer has is retried once without it."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from heartbeat.models import (
    Agent,
    AgentRuntimeState,
    AgentTaskSession,
    CostEvent,
    HeartbeatRun,
)
from heartbeat.services import TASK_KEY_NONE, run_execute, wake_agent
from issues.models import IssueComment
from paperclip.models import Company
from tests.factories import make_agent, make_company, make_issue
from tests.supervision import SupervisorDriver

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAKE_CLI = Path(__file__).resolve().parent.parent / "fake_cli"
SUMMARY = "Fixed the typo in README.md and checked the build."


@pytest.fixture
def cli_state(tmp_path) -> Path:
    """Where the fake CLIs keep their sessions and record their calls."""
    state = tmp_path / "cli-state"
    state.mkdir()
    return state


def _calls(state: Path) -> list[dict]:
    path = state / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _cli_agent(cli: str, state: Path, *, company: Company | None = None, env=None, **fields):
    return make_agent(
        company,
        role="engineer",
        adapter_type=f"{cli}_local",
        adapter_config={
            "command": str(FAKE_CLI / cli),
            "env": {"FAKE_CLI_STATE": str(state), **(env or {})},
            **({"model": "gpt-5-codex"} if cli == "codex" else {}),
        },
        **fields,
    )


def _work(supervisor: SupervisorDriver, agent: Agent, issue=None, **wake) -> HeartbeatRun:
    """Wake the agent (on the issue), execute the run as its task would, let it finish."""
    payload = {"issueId": str(issue.id)} if issue is not None else {"taskKey": "chores"}
    run = wake_agent(agent_id=agent.id, reason="issue_commented", payload=payload, **wake).run
    return _finish(supervisor, run)


def _finish(supervisor: SupervisorDriver, run: HeartbeatRun) -> HeartbeatRun:
    assert run_execute(run_id=run.id).executed
    supervisor.settle(run.id)
    run.refresh_from_db()
    return run


@pytest.mark.timeout(90)
def test_claude_run_records_session_usage_cost_model_and_summary(
    run_logs, dispatched, supervisor, cli_state
):
    agent = _cli_agent("claude", cli_state)
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)

    run = _work(supervisor, agent, issue)

    session = (cli_state / "claude-sessions").iterdir().__next__().name
    assert (run.status, run.error) == ("succeeded", None)
    assert (run.session_id_before, run.session_id_after) == (None, session)
    assert run.usage_json == {
        "usageBasis": "per_run",
        "inputTokens": 12,
        "cachedInputTokens": 28000,
        "outputTokens": 240,
        "cacheCreationInputTokens": 1864,
        "costUsd": 0.0421,
        "costCents": 4,
        "model": "claude-sonnet-4-5-20250929",
        "provider": "anthropic",
    }
    assert run.result_json["summary"] == SUMMARY
    assert run.result_json["numTurns"] == 3
    cost = CostEvent.objects.get(run=run)
    assert (cost.cost_usd, cost.cost_cents, cost.model) == (
        Decimal("0.0421"),
        4,
        "claude-sonnet-4-5-20250929",
    )
    assert (cost.input_tokens, cost.cached_input_tokens, cost.output_tokens) == (12, 28000, 240)
    agent.refresh_from_db()
    company = Company.objects.get(pk=agent.company_id)
    assert agent.spent_monthly_cents == company.spent_monthly_cents == 4
    state = AgentRuntimeState.objects.get(pk=agent.pk)
    assert (state.session_id, state.total_cost_cents, state.total_input_tokens) == (session, 4, 12)
    task = AgentTaskSession.objects.get(agent=agent)
    assert (task.task_key, task.session_id, task.last_run_id) == (str(issue.id), session, run.id)
    comment = IssueComment.objects.get(issue=issue)
    assert (comment.body, comment.author_agent_id, comment.created_by_run_id) == (
        SUMMARY,
        agent.id,
        run.id,
    )


@pytest.mark.timeout(120)
def test_next_run_on_the_same_task_resumes_its_session(run_logs, dispatched, supervisor, cli_state):
    agent = _cli_agent("claude", cli_state)
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    first = _work(supervisor, agent, issue)

    second = _work(supervisor, agent, issue)

    assert second.status == "succeeded"
    assert second.session_id_before == second.session_id_after == first.session_id_after
    assert [call["resume"] for call in _calls(cli_state)] == [None, first.session_id_after]
    assert second.events.get(message="run started").payload["sessionIdBefore"] == (
        first.session_id_after
    )


@pytest.mark.timeout(120)
def test_a_run_on_another_task_starts_a_fresh_session(run_logs, dispatched, supervisor, cli_state):
    agent = _cli_agent("claude", cli_state)
    first_issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    other_issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    first = _work(supervisor, agent, first_issue)

    other = _work(supervisor, agent, other_issue)

    assert other.session_id_before is None
    assert other.session_id_after not in (None, first.session_id_after)
    assert [call["resume"] for call in _calls(cli_state)] == [None, None]
    assert AgentTaskSession.objects.filter(agent=agent).count() == 2


@pytest.mark.timeout(120)
def test_agent_configured_for_one_session_resumes_it_on_every_task(
    run_logs, dispatched, supervisor, cli_state
):
    agent = _cli_agent("claude", cli_state, runtime_config={"sessionScope": "agent"})
    first = _work(supervisor, agent, make_issue(agent.company, status="todo"))

    other = _work(supervisor, agent, make_issue(agent.company, status="todo"))

    assert other.session_id_before == first.session_id_after


@pytest.mark.timeout(120)
def test_runs_without_a_task_share_the_agents_heartbeat_session(
    run_logs, dispatched, supervisor, cli_state
):
    agent = _cli_agent("claude", cli_state)
    first = _finish(supervisor, wake_agent(agent_id=agent.id, reason="heartbeat_timer").run)

    second = _finish(supervisor, wake_agent(agent_id=agent.id, reason="heartbeat_timer").run)

    assert second.session_id_before == first.session_id_after
    assert AgentTaskSession.objects.get(agent=agent).task_key == TASK_KEY_NONE


@pytest.mark.timeout(120)
def test_a_fresh_session_is_started_when_the_wake_asks_for_one(
    run_logs, dispatched, supervisor, cli_state
):
    agent = _cli_agent("claude", cli_state)
    issue = make_issue(agent.company, status="todo")
    first = _work(supervisor, agent, issue)

    fresh = _work(supervisor, agent, issue, context={"forceFreshSession": True})

    assert fresh.session_id_before is None
    assert fresh.session_id_after != first.session_id_after
    assert AgentTaskSession.objects.get(agent=agent).session_id == fresh.session_id_after


@pytest.mark.timeout(150)
@pytest.mark.parametrize("cli", ["claude", "codex"])
def test_unknown_session_fails_the_run_and_retries_once_without_it(
    run_logs, dispatched, supervisor, cli_state, cli
):
    agent = _cli_agent(cli, cli_state)
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    AgentTaskSession.objects.create(
        company_id=agent.company_id,
        agent=agent,
        adapter_type=agent.adapter_type,
        task_key=str(issue.id),
        session_id="gone-session",
    )

    failed = _work(supervisor, agent, issue)

    assert (failed.status, failed.error_code) == ("failed", "session_unknown")
    assert failed.session_id_before == "gone-session" and failed.session_id_after is None
    assert failed.error.startswith(f"{cli} could not resume session gone-session")
    assert failed.events.filter(
        message__startswith=f"{cli} could not resume session gone-session"
    ).exists()
    retry = HeartbeatRun.objects.get(retry_of_run=failed)
    assert retry.status == "queued" and str(retry.id) in dispatched
    assert retry.context_snapshot["forceFreshSession"] is True
    assert retry.context_snapshot["retryReason"] == "session_unknown"
    assert retry.events.filter(message__startswith=f"Retry of run {failed.id}").exists()
    assert not AgentTaskSession.objects.filter(session_id="gone-session").exists()
    issue.refresh_from_db()
    assert issue.execution_run_id == retry.id

    retry = _finish(supervisor, retry)

    assert retry.status == "succeeded"
    assert retry.session_id_before is None and retry.session_id_after
    assert [call["resume"] for call in _calls(cli_state)] == ["gone-session", None]
    assert AgentTaskSession.objects.get(agent=agent).session_id == retry.session_id_after
    assert HeartbeatRun.objects.filter(agent=agent).count() == 2
    assert not HeartbeatRun.objects.filter(retry_of_run=retry).exists()


@pytest.mark.timeout(120)
def test_codex_resumed_thread_is_charged_only_the_tokens_of_its_own_run(
    run_logs, dispatched, supervisor, cli_state
):
    agent = _cli_agent("codex", cli_state)
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)
    first = _work(supervisor, agent, issue)

    second = _work(supervisor, agent, issue)

    assert first.usage_json["inputTokens"] == 2400
    assert (first.usage_json["model"], first.usage_json["costUsd"]) == ("gpt-5-codex", None)
    assert second.session_id_before == first.session_id_after
    assert second.usage_json["rawInputTokens"] == 4800
    assert second.usage_json["derivedFromSessionTotals"] is True
    assert (
        second.usage_json["inputTokens"],
        second.usage_json["cachedInputTokens"],
        second.usage_json["outputTokens"],
    ) == (2400, 2000, 120)
    state = AgentRuntimeState.objects.get(pk=agent.pk)
    assert (state.total_input_tokens, state.total_output_tokens) == (4800, 240)
    assert CostEvent.objects.filter(agent=agent, cost_cents=0).count() == 2
    assert second.result_json["summary"] == "Done: the typo is fixed and the tests pass."


@pytest.mark.timeout(90)
def test_unexpected_output_lines_do_not_fail_the_run(run_logs, dispatched, supervisor, cli_state):
    agent = _cli_agent("claude", cli_state, env={"FAKE_CLI_SCENARIO": "malformed"})

    run = _work(supervisor, agent)

    assert run.status == "succeeded"
    assert run.usage_json["costCents"] == 4
    assert run.session_id_after
    assert run.result_json["malformedLines"] == 3
    skipped = run.events.get(message__contains="were not events it documents")
    assert skipped.payload["malformedLines"] == 3


@pytest.mark.timeout(90)
def test_claude_reporting_an_error_fails_the_run_with_its_words_and_still_counts_its_cost(
    run_logs, dispatched, supervisor, cli_state
):
    agent = _cli_agent("claude", cli_state, env={"FAKE_CLI_SCENARIO": "error"})
    issue = make_issue(agent.company, status="todo")

    run = _work(supervisor, agent, issue)

    assert (run.status, run.error_code) == ("failed", "adapter_failed")
    assert run.error == (
        "Claude run failed: subtype=error_max_turns: Reached the maximum number of turns "
        "(exit code 1)"
    )
    assert CostEvent.objects.get(run=run).cost_cents == 4
    assert not IssueComment.objects.filter(issue=issue).exists()
    # A failed run's session is kept: the next run on the task continues it.
    assert AgentTaskSession.objects.get(agent=agent).session_id == run.session_id_after


@pytest.mark.timeout(90)
def test_runs_of_other_companies_and_agents_keep_their_own_spend(
    run_logs, dispatched, supervisor, cli_state
):
    agent = _cli_agent("claude", cli_state, env={"FAKE_CLI_COST_USD": "0.25"})
    bystander = _cli_agent("claude", cli_state, company=make_company())

    _work(supervisor, agent)

    agent.refresh_from_db()
    bystander.refresh_from_db()
    assert agent.spent_monthly_cents == 25
    assert bystander.spent_monthly_cents == 0
    assert Company.objects.get(pk=bystander.company_id).spent_monthly_cents == 0


@pytest.mark.timeout(90)
def test_a_secret_the_agent_prints_in_its_result_reaches_neither_the_run_nor_the_comment(
    run_logs, dispatched, supervisor, cli_state
):
    agent = _cli_agent("claude", cli_state, env={"FAKE_CLI_SCENARIO": "leaky"})
    issue = make_issue(agent.company, status="todo")

    run = _work(supervisor, agent, issue)

    summary = "Called the API with ***REDACTED*** and fixed the typo."
    assert (run.status, run.result_json["summary"]) == ("succeeded", summary)
    assert IssueComment.objects.get(issue=issue).body == summary
    assert run.usage_json["costCents"] == 4
