"""Indexes of the tables the reaper writes for every lost run: each one is written again for
every row the reaper inserts or moves, so none may be redundant."""

import pytest
from django.db import connection

# The tables with a row (or a new row version) per lost run: the run and its retry, their wakes,
# two run events, an activity row, the issue whose lock moves.
PER_LOST_RUN_TABLES = (
    "heartbeat_heartbeatrun",
    "heartbeat_agentwakeuprequest",
    "heartbeat_heartbeatrunevent",
    "paperclip_activitylog",
    "issues_issue",
)


def _plain_indexes(table: str) -> dict[str, list[int]]:
    """Index name -> column numbers, for indexes on plain columns without a predicate."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, i.indkey::int2[] FROM pg_index AS i "
            "JOIN pg_class AS c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = %s::regclass AND i.indpred IS NULL AND i.indexprs IS NULL",
            [table],
        )
        return {name: list(columns) for name, columns in cursor.fetchall()}


@pytest.mark.django_db
@pytest.mark.parametrize("table", PER_LOST_RUN_TABLES)
def test_no_index_is_a_leading_part_of_another(table):
    indexes = _plain_indexes(table)
    redundant = [
        (name, other)
        for name, columns in indexes.items()
        for other, longer in indexes.items()
        if len(longer) > len(columns) and longer[: len(columns)] == columns
    ]
    assert redundant == []


@pytest.mark.django_db
def test_one_retry_per_run_keeps_its_unique_index():
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'run_one_retry_per_run'")
        (definition,) = cursor.fetchone()
    assert definition.startswith("CREATE UNIQUE INDEX")
