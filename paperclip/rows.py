"""Model rows through fixed SQL, for the API's hottest reads.

Building and compiling a queryset cost the small reads of the heartbeat protocol more CPU than
PostgreSQL spent running them. `ModelRows` writes a model's SELECT once and turns rows into
instances as the ORM does (the same columns, the same conversions: a JSON column is decoded by
its field), so a route states only its WHERE clause.
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Model


class ModelRows:
    def __init__(self, model: type[Model]) -> None:
        self.model = model
        fields = model._meta.concrete_fields
        self._attnames = [field.attname for field in fields]
        columns = ", ".join(f'"{field.column}"' for field in fields)
        self.select_sql = f'SELECT {columns} FROM "{model._meta.db_table}"'
        self._converters = [
            (index, field.from_db_value)
            for index, field in enumerate(fields)
            if hasattr(field, "from_db_value")
        ]

    def fetch(self, where: str, params: list[Any], *, order_by: str = "", limit: int) -> list:
        """Instances of the rows matching `where` (SQL with %s placeholders)."""
        sql = f"{self.select_sql} WHERE {where}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        with connection.cursor() as cursor:
            cursor.execute(f"{sql} LIMIT {int(limit)}", params)
            rows = cursor.fetchall()
        return [self._instance(row) for row in rows]

    def first(self, where: str, params: list[Any]) -> Any:
        rows = self.fetch(where, params, limit=1)
        return rows[0] if rows else None

    def _instance(self, row: tuple) -> Model:
        if self._converters:
            values = list(row)
            for index, convert in self._converters:
                values[index] = convert(values[index], None, connection)
            row = values
        return self.model.from_db(connection.alias, self._attnames, row)
