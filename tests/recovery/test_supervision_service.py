"""The supervisor's state changes on the database alone: registration and continuous renewal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from heartbeat import process_control
from heartbeat.models import RunSupervisor
from heartbeat.services.supervision import (
    HostRun,
    run_leases_renew,
    runs_adopt,
    supervisor_register,
    supervisor_renewing_since,
)
from tests.factories import make_agent
from tests.recovery.builders import make_running_run

pytestmark = pytest.mark.django_db


def test_renewals_without_a_gap_keep_the_supervisors_renewing_since():
    identity = process_control.self_identity()
    start = timezone.now()
    supervisor_register(identity=identity, now=start)

    run_leases_renew(owner=identity, watching=3, now=start + timedelta(seconds=15))

    row = RunSupervisor.objects.get(host=identity.host)
    assert (row.renewing_since, row.runs_watched) == (start, 3)
    assert row.renewed_at == start + timedelta(seconds=15)


def test_renewal_after_a_gap_starts_the_continuous_renewal_again():
    identity = process_control.self_identity()
    start = timezone.now()
    supervisor_register(identity=identity, now=start)

    # The database was away for a minute and a half.
    back = start + timedelta(seconds=100)
    run_leases_renew(owner=identity, watching=0, now=back)

    assert supervisor_renewing_since(host=identity.host) == back


def test_a_stopped_supervisor_gives_no_renewal_evidence():
    identity = process_control.self_identity()
    supervisor_register(identity=identity)
    RunSupervisor.objects.update(stopped_at=timezone.now())

    assert supervisor_renewing_since(host=identity.host) is None


def test_run_marked_detached_during_an_outage_is_watched_again_saying_why():
    identity = process_control.self_identity()
    agent = make_agent()
    run = make_running_run(agent, owner="self", error_code="process_detached", error="detached")
    host_run = HostRun(
        run_id=run.id,
        company_id=run.company_id,
        agent_id=run.agent_id,
        log_ref=None,
        shim=None,
        owner_pid=identity.pid,
        owner_started_at=identity.started_at,
        owner_since=timezone.now(),
        error_code="process_detached",
    )

    adopted = runs_adopt(
        runs=[host_run], owner=identity, outage_note="the database was unreachable for 95 s"
    )

    assert adopted == [run.id]
    run.refresh_from_db()
    assert (run.error_code, run.error, run.detached_at) == (None, None, None)
    event = run.events.order_by("-seq").first()
    assert event.message == (
        f"Watched again by the run supervisor pid {identity.pid} on host {identity.host} "
        "(the database was unreachable for 95 s). The agent kept running under its monitor."
    )
