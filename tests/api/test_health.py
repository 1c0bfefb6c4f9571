"""/api/health: ok or not per component for anyone, the details for board members only."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from heartbeat.models import SweepRecord

pytestmark = pytest.mark.django_db

SUMMARY_KEYS = {"status", "database", "cluster", "sweeps"}


def test_health_without_credentials_says_only_ok_or_not_per_component(anonymous):
    response = anonymous.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == SUMMARY_KEYS
    assert body["database"] == {"ok": True}
    assert set(body["cluster"]) == {"ok"}
    assert body["sweeps"] == {"reap": {"ok": False}, "reconcile": {"ok": False}}
    assert body["status"] == "degraded"


def test_health_for_an_agent_says_only_ok_or_not_per_component(side_a):
    body = side_a.agent_client.get("/api/health").json()
    assert set(body) == SUMMARY_KEYS
    assert set(body["cluster"]) == {"ok"}


def test_health_for_a_board_member_has_the_details(side_a):
    now = timezone.now()
    SweepRecord.objects.create(
        kind="reap", host="h1", started_at=now, finished_at=now, duration_ms=4, result={}
    )
    body = side_a.board.get("/api/health").json()
    assert body["database"] == {"ok": True, "error": None}
    assert {"queuedTasks", "oldestQueuedTaskAgeSec"} <= set(body["cluster"])
    assert body["sweeps"]["reap"]["ok"] is True
    assert body["sweeps"]["reap"]["durationMs"] == 4
    assert body["sweeps"]["reconcile"]["overdue"] is True


def test_failed_last_sweep_is_not_ok(anonymous):
    now = timezone.now()
    SweepRecord.objects.create(
        kind="reap",
        host="h1",
        started_at=now,
        finished_at=now,
        duration_ms=4,
        result={},
        error="OperationalError: could not connect to server on socket /tmp/.s.PGSQL.5432",
    )
    body = anonymous.get("/api/health").json()
    assert body["sweeps"]["reap"] == {"ok": False}
    assert "socket" not in str(body)


@pytest.mark.django_db(transaction=True)
def test_health_hides_the_database_error_text_when_the_database_is_down(anonymous):
    database = connection.settings_dict["NAME"]
    connection.close()
    connection.settings_dict["NAME"] = "paperclip_no_such_database"
    try:
        response = anonymous.get("/api/health")
    finally:
        connection.close()
        connection.settings_dict["NAME"] = database
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": {"ok": False}}


def test_health_with_a_wrong_credential_answers_401(anonymous):
    response = anonymous.get("/api/health", HTTP_AUTHORIZATION="Bearer pcak_wrong")
    assert response.status_code == 401
    assert set(response.json()) == {"error", "details"}
