"""The supervisor's state changes on the database alone: registration and continuous renewal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from heartbeat import process_control
from heartbeat.models import RunSupervisor
from heartbeat.services.supervision import (
    run_leases_renew,
    supervisor_register,
    supervisor_renewing_since,
)

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
