"""A run's recorded process identity has one definition: the reaper, the console and cancel agree
on it, including for a row without a boot id (seeded by hand or by an old version)."""

from __future__ import annotations

import pytest

from heartbeat import selectors
from heartbeat.models import Agent, HeartbeatRun
from heartbeat.process_control import Liveness
from heartbeat.services import cancel_run, reap_orphaned_runs
from tests.factories import make_agent
from tests.polling import wait_until
from tests.recovery.builders import make_running_run
from tests.recovery.processes import WAIT_SECONDS, is_gone, is_running

pytestmark = [
    pytest.mark.process,
    pytest.mark.timeout(90),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def run_without_boot_id(processes) -> HeartbeatRun:
    """A running run whose live agent process was recorded without a boot id."""
    run = make_running_run(make_agent(status=Agent.Status.PAUSED), pid=None)
    processes.start(run)
    HeartbeatRun.objects.filter(pk=run.pk).update(process_boot_id=None)
    run.refresh_from_db()
    return run


def test_console_sees_a_live_process_recorded_without_boot_id_as_alive(run_without_boot_id):
    assert selectors.run_process_liveness(run_without_boot_id) is Liveness.ALIVE


def test_reaper_detaches_a_live_process_recorded_without_boot_id(run_without_boot_id):
    result = reap_orphaned_runs()

    assert result.detached_run_ids == [run_without_boot_id.id]
    assert is_running(run_without_boot_id.process_pid)


def test_cancel_terminates_a_process_recorded_without_boot_id(run_without_boot_id):
    cancel_run(run_without_boot_id.id)

    wait_until(
        lambda: is_gone(run_without_boot_id.process_pid),
        timeout=WAIT_SECONDS,
        message="the cancelled run's process ended",
    )
    run_without_boot_id.refresh_from_db()
    assert run_without_boot_id.status == "cancelled"
