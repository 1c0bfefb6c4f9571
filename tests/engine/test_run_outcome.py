"""How a run ended, decided from its shim's exit report alone (pure: no database, no process)."""

from __future__ import annotations

import pytest

from heartbeat.services import run_outcome_from_report


def _report(**fields) -> dict:
    log = {"bytes": 10, "sha256": "ab", "stdoutExcerpt": "out", "stderrExcerpt": None}
    return {"version": 1, "exitCode": None, "signal": None, "stop": None, "log": log, **fields}


def test_exit_zero_succeeds_with_the_log_summary():
    outcome = run_outcome_from_report(_report(exitCode=0))
    assert (outcome.status, outcome.error, outcome.exit_code) == ("succeeded", None, 0)
    assert (outcome.log.log_bytes, outcome.log.stdout_excerpt) == (10, "out")


def test_nonzero_exit_fails_with_the_code():
    outcome = run_outcome_from_report(_report(exitCode=2))
    assert (outcome.status, outcome.error_code, outcome.error) == (
        "failed",
        "adapter_failed",
        "Process exited with code 2",
    )


def test_agent_killed_by_a_signal_fails_naming_it():
    outcome = run_outcome_from_report(_report(signal="SIGKILL"))
    assert (outcome.status, outcome.error, outcome.signal) == (
        "failed",
        "Process terminated by SIGKILL",
        "SIGKILL",
    )


def test_timeout_ends_timed_out_with_the_limit():
    outcome = run_outcome_from_report(_report(stop="timeout", timeoutSec=3, signal="SIGTERM"))
    assert (outcome.status, outcome.error_code, outcome.error) == (
        "timed_out",
        "timeout",
        "Timed out after 3s",
    )


def test_stop_that_no_cancel_asked_for_ends_cancelled_naming_the_shim():
    outcome = run_outcome_from_report(_report(stop="cancel", shimPid=42), host="h1")
    assert (outcome.status, outcome.error_code) == ("cancelled", "cancelled")
    assert outcome.error == "Stopped by a signal to its run monitor on h1 (shim pid 42)"


@pytest.mark.parametrize(
    ("http", "status", "error"),
    [
        ({"status": 200, "error": None}, "succeeded", None),
        ({"status": 500, "error": "HTTP 500"}, "failed", "HTTP 500"),
    ],
)
def test_http_run_ends_by_the_answer(http, status, error):
    outcome = run_outcome_from_report(_report(http=http))
    assert (outcome.status, outcome.error, outcome.result_json) == (
        status,
        error,
        {"httpStatus": http["status"]},
    )


def test_agent_that_could_not_start_fails_as_a_spawn_failure():
    outcome = run_outcome_from_report(_report(spawnError="cannot start 'x': command not found"))
    assert (outcome.status, outcome.error_code) == ("failed", "spawn_failed")


def test_shim_notes_become_the_outcomes_notes():
    outcome = run_outcome_from_report(_report(exitCode=0, notes=["agent ended; terminating 1"]))
    assert outcome.notes == ("agent ended; terminating 1",)
