"""The REST framework pieces named in settings (parser, pagination). Kept apart from the views:
DRF imports these while it defines APIView, so this module must not import views."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import JSONParser
from rest_framework.response import Response


def _storable(value: Any) -> bool:
    """Whether PostgreSQL can store every string in a parsed JSON document: no NUL characters
    and no lone surrogates (valid JSON, but neither text nor jsonb accepts them)."""
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    return True


def _storable_text(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class StrictJSONParser(JSONParser):
    """JSON bodies whose strings the database can store; anything else is a 400, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        if not _storable(data):
            raise exceptions.ParseError(
                "JSON strings must not contain NUL characters or unpaired surrogates"
            )
        return data


class ArrayCursorPagination(CursorPagination):
    """Lists answer a plain JSON array, as the reference's do (agents parse arrays), and page
    through `limit` and an opaque `cursor`; the next page's URL is in the `Link` header.

    A cursor on an indexed column keeps every page as fast on a 100,000-row company as on an
    empty one, which OFFSET would not.
    """

    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "-created_at"

    def get_paginated_response(self, data):
        links = []
        if (next_link := self.get_next_link()) is not None:
            links.append(f'<{next_link}>; rel="next"')
        if (previous_link := self.get_previous_link()) is not None:
            links.append(f'<{previous_link}>; rel="prev"')
        headers = {"Link": ", ".join(links)} if links else None
        return Response(data, headers=headers)

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return schema

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": 1000}
        return parameters
