"""State changes of the core app: companies (their issue counter, spend, deletion), board
memberships, company skills, board tokens and every activity row."""

from __future__ import annotations

import logging
import re
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache, partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from paperclip.credentials import secret_generate
from paperclip.models import (
    BUDGET_PAUSE_REASON,
    ActivityLog,
    AuthFailureCounter,
    BoardApiToken,
    Company,
    CompanyMembership,
    CompanySkill,
    spend_month_of,
    spend_under_budget,
)
from paperclip.rows import json_rows, sql_execute
from paperclip.signals import company_resumed

logger = logging.getLogger(__name__)

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


# --- Credentials' last use, board memberships, company skills, company deletion ---------------

# last_used_at is informational: writing it on every request would turn each read into a write.
CREDENTIAL_LAST_USED_RESOLUTION = timedelta(minutes=5)


def credential_last_use_due(*, last_used_at: datetime | None, now: datetime) -> bool:
    """Whether a credential whose last use was stamped at `last_used_at` gets a new stamp now
    (board tokens here, agent keys in heartbeat: one rule)."""
    return last_used_at is None or now - last_used_at > CREDENTIAL_LAST_USED_RESOLUTION


def board_token_touch(*, token_id: uuid.UUID, last_used_at: datetime | None) -> None:
    """Stamp the token's last use. `last_used_at` is the value the caller read with the token,
    so a request within the resolution of the previous stamp writes nothing."""
    now = timezone.now()
    if credential_last_use_due(last_used_at=last_used_at, now=now):
        BoardApiToken.objects.filter(pk=token_id).update(last_used_at=now)


class CompanyMembershipError(Exception):
    """A board membership change that cannot be made (shown to the operator)."""


def _board_activity(
    *, company_id: uuid.UUID, action: str, details: dict, actor_type: str, actor_id: str
) -> None:
    """A change of the company's board or skills, recorded on the company."""
    activity_log_record(
        company_id=company_id,
        action=action,
        entity_type="company",
        entity_id=company_id,
        actor_type=actor_type,
        actor_id=actor_id,
        details=details,
    )


def _membership_activity(membership: CompanyMembership, *, action: str, **actor: str) -> None:
    details = {"userId": str(membership.user_id), "role": membership.role}
    _board_activity(company_id=membership.company_id, action=action, details=details, **actor)


def _membership_role_check(role: str) -> None:
    if role not in CompanyMembership.Role.values:
        raise CompanyMembershipError(
            f"Unknown board role {role!r}: one of {', '.join(CompanyMembership.Role.values)}"
        )


def company_membership_add(
    *,
    company_id: uuid.UUID | str,
    user_id: int,
    role: str = CompanyMembership.Role.MEMBER,
    actor_type: str = ActivityLog.ActorType.SYSTEM,
    actor_id: str = "system",
) -> CompanyMembership:
    """Put a user on the company's board (refused when they already are)."""
    _membership_role_check(role)
    with transaction.atomic():
        if CompanyMembership.objects.filter(company_id=company_id, user_id=user_id).exists():
            raise CompanyMembershipError("This user is already on the company's board")
        membership = CompanyMembership.objects.create(
            company_id=company_id, user_id=user_id, role=role
        )
        _membership_activity(
            membership, action="company.member_added", actor_type=actor_type, actor_id=actor_id
        )
    return membership


def company_membership_ensure(
    *,
    company_id: uuid.UUID | str,
    user_id: int,
    role: str,
    actor_type: str = ActivityLog.ActorType.SYSTEM,
    actor_id: str = "system",
) -> CompanyMembership:
    """The user's membership of the company, added with `role` when missing (an existing one
    keeps its role)."""
    existing = CompanyMembership.objects.filter(company_id=company_id, user_id=user_id).first()
    if existing is not None:
        return existing
    return company_membership_add(
        company_id=company_id, user_id=user_id, role=role, actor_type=actor_type, actor_id=actor_id
    )


def company_membership_role_set(
    *, membership_id: uuid.UUID | str, role: str, actor_type: str, actor_id: str
) -> CompanyMembership:
    """Change a board member's role; setting the role they have changes nothing."""
    _membership_role_check(role)
    with transaction.atomic():
        membership = CompanyMembership.objects.select_for_update().get(pk=membership_id)
        if membership.role != role:
            membership.role = role
            membership.save(update_fields=["role"])
            _membership_activity(
                membership,
                action="company.member_role_changed",
                actor_type=actor_type,
                actor_id=actor_id,
            )
    return membership


def company_membership_remove(
    *, membership_id: uuid.UUID | str, actor_type: str, actor_id: str
) -> None:
    """Take a user off the company's board."""
    with transaction.atomic():
        membership = CompanyMembership.objects.select_for_update().get(pk=membership_id)
        _membership_activity(
            membership, action="company.member_removed", actor_type=actor_type, actor_id=actor_id
        )
        membership.delete()


COMPANY_SKILL_EDITABLE_FIELDS = frozenset(
    {
        "key",
        "slug",
        "name",
        "description",
        "markdown",
        "source_type",
        "source_locator",
        "source_ref",
        "trust_level",
        "compatibility",
        "file_inventory",
        "metadata",
    }
)
_COMPANY_SKILL_REQUIRED_TEXT = ("key", "slug", "name", "markdown")


class CompanySkillInvalid(Exception):
    """A skill that cannot be saved as given (shown on the form that gave it)."""


def _skill_validate(skill: CompanySkill, fields: dict[str, Any]) -> None:
    unknown = set(fields) - COMPANY_SKILL_EDITABLE_FIELDS
    if unknown:
        raise CompanySkillInvalid(f"Unknown skill fields: {sorted(unknown)}")
    blank = [name for name in _COMPANY_SKILL_REQUIRED_TEXT if not str(getattr(skill, name)).strip()]
    if blank:
        raise CompanySkillInvalid(f"A skill needs a non-blank {', '.join(blank)}")
    if not isinstance(skill.file_inventory, list):
        raise CompanySkillInvalid("fileInventory must be a list")
    taken = CompanySkill.objects.filter(company_id=skill.company_id, key=skill.key)
    if taken.exclude(pk=skill.pk).exists():
        raise CompanySkillInvalid(f"The company already has a skill with key {skill.key!r}")


def _skill_activity(skill: CompanySkill, *, action: str, **actor: str) -> None:
    details = {"skillId": str(skill.id), "key": skill.key}
    _board_activity(company_id=skill.company_id, action=action, details=details, **actor)


def company_skill_create(
    *, company_id: uuid.UUID | str, fields: dict[str, Any], actor_type: str, actor_id: str
) -> CompanySkill:
    """A new skill of the company (keys are model field names; the key is unique per company)."""
    skill = CompanySkill(company_id=company_id, **fields)
    with transaction.atomic():
        # The company's row lock orders concurrent saves of the same key.
        Company.objects.select_for_update().get(pk=company_id)
        _skill_validate(skill, fields)
        skill.save(force_insert=True)
        _skill_activity(
            skill, action="company.skill_created", actor_type=actor_type, actor_id=actor_id
        )
    return skill


def company_skill_update(
    *, skill_id: uuid.UUID | str, changes: dict[str, Any], actor_type: str, actor_id: str
) -> CompanySkill:
    """Change a skill's editable fields (keys are model field names)."""
    with transaction.atomic():
        skill = CompanySkill.objects.get(pk=skill_id)
        Company.objects.select_for_update().get(pk=skill.company_id)
        for field, value in changes.items():
            setattr(skill, field, value)
        _skill_validate(skill, changes)
        skill.save()
        _skill_activity(
            skill, action="company.skill_updated", actor_type=actor_type, actor_id=actor_id
        )
    return skill


def company_skill_delete(*, skill_id: uuid.UUID | str, actor_type: str, actor_id: str) -> None:
    with transaction.atomic():
        skill = CompanySkill.objects.select_for_update().get(pk=skill_id)
        _skill_activity(
            skill, action="company.skill_deleted", actor_type=actor_type, actor_id=actor_id
        )
        skill.delete()


class CompanyDeleteRefused(Exception):
    """The company has rows that must outlive it; nothing was deleted."""


def company_delete(*, company_id: uuid.UUID | str, actor_type: str, actor_id: str) -> None:
    """Delete a company and what is only its own: board memberships, skills, activity, issues
    with their comments, agents that never ran with their keys and wakes.

    Refused (CompanyDeleteRefused, nothing deleted) once the company has runs (a queued or
    running one has a live or coming agent process and holds issue locks; a finished one is the
    record of work and spend), cost records or issues assigned to its agents: the foreign keys
    protect them. Pausing the company is the way to stop it. The company's activity log goes
    with it, so the deletion is written to the server log.
    """
    with transaction.atomic():
        # The row lock keeps runs from being inserted for the company while it is judged.
        company = Company.objects.select_for_update().get(pk=company_id)
        try:
            company.delete()
        except ProtectedError as exc:
            raise CompanyDeleteRefused(
                f"Company {company.name} cannot be deleted: it has "
                f"{protected_rows_summary(exc.protected_objects)}, kept as the record of its "
                "agents' work. Pause the company instead."
            ) from None
    logger.info(
        "company %s (%s) deleted by %s:%s", company_id, company.issue_prefix, actor_type, actor_id
    )


def protected_rows_summary(protected) -> str:
    """'2 heartbeat runs, 1 issue': the rows a ProtectedError names, counted by kind."""
    counts = Counter(obj._meta for obj in protected)
    kinds = [
        f"{count} {meta.verbose_name if count == 1 else meta.verbose_name_plural}"
        for meta, count in counts.items()
    ]
    return ", ".join(sorted(kinds))
