"""Pure decisions of the reaper: no database, no processes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from heartbeat.process_control import Liveness
from heartbeat.services.reaper import (
    LossCause,
    ReapDecision,
    ReapVerdict,
    reap_decide,
    reap_message,
    retry_context,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
GRACE = 1800.0


def decide(**overrides) -> ReapDecision:
    facts = dict(
        liveness=Liveness.DEAD,
        leftovers=False,
        detached_at=None,
        has_process_record=True,
        retries_used=0,
        retry_limit=1,
        issue_closed=False,
        now=NOW,
        detached_grace_sec=GRACE,
    )
    return reap_decide(**{**facts, **overrides})


def test_live_process_on_first_sight_is_detached_not_killed():
    assert decide(liveness=Liveness.ALIVE) == ReapDecision(ReapVerdict.DETACHED)


def test_detached_process_within_grace_is_only_watched():
    decision = decide(liveness=Liveness.ALIVE, detached_at=NOW - timedelta(seconds=GRACE - 1))
    assert decision == ReapDecision(ReapVerdict.WATCHED)


def test_detached_process_silent_past_grace_is_terminated_and_lost():
    decision = decide(liveness=Liveness.ALIVE, detached_at=NOW - timedelta(seconds=GRACE))
    assert decision.verdict is ReapVerdict.LOST
    assert decision.cause is LossCause.DETACHED_SILENT
    assert decision.terminate


@pytest.mark.parametrize(
    ("liveness", "cause"),
    [
        (Liveness.DEAD, LossCause.PROCESS_DEAD),
        (Liveness.ZOMBIE, LossCause.PROCESS_ZOMBIE),
        (Liveness.REUSED, LossCause.PID_REUSED),
        (Liveness.REBOOTED, LossCause.HOST_REBOOTED),
        (Liveness.OTHER_HOST, LossCause.LEASE_EXPIRED),
        (None, LossCause.NO_PROCESS),
    ],
)
def test_every_non_alive_probe_is_lost(liveness, cause):
    decision = decide(liveness=liveness)
    assert (decision.verdict, decision.cause) == (ReapVerdict.LOST, cause)


def test_detached_process_that_exited_is_lost_with_unknown_exit_status():
    decision = decide(liveness=Liveness.ZOMBIE, detached_at=NOW - timedelta(minutes=1))
    assert decision.cause is LossCause.DETACHED_EXITED


def test_leftovers_are_terminated_on_this_host():
    assert decide(liveness=Liveness.DEAD, leftovers=True).terminate


@pytest.mark.parametrize("liveness", [Liveness.REBOOTED, Liveness.OTHER_HOST])
def test_nothing_is_signalled_after_a_reboot_or_on_another_host(liveness):
    assert not decide(liveness=liveness, leftovers=True).terminate


def test_one_retry_per_lineage():
    assert decide(retries_used=0).retry
    assert not decide(retries_used=1).retry


def test_no_retry_without_a_recorded_process():
    assert not decide(liveness=None, has_process_record=False).retry


def test_no_retry_for_a_done_or_cancelled_issue():
    assert not decide(issue_closed=True).retry


def test_dead_pid_message_matches_the_reference():
    message = reap_message(decide(), pid=4242, pgid=None, owner_host="h", detached_grace_sec=GRACE)
    assert message == "Process lost -- child pid 4242 is no longer running; retrying once"


def test_descendant_cleanup_message_names_the_group():
    message = reap_message(
        decide(leftovers=True, retries_used=1),
        pid=4242,
        pgid=4242,
        owner_host="h",
        detached_grace_sec=GRACE,
    )
    assert message == (
        "Process lost -- parent pid 4242 exited, but descendant process group 4242 was still "
        "alive and was terminated"
    )


def test_detached_message_names_the_pid():
    message = reap_message(
        decide(liveness=Liveness.ALIVE), pid=77, pgid=77, owner_host="h", detached_grace_sec=GRACE
    )
    assert "child pid 77 is still alive" in message


def test_no_process_message_matches_the_reference():
    message = reap_message(
        decide(liveness=None, has_process_record=False),
        pid=None,
        pgid=None,
        owner_host=None,
        detached_grace_sec=GRACE,
    )
    assert message == "Process lost -- server may have restarted"


def test_retry_context_keeps_earlier_retry_reasons():
    context = retry_context(
        {"issueId": "i", "retryReason": "issue_continuation_needed", "wakeReason": "x"},
        lost_run_id="00000000-0000-0000-0000-000000000001",
    )
    assert context == {
        "issueId": "i",
        "retryOfRunId": "00000000-0000-0000-0000-000000000001",
        "wakeReason": "process_lost_retry",
        "retryReason": "process_lost",
        "retryReasons": ["issue_continuation_needed", "process_lost"],
    }
