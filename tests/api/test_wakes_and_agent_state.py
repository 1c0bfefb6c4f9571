"""Wakes, agent pause/resume/terminate, run cancel and log, recovery and health routes."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from heartbeat.models import Agent, AgentWakeupRequest, HeartbeatRun
from heartbeat.run_log import run_log_path
from paperclip.models import ActivityLog
from tests.factories import make_agent, make_issue, make_run

pytestmark = pytest.mark.django_db

RUNNING = HeartbeatRun.Status.RUNNING


def test_board_wakes_an_agent_and_gets_the_queued_run(side_a):
    response = side_a.board.post(
        f"/api/agents/{side_a.agent.id}/wakeup", {"reason": "look around"}, format="json"
    )
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["wakeOutcome"]) == ("queued", "queued")
    run = HeartbeatRun.objects.get(pk=body["id"])
    assert run.context_snapshot["wakeReason"] == "look around"
    assert run.context_snapshot["triggeredBy"] == "user"
    assert ActivityLog.objects.filter(action="heartbeat.invoked", run=run).exists()


def test_agent_may_wake_itself(side_a):
    response = side_a.agent_client.post(
        f"/api/agents/{side_a.agent.id}/wakeup", {"source": "automation"}, format="json"
    )
    assert response.status_code == 202
    assert HeartbeatRun.objects.get(pk=response.json()["id"]).invocation_source == "automation"


def test_agent_cannot_wake_another_agent(side_a):
    colleague = make_agent(side_a.company)
    response = side_a.agent_client.post(f"/api/agents/{colleague.id}/wakeup", {}, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "Agent can only invoke itself"


def test_waking_a_paused_agent_answers_409(side_a):
    Agent.objects.filter(pk=side_a.agent.pk).update(status="paused")
    response = side_a.board.post(f"/api/agents/{side_a.agent.id}/wakeup", {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"] == "Agent is not invokable in its current state"


def test_wake_skipped_by_policy_answers_202_with_the_reason(side_a):
    Agent.objects.filter(pk=side_a.agent.pk).update(
        runtime_config={"heartbeat": {"wakeOnDemand": False}}
    )
    response = side_a.board.post(f"/api/agents/{side_a.agent.id}/wakeup", {}, format="json")
    assert response.status_code == 202
    assert response.json()["status"] == "skipped"
    assert response.json()["reason"] == "heartbeat.wakeOnDemand.disabled"


def test_wake_with_an_issue_payload_targets_the_issue(side_a):
    issue = make_issue(side_a.company, status="todo", assignee_agent_id=side_a.agent.id)
    response = side_a.board.post(
        f"/api/agents/{side_a.agent.id}/wakeup",
        {"payload": {"issueId": str(issue.id)}},
        format="json",
    )
    assert response.status_code == 202
    assert response.json()["contextSnapshot"]["issueId"] == str(issue.id)


def test_repeated_idempotency_key_returns_the_first_run(side_a):
    url = f"/api/agents/{side_a.agent.id}/wakeup"
    first = side_a.board.post(url, {"idempotencyKey": "k1"}, format="json")
    second = side_a.board.post(url, {"idempotencyKey": "k1"}, format="json")
    assert first.json()["id"] == second.json()["id"]
    assert AgentWakeupRequest.objects.filter(agent=side_a.agent).count() == 1


def test_invoke_is_a_manual_on_demand_wake(side_a):
    response = side_a.board.post(f"/api/agents/{side_a.agent.id}/heartbeat/invoke")
    assert response.status_code == 202
    run = HeartbeatRun.objects.get(pk=response.json()["id"])
    assert (run.invocation_source, run.trigger_detail) == ("on_demand", "manual")


def test_pause_cancels_the_agents_active_runs(side_a):
    running = make_run(side_a.agent, status=RUNNING)
    queued = make_run(side_a.agent)
    finished = make_run(side_a.agent, status=HeartbeatRun.Status.SUCCEEDED)
    response = side_a.board.post(
        f"/api/agents/{side_a.agent.id}/pause", {"reason": "budget"}, format="json"
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["status"], body["pauseReason"]) == (
        str(side_a.agent.id),
        "paused",
        "budget",
    )
    statuses = dict(HeartbeatRun.objects.values_list("id", "status"))
    assert statuses == {running.id: "cancelled", queued.id: "cancelled", finished.id: "succeeded"}
    assert HeartbeatRun.objects.get(pk=running.pk).error == "Cancelled due to agent pause"


def test_resume_makes_a_paused_agent_idle(side_a):
    Agent.objects.filter(pk=side_a.agent.pk).update(status="paused", pause_reason="x")
    response = side_a.board.post(f"/api/agents/{side_a.agent.id}/resume")
    assert response.status_code == 200
    assert response.json()["status"] == "idle"
    assert response.json()["pauseReason"] is None


def test_resume_of_an_agent_that_is_not_paused_answers_409(side_a):
    response = side_a.board.post(f"/api/agents/{side_a.agent.id}/resume")
    assert response.status_code == 409


def test_terminate_cancels_runs_and_voids_the_agents_keys(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    response = side_a.board.post(f"/api/agents/{side_a.agent.id}/terminate")
    assert response.status_code == 200
    assert response.json()["status"] == "terminated"
    assert HeartbeatRun.objects.get(pk=run.pk).status == "cancelled"
    assert side_a.agent_client.get("/api/agents/me").status_code == 401


def test_agents_cannot_pause_agents(side_a):
    response = side_a.agent_client.post(f"/api/agents/{side_a.agent.id}/pause", {}, format="json")
    assert response.status_code == 403
    assert Agent.objects.get(pk=side_a.agent.pk).status == "idle"


def test_board_cancels_a_run(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    response = side_a.board.post(f"/api/heartbeat-runs/{run.id}/cancel")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["errorCode"]) == ("cancelled", "cancelled")
    assert ActivityLog.objects.filter(action="heartbeat.cancelled", run=run).exists()


def test_cancelling_a_finished_run_logs_no_cancel(side_a):
    run = make_run(side_a.agent, status="succeeded")
    response = side_a.board.post(f"/api/heartbeat-runs/{run.id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert not ActivityLog.objects.filter(action="heartbeat.cancelled").exists()


def test_board_retries_a_failed_run_now(side_a):
    issue = make_issue(side_a.company, status="todo", assignee_agent_id=side_a.agent.id)
    lost = make_run(
        side_a.agent,
        status="failed",
        error_code="process_lost",
        context_snapshot={"issueId": str(issue.id)},
    )
    response = side_a.board.post(f"/api/heartbeat-runs/{lost.id}/retry")
    assert response.status_code == 202
    retry = HeartbeatRun.objects.get(pk=response.json()["id"])
    assert retry.status == "queued"
    assert retry.context_snapshot["retryOfRunId"] == str(lost.id)
    assert ActivityLog.objects.filter(action="heartbeat.invoked", run=retry).exists()


def test_retrying_a_running_run_is_a_conflict(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    response = side_a.board.post(f"/api/heartbeat-runs/{run.id}/retry")
    assert response.status_code == 409
    assert response.json()["error"] == "Run is still running: cancel it first to retry"
    assert HeartbeatRun.objects.count() == 1


def test_agents_cannot_retry_runs(side_a):
    run = make_run(side_a.agent, status="failed")
    response = side_a.agent_client.post(f"/api/heartbeat-runs/{run.id}/retry")
    assert response.status_code == 403
    assert HeartbeatRun.objects.count() == 1


def test_agents_cannot_cancel_runs(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    assert side_a.agent_client.post(f"/api/heartbeat-runs/{run.id}/cancel").status_code == 403
    assert HeartbeatRun.objects.get(pk=run.pk).status == "running"


def test_run_log_is_read_by_byte_range(side_a, tmp_path):
    with override_settings(PAPERCLIP_HEARTBEAT={"run_log_dir": str(tmp_path)}):
        run = make_run(side_a.agent, log_store="local_file", log_ref="c/a/r.ndjson")
        path = run_log_path(run.log_ref)
        path.parent.mkdir(parents=True)
        lines = [json.dumps({"stream": "stdout", "chunk": f"line {n}"}) + "\n" for n in range(3)]
        path.write_text("".join(lines))
        url = f"/api/heartbeat-runs/{run.id}/log"
        first = side_a.board.get(url, {"limitBytes": len(lines[0])}).json()
        rest = side_a.board.get(url, {"offset": first["nextOffset"]}).json()
    assert first["content"] == lines[0]
    assert first["nextOffset"] == len(lines[0])
    assert rest["content"] == "".join(lines[1:])
    assert rest["nextOffset"] is None


def test_run_log_of_a_run_without_a_log_is_empty(side_a):
    run = make_run(side_a.agent)
    body = side_a.board.get(f"/api/heartbeat-runs/{run.id}/log").json()
    assert (body["content"], body["nextOffset"], body["logRef"]) == ("", None, None)


def test_recovery_reap_dry_run_for_instance_admins(admin_client, side_a):
    orphan = make_run(side_a.agent, status=RUNNING)
    response = admin_client.post("/api/recovery/reap", {"dryRun": True}, format="json")
    assert response.status_code == 200
    assert response.json()["dryRun"] is True
    assert str(orphan.id) in response.json()["runIds"]
    assert HeartbeatRun.objects.get(pk=orphan.pk).status == "running"


def test_recovery_is_refused_to_company_board_members(side_a):
    response = side_a.board.post("/api/recovery/reap", {}, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "Instance admin access required"


def test_recovery_reconcile_dry_run_reports_a_stranded_issue_and_changes_nothing(
    admin_client, side_a
):
    stranded = make_issue(side_a.company, status="todo", assignee_agent_id=side_a.agent.id)
    make_run(
        side_a.agent,
        status=HeartbeatRun.Status.FAILED,
        context_snapshot={"issueId": str(stranded.id)},
    )
    response = admin_client.post("/api/recovery/reconcile", {"dryRun": True}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["dryRun"] is True
    assert str(stranded.id) in body["issueIds"]
    assert HeartbeatRun.objects.filter(status="queued").count() == 0


def test_recovery_reconcile_is_refused_to_agents(side_a):
    response = side_a.agent_client.post("/api/recovery/reconcile", {}, format="json")
    assert response.status_code == 403
