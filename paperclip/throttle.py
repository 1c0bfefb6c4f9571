"""Throttling of failed authentication, shared by every worker and host through PostgreSQL.

The admin login is django-axes' (attempts per client address and per username, in the database);
its lockout page is `admin_lockout_response`. API credentials are throttled per client address
with AuthFailureCounter: a bearer secret names no account until it verifies, and locking the
account a forged credential claims would let anyone lock an agent out of its own runs.

A locked client gets 429 with Retry-After for every credential it presents, valid or not; were
valid ones let through, guessing would go on and only the answer to a wrong guess would change.
The check costs a valid request no statement of its own: the credential's lookup selects the
lock with it (`LOCKED_FOR_SQL`).
"""

from __future__ import annotations

import math

from axes.models import AccessAttempt
from django.conf import settings
from django.db import connection
from django.db.models import Max, Q
from django.shortcuts import render
from django.utils import timezone
from rest_framework import exceptions

from paperclip.models import AuthFailureCounter

# Seconds the subject stays locked, NULL when it is not: a scalar subquery for the SELECT list
# of a credential lookup. Times are the database's, so hosts with skewed clocks agree.
LOCKED_FOR_SQL = (
    "(SELECT ceil(extract(epoch FROM f.last_failure_at - now()) + %s)::int "
    f'FROM "{AuthFailureCounter._meta.db_table}" AS f WHERE f.subject = %s '
    "AND f.failures >= %s AND f.last_failure_at > now() - make_interval(secs => %s))"
)


def client_address(request) -> str | None:
    """The address failures are counted for: the TCP peer (None when unknown, as for a request
    built in a test). X-Forwarded-For is not trusted (any client can set it), so behind a
    reverse proxy every client shares the proxy's address."""
    return request.META.get("REMOTE_ADDR") or None


def api_client_subject(request) -> str:
    return f"api-client:{client_address(request) or 'unknown'}"


def locked_for_params(subject: str) -> list:
    """The parameters of LOCKED_FOR_SQL, in order."""
    window = settings.PAPERCLIP_AUTH_LOCKOUT_SEC
    return [window, subject, settings.PAPERCLIP_AUTH_FAILURE_LIMIT, window]


def auth_locked_for(*, subject: str) -> int | None:
    """Seconds until the subject may authenticate again; None when it is not locked."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {LOCKED_FOR_SQL}", locked_for_params(subject))
        return cursor.fetchone()[0]


def too_many_failures(locked_for_sec: int) -> exceptions.Throttled:
    """The 429 of a locked client (DRF adds the Retry-After header)."""
    return exceptions.Throttled(
        wait=max(locked_for_sec, 1),
        detail="Too many failed authentication attempts from this address.",
    )


def admin_lockout_response(request, original_response=None, credentials=None):
    """django-axes' answer to a locked-out admin login: a 429 page saying when to come back."""
    username = (credentials or {}).get("username") or request.POST.get("username")
    attempts = Q(ip_address=client_address(request))
    if username:
        attempts |= Q(username=username)
    last = AccessAttempt.objects.filter(attempts).aggregate(last=Max("attempt_time"))["last"]
    window = settings.PAPERCLIP_AUTH_LOCKOUT_SEC
    remaining = window - (timezone.now() - last).total_seconds() if last else window
    retry_after = max(math.ceil(remaining), 1)
    response = render(
        request,
        "admin/login_locked.html",
        {"title": "Too many failed logins", "retry_after_min": math.ceil(retry_after / 60)},
        status=429,
    )
    response["Retry-After"] = str(retry_after)
    return response
