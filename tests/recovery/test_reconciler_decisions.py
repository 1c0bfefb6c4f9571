"""Pure decisions of the reconciler: no database."""

from __future__ import annotations

import pytest

from heartbeat.services.reconciler import (
    LatestRun,
    StrandedAction,
    escalation_comment,
    failure_summary,
    stranded_decide,
)


def decide(status="todo", latest=None, **overrides) -> StrandedAction:
    facts = dict(
        issue_status=status,
        agent_invokable=True,
        agent_wakes_on_demand=True,
        latest=latest,
        recovery_limit=1,
    )
    return stranded_decide(**{**facts, **overrides})


def failed(**context) -> LatestRun:
    return LatestRun(status="failed", context=context)


def test_todo_with_failed_run_is_redispatched():
    assert decide(latest=failed()) is StrandedAction.REQUEUE_DISPATCH


def test_todo_after_failed_redispatch_is_escalated():
    assert decide(latest=failed(retryReason="assignment_recovery")) is (
        StrandedAction.ESCALATE_DISPATCH
    )


@pytest.mark.parametrize("latest", [None, LatestRun(status="succeeded", context={})])
def test_todo_without_a_failed_run_is_skipped(latest):
    assert decide(latest=latest) is StrandedAction.SKIP


def test_in_progress_is_continued_even_after_success():
    latest = LatestRun(status="succeeded", context={})
    assert decide("in_progress", latest) is StrandedAction.REQUEUE_CONTINUATION


def test_in_progress_after_failed_continuation_is_escalated():
    latest = failed(retryReason="issue_continuation_needed")
    assert decide("in_progress", latest) is StrandedAction.ESCALATE_CONTINUATION


def test_recovery_hidden_by_a_process_loss_retry_still_counts():
    latest = failed(
        retryReason="process_lost", retryReasons=["assignment_recovery", "process_lost"]
    )
    assert decide(latest=latest) is StrandedAction.ESCALATE_DISPATCH


def test_a_higher_limit_allows_more_recoveries():
    latest = failed(retryReason="assignment_recovery", strandedRecoveryAttempt=1)
    assert decide(latest=latest, recovery_limit=2) is StrandedAction.REQUEUE_DISPATCH


@pytest.mark.parametrize(
    "overrides", [{"agent_invokable": False}, {"agent_wakes_on_demand": False}]
)
def test_agent_that_cannot_be_woken_is_skipped(overrides):
    assert decide(latest=failed(), **overrides) is StrandedAction.SKIP


@pytest.mark.parametrize(
    ("code", "error", "expected"),
    [
        ("process_lost", "boom\nmore", " Latest retry failure: `process_lost` - boom."),
        ("timeout", None, " Latest retry failure: `timeout`."),
        (None, '{"type":"x","message":"quota hit"}', " Latest retry failure: quota hit."),
        (None, "", ""),
    ],
)
def test_failure_summary_follows_the_reference(code, error, expected):
    assert failure_summary(error_code=code, error=error) == expected


def test_long_failure_summary_is_truncated():
    summary = failure_summary(error_code=None, error="x" * 300)
    assert summary == " Latest retry failure: " + "x" * 237 + "...."


def test_escalation_comment_says_what_was_tried_and_who_acts():
    body = escalation_comment(
        action=StrandedAction.ESCALATE_DISPATCH,
        agent_name="coder",
        error_code="process_lost",
        error="run failed before issue advanced",
    )
    assert body.startswith("Paperclip automatically retried dispatch for this assigned `todo`")
    assert "Latest retry failure: `process_lost` - run failed before issue advanced." in body
    assert "a board member" in body and "coder" in body
