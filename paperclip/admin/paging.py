"""Big tables in the console: counts from the planner's estimates, pages loaded in batches."""

from __future__ import annotations

import json

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.utils.functional import cached_property

# Below this many rows an exact count is cheap enough; above it the planner's estimate is shown.
_EXACT_COUNT_BELOW = 10_000


class EstimatedCountPaginator(Paginator):
    """Counts a big result from PostgreSQL's estimates instead of COUNT(*).

    COUNT(*) over hundreds of thousands of runs or events takes a good part of a second on every
    list page (healthchecks' admin has the same paginator for its pings). The whole table is
    estimated from its statistics, a filtered list from the planner's row estimate; when either
    says the result is small, it is counted exactly.
    """

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is None:
            return super().count
        if not query.where:
            estimate = _table_row_estimate(self.object_list.model._meta.db_table)
        else:
            estimate = _planner_row_estimate(self.object_list)
        if estimate >= _EXACT_COUNT_BELOW:
            return estimate
        return super().count


def _table_row_estimate(table: str) -> int:
    """The planner's row estimate for a table; -1 when it has never been analysed."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    return int(row[0]) if row else -1


def _planner_row_estimate(queryset: QuerySet) -> int:
    """How many rows the planner expects the query to return (EXPLAIN, nothing executed)."""
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class BigTableAdmin(admin.ModelAdmin):
    """Large, append-mostly tables: estimated counts and no full-table count per page."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    # Facet counts are one COUNT per filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER


class PrefetchingChangeList(ChangeList):
    """Lets an admin batch-load what its columns need for one page, in a fixed query count."""

    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        self.model_admin.prefetch_for_page(request, self.result_list)
