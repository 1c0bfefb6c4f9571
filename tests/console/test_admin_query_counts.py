"""Every console list page costs the same number of queries for 1 row as for 20."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.console.conftest import seed_console_rows
from tests.console.test_admin_scoping import CHANGELISTS
from tests.factories import make_agent

EXTRA_LIST_VIEWS = [
    ("heartbeat_heartbeatrun", "?stale=any"),
    ("heartbeat_heartbeatrun", "?status__exact=failed&error_code=process_lost"),
    ("heartbeat_heartbeatrun", "?q=build"),
    ("issues_issue", "?attention=stranded"),
    ("issues_issue", "?attention=escalated"),
]


def _query_counts(client) -> dict[str, int]:
    counts = {}
    views = [(name, "") for name in CHANGELISTS] + EXTRA_LIST_VIEWS
    for name, query in views:
        url = reverse(f"admin:{name}_changelist") + query
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200, url
        counts[url] = len(queries)
    return counts


def _seed(company, n: int) -> None:
    for _ in range(n):
        seed_console_rows(company, make_agent(company))


@pytest.mark.django_db
def test_changelist_query_count_is_constant_in_rows_for_instance_admin(admin_client_, company_a):
    _seed(company_a, 1)
    one_row = _query_counts(admin_client_)
    _seed(company_a, 19)
    twenty_rows = _query_counts(admin_client_)
    assert twenty_rows == one_row


@pytest.mark.django_db
def test_changelist_query_count_is_constant_in_rows_for_board_user(board_client, company_a):
    _seed(company_a, 1)
    one_row = _query_counts(board_client)
    _seed(company_a, 19)
    twenty_rows = _query_counts(board_client)
    assert twenty_rows == one_row
