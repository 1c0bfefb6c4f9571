"""One judgement of the django-q2 cluster's health: the dashboard and /api/health agree."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from heartbeat.models import SweepKind, SweepRecord

pytestmark = pytest.mark.django_db

FRAGMENT = reverse("heartbeat-dashboard-fragment")


def _sweeps_finished(ago: timedelta) -> None:
    finished = timezone.now() - ago
    for kind in SweepKind.values:
        SweepRecord.objects.create(
            kind=kind,
            host="h1",
            started_at=finished,
            finished_at=finished,
            duration_ms=3,
            result={},
        )


def _task_waiting(ago: timedelta) -> None:
    OrmQ.objects.create(key="paperclip", payload="task", lock=timezone.now() - ago)


def _recent_sweeps() -> None:
    _sweeps_finished(timedelta(seconds=5))


def _recent_sweeps_and_a_task_waiting_five_minutes() -> None:
    _sweeps_finished(timedelta(seconds=5))
    _task_waiting(timedelta(minutes=5))


def _recent_sweeps_and_a_task_just_queued() -> None:
    _sweeps_finished(timedelta(seconds=5))
    _task_waiting(timedelta(seconds=1))


def _sweeps_overdue_and_nothing_queued() -> None:
    _sweeps_finished(timedelta(minutes=30))


CASES = {
    "recent sweeps": (_recent_sweeps, False),
    "a task waiting five minutes": (_recent_sweeps_and_a_task_waiting_five_minutes, True),
    "a task just queued": (_recent_sweeps_and_a_task_just_queued, False),
    "every sweep overdue": (_sweeps_overdue_and_nothing_queued, True),
}


@pytest.mark.parametrize("case", CASES)
def test_dashboard_and_health_endpoint_agree_whether_the_cluster_is_down(
    case, client, admin_client
):
    arrange, down = CASES[case]
    arrange()
    page = admin_client.get(FRAGMENT).content.decode()
    health = client.get("/api/health").json()
    assert ('id="pc-cluster-down"' in page) is down
    assert health["cluster"]["ok"] is not down


def test_dashboard_says_how_long_the_oldest_task_has_waited(admin_client):
    _recent_sweeps_and_a_task_waiting_five_minutes()
    page = admin_client.get(FRAGMENT).content.decode()
    assert "the oldest queued task has waited 5m" in page
