"""Heartbeat runs: detail, events, company lists, live runs, runs of an issue."""

from __future__ import annotations

import pytest

from heartbeat.models import HeartbeatRun, HeartbeatRunEvent
from issues.models import Issue
from tests.factories import make_agent, make_issue, make_run

pytestmark = pytest.mark.django_db

RUNNING = HeartbeatRun.Status.RUNNING


def add_event(run: HeartbeatRun, seq: int) -> None:
    HeartbeatRunEvent.objects.create(
        company_id=run.company_id,
        run=run,
        agent_id=run.agent_id,
        seq=seq,
        event_type="lifecycle",
        message=f"event {seq}",
    )


def test_run_detail_uses_camel_case(side_a):
    run = make_run(side_a.agent, status=RUNNING, context_snapshot={"issueId": "x"}, process_pid=42)
    response = side_a.board.get(f"/api/heartbeat-runs/{run.id}")
    assert response.status_code == 200
    body = response.json()
    assert (body["agentId"], body["processPid"]) == (str(side_a.agent.id), 42)
    assert body["contextSnapshot"] == {"issueId": "x"}


def test_run_events_after_a_sequence_number_with_a_limit(side_a):
    run = make_run(side_a.agent)
    for seq in range(1, 6):
        add_event(run, seq)
    response = side_a.agent_client.get(
        f"/api/heartbeat-runs/{run.id}/events", {"afterSeq": 2, "limit": 2}
    )
    assert response.status_code == 200
    assert [e["seq"] for e in response.json()] == [3, 4]


def test_run_events_limit_out_of_range_answers_400(side_a):
    run = make_run(side_a.agent)
    response = side_a.board.get(f"/api/heartbeat-runs/{run.id}/events", {"limit": 5000})
    assert response.status_code == 400
    assert "limit" in response.json()["details"]


def test_company_runs_filter_by_agent_and_status(side_a):
    other = make_agent(side_a.company)
    wanted = make_run(side_a.agent, status=HeartbeatRun.Status.FAILED)
    make_run(side_a.agent, status=RUNNING)
    make_run(other, status=HeartbeatRun.Status.FAILED)
    response = side_a.board.get(
        f"/api/companies/{side_a.company.id}/heartbeat-runs",
        {"agentId": str(side_a.agent.id), "status": "failed,timed_out"},
    )
    assert response.status_code == 200
    assert [r["id"] for r in response.json()] == [str(wanted.id)]


def test_company_runs_are_newest_first(side_a):
    older = make_run(side_a.agent, status=HeartbeatRun.Status.SUCCEEDED)
    newer = make_run(side_a.agent, status=HeartbeatRun.Status.SUCCEEDED)
    response = side_a.board.get(f"/api/companies/{side_a.company.id}/heartbeat-runs")
    assert [r["id"] for r in response.json()] == [str(newer.id), str(older.id)]


def test_live_runs_show_active_runs_with_agent_names_padded_to_min_count(side_a):
    finished = make_run(side_a.agent, status=HeartbeatRun.Status.SUCCEEDED)
    live = make_run(side_a.agent, status=RUNNING)
    url = f"/api/companies/{side_a.company.id}/live-runs"
    assert [r["id"] for r in side_a.board.get(url).json()] == [str(live.id)]
    padded = side_a.board.get(url, {"minCount": 2}).json()
    assert [r["id"] for r in padded] == [str(live.id), str(finished.id)]
    assert padded[0]["agentName"] == side_a.agent.name


def test_issue_runs_and_live_runs(side_a):
    issue = make_issue(side_a.company, status="todo")
    done = make_run(
        side_a.agent,
        status=HeartbeatRun.Status.SUCCEEDED,
        context_snapshot={"issueId": str(issue.id)},
    )
    live = make_run(side_a.agent, status=RUNNING, context_snapshot={"issueId": str(issue.id)})
    make_run(side_a.agent, status=RUNNING)
    runs = side_a.board.get(f"/api/issues/{issue.id}/runs").json()
    assert [r["id"] for r in runs] == [str(live.id), str(done.id)]
    assert runs[0]["issueId"] == str(issue.id)
    live_runs = side_a.board.get(f"/api/issues/{issue.identifier}/live-runs").json()
    assert [r["id"] for r in live_runs] == [str(live.id)]


def test_active_run_is_the_execution_lock_when_active(side_a):
    issue = make_issue(side_a.company, status="todo")
    run = make_run(side_a.agent, status=RUNNING, context_snapshot={"issueId": str(issue.id)})
    Issue.objects.filter(pk=issue.pk).update(execution_run=run)
    response = side_a.agent_client.get(f"/api/issues/{issue.id}/active-run")
    assert response.status_code == 200
    assert response.json()["id"] == str(run.id)


def test_active_run_falls_back_to_the_assignees_running_run(side_a):
    issue = make_issue(side_a.company, status="in_progress", assignee_agent_id=side_a.agent.id)
    run = make_run(side_a.agent, status=RUNNING, context_snapshot={"issueId": str(issue.id)})
    response = side_a.board.get(f"/api/issues/{issue.id}/active-run")
    assert response.json()["id"] == str(run.id)


def test_active_run_is_null_when_nothing_runs(side_a):
    issue = make_issue(side_a.company, status="todo")
    finished = make_run(side_a.agent, status=HeartbeatRun.Status.FAILED)
    Issue.objects.filter(pk=issue.pk).update(execution_run=finished)
    response = side_a.board.get(f"/api/issues/{issue.id}/active-run")
    assert response.status_code == 200
    assert response.json() is None
