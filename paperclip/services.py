"""State changes of the core app: companies and the activity log."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache, partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from paperclip.credentials import secret_generate
from paperclip.models import (
    BUDGET_PAUSE_REASON,
    ActivityLog,
    AuthFailureCounter,
    BoardApiToken,
    Company,
    CompanyMembership,
    spend_month_of,
    spend_under_budget,
)
from paperclip.rows import json_rows, sql_execute
from paperclip.signals import company_resumed

_SECRET_KEY_PATTERN = re.compile(r"(api[-_]?key|token|secret|password|authorization)", re.I)
# Redactors of the text in activity details, installed by the apps that define them (heartbeat
# installs the run log's: its credential patterns live in the stdlib-only run shim, and this app
# must not import heartbeat).
_text_redactors: list[Callable[[str], str]] = []


def activity_text_redactor_register(redactor: Callable[[str], str]) -> None:
    if redactor not in _text_redactors:
        _text_redactors.append(redactor)


@lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    # Cached: a sweep redacts the same few keys thousands of times.
    return _SECRET_KEY_PATTERN.search(key) is not None


def activity_details_redacted(details: Any) -> Any:
    """Activity details are shown to every board member and to the company's agents: values
    under secret-looking keys and credential-shaped text never reach them."""
    if isinstance(details, dict):
        return {
            key: "***REDACTED***" if _is_secret_key(str(key)) else activity_details_redacted(value)
            for key, value in details.items()
        }
    if isinstance(details, list):
        return [activity_details_redacted(item) for item in details]
    if isinstance(details, str):
        for redactor in _text_redactors:
            details = redactor(details)
    return details


@dataclass(frozen=True)
class ActivityRow:
    """One activity-log row to record; details are redacted on the way in."""

    company_id: uuid.UUID | str
    action: str
    entity_type: str
    entity_id: uuid.UUID | str
    agent_id: uuid.UUID | str | None = None
    run_id: uuid.UUID | str | None = None
    details: dict | None = None
    actor_type: str = ActivityLog.ActorType.SYSTEM
    actor_id: str = "system"


_ACTIVITY_INSERT = f"""
INSERT INTO "{ActivityLog._meta.db_table}" (
    id, company_id, actor_type, actor_id, action, entity_type, entity_id, agent_id, run_id,
    details, created_at)
SELECT v.id, v.company_id, v.actor_type, v.actor_id, v.action, v.entity_type, v.entity_id,
    v.agent_id, v.run_id, v.details, %(now)s
FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(id uuid, company_id uuid, actor_type text,
    actor_id text, action text, entity_type text, entity_id text, agent_id uuid, run_id uuid,
    details jsonb)
"""


def activity_log_record_many(*, rows: Sequence[ActivityRow], now: datetime) -> None:
    """Record activity rows in one statement (a sweep's batch, or one row of a request)."""
    if rows:
        _activity_rows_insert([_activity_values(row) for row in rows], now=now)


def activity_log_record(
    *,
    company_id: uuid.UUID | str,
    action: str,
    entity_type: str,
    entity_id: uuid.UUID | str,
    actor_type: str = ActivityLog.ActorType.SYSTEM,
    actor_id: str = "system",
    agent_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    details: dict | None = None,
) -> ActivityLog:
    """Record one activity row, through the batch's statement and redaction, and return it."""
    row = ActivityRow(
        company_id=company_id,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        agent_id=agent_id,
        run_id=run_id,
        details=details,
        actor_type=actor_type,
        actor_id=actor_id,
    )
    values = _activity_values(row)
    now = timezone.now()
    _activity_rows_insert([values], now=now)
    activity = ActivityLog(**{**values, "entity_id": str(entity_id), "created_at": now})
    activity._state.adding = False
    activity._state.db = connection.alias
    return activity


def _activity_values(row: ActivityRow) -> dict:
    """The row's columns with a new id and its details redacted (the one redaction rule of
    every activity row, single or batch)."""
    details = row.details
    if details is not None:
        details = activity_details_redacted(details)
    return {**vars(row), "id": uuid.uuid4(), "details": details}


def _activity_rows_insert(values: list[dict], *, now: datetime) -> None:
    # Every write of the API records one, and a sweep thousands: one fixed statement for both,
    # its per-row values one JSON document (see paperclip.rows).
    sql_execute(_ACTIVITY_INSERT, {"now": now, "rows": json_rows(values)})


def company_create(
    *,
    name: str,
    issue_prefix: str,
    description: str | None = None,
    require_board_approval_for_new_agents: bool = True,
    creator_user_id: int | None = None,
) -> Company:
    """A new company; its creator (when given) becomes the board's owner."""
    with transaction.atomic():
        company = Company.objects.create(
            name=name,
            issue_prefix=issue_prefix.strip().upper(),
            description=description,
            require_board_approval_for_new_agents=require_board_approval_for_new_agents,
        )
        activity_log_record(
            company_id=company.id,
            action="company.created",
            entity_type="company",
            entity_id=company.id,
            details={"name": name, "issuePrefix": company.issue_prefix},
        )
        if creator_user_id is not None:
            CompanyMembership.objects.create(
                company=company, user_id=creator_user_id, role=CompanyMembership.Role.OWNER
            )
    return company


def company_issue_number_next(*, company_id: uuid.UUID | str) -> tuple[int, str]:
    """Take the company's next issue number, with its issue prefix, in the caller's transaction.

    The row lock taken by UPDATE serialises concurrent creators, and a rolled-back creation
    rolls its increment back too, so numbers are unique and gapless.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{Company._meta.db_table}" SET issue_counter = issue_counter + 1 '
            "WHERE id = %s RETURNING issue_counter, issue_prefix",
            [company_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise Company.DoesNotExist(f"company {company_id} not found")
    return row[0], row[1]


class CompanyBudgetSpent(Exception):
    """The company cannot be set active: its monthly budget is spent (the API answers 409)."""

    def __init__(self, message: str, details: dict) -> None:
        super().__init__(message)
        self.details = details


def company_update(
    *, company: Company, changes: dict[str, Any], actor_type: str, actor_id: str
) -> Company:
    """Change a company's editable fields (keys are model field names); pausing stamps
    paused_at, and leaving paused clears it with the reason.

    The budget holds across edits: raising (or removing) the budget of a company paused for it
    resumes the company, lowering it to the month's spend pauses it, and a company whose budget
    is spent cannot be set active (CompanyBudgetSpent).
    """
    now = timezone.now()
    month = spend_month_of(now)
    with transaction.atomic():
        company = Company.objects.select_for_update().get(pk=company.pk)
        was_paused = company.status == Company.Status.PAUSED
        was_budget_paused = company.is_budget_paused
        for field, value in changes.items():
            setattr(company, field, value)
        reached = company.budget_reached(month)
        if reached and changes.get("status") == Company.Status.ACTIVE:
            raise CompanyBudgetSpent(
                "The company's monthly budget is spent: raise budgetMonthlyCents above the "
                "month's spend to make it active",
                _budget_details(company, month),
            )
        budget_change = None
        if "status" not in changes and "budget_monthly_cents" in changes:
            if was_budget_paused and not reached:
                company.status = Company.Status.ACTIVE
                budget_change = "budget.resumed"
            elif reached and company.status == Company.Status.ACTIVE:
                company.status = Company.Status.PAUSED
                company.pause_reason = BUDGET_PAUSE_REASON
                budget_change = "budget.exceeded"
        if company.status == Company.Status.PAUSED and company.paused_at is None:
            company.paused_at = now
        elif company.status != Company.Status.PAUSED:
            company.paused_at = None
            company.pause_reason = None
        company.save()
        activity_log_record(
            company_id=company.id,
            action="company.updated",
            entity_type="company",
            entity_id=company.id,
            actor_type=actor_type,
            actor_id=actor_id,
            details={"changes": sorted(changes)},
        )
        if budget_change is not None:
            _budget_activity(company, month, action=budget_change, cause="budget_changed")
        if was_paused and company.status != Company.Status.PAUSED:
            transaction.on_commit(
                partial(company_resumed.send_robust, sender=Company, company_id=company.id)
            )
    return company


def _budget_details(company: Company, month: date) -> dict:
    return {
        "scopeType": "company",
        "scopeId": str(company.id),
        "spentMonthlyCents": company.monthly_spend_cents(month),
        "budgetMonthlyCents": company.budget_monthly_cents,
        "month": month.isoformat(),
    }


def _budget_activity(
    company: Company, month: date, *, action: str, cause: str, run_id: uuid.UUID | None = None
) -> None:
    activity_log_record(
        company_id=company.id,
        action=action,
        entity_type="company",
        entity_id=company.id,
        run_id=run_id,
        details={**_budget_details(company, month), "cause": cause},
    )


def spend_increment_sql(table: str) -> str:
    """One UPDATE adding %(cents)s to a row's spend of %(month)s, returning the new spend, the
    budget and the spend's month (the agent's and the company's spend share this rule).

    The row lock makes concurrent increments exact. A cost of a later month than the row's
    starts that month from it; a cost of an earlier month (a run finalized late) is kept in the
    cost records but no longer counts in the row's month.
    """
    return f"""
    UPDATE {table} SET
        spent_monthly_cents = CASE
            WHEN spend_month = %(month)s THEN spent_monthly_cents + %(cents)s
            WHEN spend_month IS NULL OR spend_month < %(month)s THEN %(cents)s
            ELSE spent_monthly_cents END,
        spend_month = GREATEST(COALESCE(spend_month, %(month)s), %(month)s),
        updated_at = %(now)s
    WHERE id = %(id)s
    RETURNING spent_monthly_cents, budget_monthly_cents, spend_month
    """


_COMPANY_SPEND_INCREMENT = spend_increment_sql(Company._meta.db_table)


@dataclass(frozen=True)
class CompanySpend:
    spent_monthly_cents: int
    budget_monthly_cents: int
    # This cost made the company reach its budget and paused it.
    paused: bool


def company_spend_add(
    *,
    company_id: uuid.UUID | str,
    cents: int,
    month: date,
    now: datetime,
    run_id: uuid.UUID | None = None,
) -> CompanySpend:
    """Add a run's cost to the company's spend of `month`, in the caller's transaction, and
    pause the company (pause reason `budget`) when the spend reaches its budget: wakes of its
    agents are then refused, and runs already executing finish."""
    with connection.cursor() as cursor:
        cursor.execute(
            _COMPANY_SPEND_INCREMENT, {"id": company_id, "cents": cents, "month": month, "now": now}
        )
        spent, budget, spend_month = cursor.fetchone()
    paused = False
    if budget > 0 and spend_month == month and spent >= budget:
        # Compare-and-set from active: one cost pauses the company, however many cross together.
        paused = bool(
            Company.objects.filter(pk=company_id, status=Company.Status.ACTIVE).update(
                status=Company.Status.PAUSED,
                pause_reason=BUDGET_PAUSE_REASON,
                paused_at=now,
                updated_at=now,
            )
        )
        if paused:
            company = Company.objects.get(pk=company_id)
            _budget_activity(company, month, action="budget.exceeded", cause="spend", run_id=run_id)
    return CompanySpend(spent_monthly_cents=spent, budget_monthly_cents=budget, paused=paused)


def companies_spend_month_rollover(*, now: datetime) -> list[uuid.UUID]:
    """A new month: spends of earlier months start again from 0, and companies paused for their
    budget resume. Returns the ids of the companies resumed."""
    month = spend_month_of(now)
    Company.objects.filter(spend_month__lt=month).update(
        spent_monthly_cents=0, spend_month=month, updated_at=now
    )
    under_budget = spend_under_budget(month)
    resumed = []
    candidates = Company.objects.filter(
        under_budget, status=Company.Status.PAUSED, pause_reason=BUDGET_PAUSE_REASON
    ).values_list("pk", flat=True)
    for company_id in candidates:
        with transaction.atomic():
            won = Company.objects.filter(
                under_budget,
                pk=company_id,
                status=Company.Status.PAUSED,
                pause_reason=BUDGET_PAUSE_REASON,
            ).update(
                status=Company.Status.ACTIVE, pause_reason=None, paused_at=None, updated_at=now
            )
            if not won:
                continue
            company = Company.objects.get(pk=company_id)
            _budget_activity(company, month, action="budget.resumed", cause="new_month")
            transaction.on_commit(
                partial(company_resumed.send_robust, sender=Company, company_id=company_id)
            )
        resumed.append(company_id)
    return resumed


# How long a board key made through Paperclip's `POST /api/board-api-keys` lives when the request
# names no expiry (Paperclip's BOARD_API_KEY_TTL_MS, 30 days).
BOARD_API_KEY_DEFAULT_TTL = timedelta(days=30)


def board_token_create(
    *, user_id: int, name: str, expires_at: datetime | None = None
) -> tuple[BoardApiToken, str]:
    """A new personal API token and its secret (shown once; only its hash is stored).

    `expires_at` None: the token works until revoked.
    """
    secret, prefix, digest = secret_generate("pcbt_")
    token = BoardApiToken.objects.create(
        user_id=user_id, name=name, token_prefix=prefix, token_hash=digest, expires_at=expires_at
    )
    return token, secret


def board_token_revoke(*, token: BoardApiToken) -> BoardApiToken:
    """Revoke the token; revoking a revoked token keeps its first revocation time."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


_AUTH_FAILURE_SQL = f"""
WITH locked AS (
    SELECT ceil(extract(epoch FROM last_failure_at - now()) + %(window)s)::int AS seconds
    FROM "{AuthFailureCounter._meta.db_table}"
    WHERE subject = %(subject)s AND failures >= %(limit)s
        AND last_failure_at > now() - make_interval(secs => %(window)s)
), counted AS (
    INSERT INTO "{AuthFailureCounter._meta.db_table}" AS f (subject, failures, last_failure_at)
    SELECT %(subject)s, 1, now() WHERE NOT EXISTS (SELECT 1 FROM locked)
    ON CONFLICT (subject) DO UPDATE SET
        failures = CASE WHEN f.last_failure_at > now() - make_interval(secs => %(window)s)
            THEN f.failures + 1 ELSE 1 END,
        last_failure_at = now()
    RETURNING f.failures
), expired AS (
    DELETE FROM "{AuthFailureCounter._meta.db_table}"
    WHERE last_failure_at < now() - make_interval(secs => %(window)s) AND subject <> %(subject)s
)
SELECT (SELECT seconds FROM locked), (SELECT failures FROM counted)
"""


@dataclass(frozen=True)
class AuthFailureRecorded:
    """failures: the subject's count including this one (0 when it was not counted);
    locked_for_sec: set when the subject was already locked, so this attempt was not counted."""

    failures: int
    locked_for_sec: int | None


def auth_failure_record(*, subject: str) -> AuthFailureRecorded:
    """Count one failed authentication of `subject` in one statement, unless it is locked.

    A failure after the window has passed starts a new count; counters whose window has passed
    are deleted on the way, so the table holds only the clients that failed recently.
    """
    params = {
        "subject": subject,
        "limit": settings.PAPERCLIP_AUTH_FAILURE_LIMIT,
        "window": settings.PAPERCLIP_AUTH_LOCKOUT_SEC,
    }
    with connection.cursor() as cursor:
        cursor.execute(_AUTH_FAILURE_SQL, params)
        locked_for, failures = cursor.fetchone()
    return AuthFailureRecorded(failures=failures or 0, locked_for_sec=locked_for)
