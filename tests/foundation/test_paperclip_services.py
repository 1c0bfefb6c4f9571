"""The core app's own writers: the company's issue counter and the activity log (single rows
and a sweep's batch share one statement and one redaction rule)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from paperclip.models import ActivityLog, Company
from paperclip.services import (
    ActivityRow,
    activity_log_record,
    activity_log_record_many,
    company_issue_number_next,
)
from tests.factories import make_agent, make_company

pytestmark = pytest.mark.django_db


def test_issue_number_next_counts_up_and_returns_the_prefix():
    company = make_company(issue_prefix="NUM")

    taken = [company_issue_number_next(company_id=company.id) for _ in range(3)]

    assert taken == [(1, "NUM"), (2, "NUM"), (3, "NUM")]
    company.refresh_from_db()
    assert company.issue_counter == 3


def test_issue_number_taken_in_a_rolled_back_transaction_is_given_again():
    company = make_company(issue_prefix="RBK")
    with pytest.raises(RuntimeError), transaction.atomic():
        company_issue_number_next(company_id=company.id)
        raise RuntimeError("creation failed")

    assert company_issue_number_next(company_id=company.id) == (1, "RBK")


def test_issue_number_of_a_missing_company_raises_does_not_exist():
    with pytest.raises(Company.DoesNotExist):
        company_issue_number_next(company_id=uuid.uuid4())


def test_activity_batch_writes_every_row_in_one_statement(django_assert_num_queries):
    agent = make_agent()
    now = timezone.now() - timedelta(minutes=5)
    rows = [
        ActivityRow(
            company_id=agent.company_id,
            action=f"heartbeat.batch_{n}",
            entity_type="heartbeat_run",
            entity_id=agent.id,
            agent_id=agent.id,
            details={"n": n},
            actor_id="reaper",
        )
        for n in range(3)
    ]

    with django_assert_num_queries(1):
        activity_log_record_many(rows=rows, now=now)

    written = ActivityLog.objects.filter(company_id=agent.company_id).order_by("action")
    assert [(a.action, a.actor_type, a.actor_id, a.details) for a in written] == [
        (f"heartbeat.batch_{n}", "system", "reaper", {"n": n}) for n in range(3)
    ]
    assert {a.created_at for a in written} == {now}
    assert {a.entity_id for a in written} == {str(agent.id)}


def test_activity_batch_of_no_rows_writes_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        activity_log_record_many(rows=[], now=timezone.now())


def test_activity_record_returns_the_row_as_stored():
    agent = make_agent()

    returned = activity_log_record(
        company_id=agent.company_id,
        action="agent.updated",
        entity_type="agent",
        entity_id=agent.id,
        actor_type=ActivityLog.ActorType.USER,
        actor_id="7",
        agent_id=agent.id,
        details={"token": "plain", "name": "x"},
    )

    stored = ActivityLog.objects.get(pk=returned.pk)
    fields = ("company_id", "actor_type", "actor_id", "action", "entity_type", "entity_id")
    assert [getattr(returned, f) for f in fields] == [getattr(stored, f) for f in fields]
    assert (returned.agent_id, returned.run_id) == (stored.agent_id, stored.run_id)
    assert returned.details == stored.details == {"token": "***REDACTED***", "name": "x"}
    assert returned.created_at == stored.created_at


def test_activity_record_without_details_stores_null():
    company = make_company()

    activity_log_record(
        company_id=company.id, action="company.touched", entity_type="company", entity_id=company.id
    )

    assert ActivityLog.objects.get(action="company.touched").details is None
