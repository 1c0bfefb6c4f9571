"""Model rows through fixed SQL, for the API's hottest reads and writes.

Building and compiling a queryset cost the small requests of the heartbeat protocol more CPU
than PostgreSQL spent running them. `ModelRows` writes a model's SELECT and INSERT once and
converts values as the ORM does (the same columns; a JSON column decoded and encoded by its
field; auto_now and defaults applied by the fields), so a caller states only its WHERE clause.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from django.db import connection
from django.db.models import Model


class ModelRows:
    def __init__(self, model: type[Model]) -> None:
        self.model = model
        fields = model._meta.concrete_fields
        self._attnames = [field.attname for field in fields]
        self.columns = columns = ", ".join(f'"{field.column}"' for field in fields)
        self.select_sql = f'SELECT {columns} FROM "{model._meta.db_table}"'
        self.insert_sql = (
            f'INSERT INTO "{model._meta.db_table}" ({columns}) '
            f"VALUES ({', '.join(['%s'] * len(fields))})"
        )
        self._fields = fields
        self._converters = [
            (index, field.from_db_value)
            for index, field in enumerate(fields)
            if hasattr(field, "from_db_value")
        ]

    def fetch(
        self,
        where: str,
        params: list[Any],
        *,
        order_by: str = "",
        limit: int,
        for_update: bool = False,
    ) -> list:
        """Instances of the rows matching `where` (SQL with %s placeholders)."""
        sql = f"{self.select_sql} WHERE {where}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        sql += f" LIMIT {int(limit)}"
        if for_update:
            sql += " FOR UPDATE"
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        return self.instances(rows)

    def first(self, where: str, params: list[Any], *, for_update: bool = False) -> Any:
        rows = self.fetch(where, params, limit=1, for_update=for_update)
        return rows[0] if rows else None

    def insert(
        self,
        instance: Model,
        *,
        with_clause: str = "",
        with_params: Callable[[Model], list] | None = None,
    ) -> Model:
        """INSERT the instance as `save()` would (no signals: callers of this send none).

        with_clause is a WITH prefix written in the same statement (another row's change that
        must commit with this one); with_params gives its parameters from the instance as it
        is inserted (after auto_now fields took their values).
        """
        values = [
            field.get_db_prep_save(field.pre_save(instance, True), connection)
            for field in self._fields
        ]
        params = [*(with_params(instance) if with_params else ()), *values]
        with connection.cursor() as cursor:
            cursor.execute(f"{with_clause} {self.insert_sql}".lstrip(), params)
        instance._state.adding = False
        instance._state.db = connection.alias
        return instance

    def instances(self, rows: list[tuple]) -> list:
        """Instances of rows whose columns are `columns`, in that order."""
        return [self._instance(row) for row in rows]

    def _instance(self, row: tuple) -> Model:
        if self._converters:
            values = list(row)
            for index, convert in self._converters:
                values[index] = convert(values[index], None, connection)
            row = values
        return self.model.from_db(connection.alias, self._attnames, row)


def sql_execute(sql: str, params: dict) -> list[tuple]:
    """Run one statement and return its rows (none for a statement without RETURNING).

    The sweeps write a whole batch per statement, its per-item values passed as one JSON
    document read with jsonb_to_recordset (see json_rows): one round trip, one parameter, and
    no model instances per item.
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def json_rows(rows: Sequence[dict]) -> str:
    """A batch's per-item values as one JSON array (ids and times as strings).

    orjson writes UUIDs and datetimes itself (a tenth of the time of json.dumps with a default
    per value); anything it refuses goes through the standard library's encoder.
    """
    rows = list(rows)
    try:
        return orjson.dumps(rows, default=str).decode()
    except orjson.JSONEncodeError:
        return json.dumps(rows, default=str)
