"""The REST framework pieces named in settings (parser, renderer, pagination). Kept apart from
the views: DRF imports these while it defines APIView, so this module must not import views."""

from __future__ import annotations

import math
from typing import Any

import orjson
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

# Deeper than any document the API accepts (agent configs, wake payloads); Python's parser and
# PostgreSQL's jsonb both recurse per level, so depth is bounded before either is asked.
MAX_JSON_DEPTH = 32


def _document_problem(document: Any) -> str | None:
    """Why PostgreSQL could not store a parsed JSON document (or would not want to), or None.

    Valid JSON may still hold NUL characters or lone surrogates (neither text nor jsonb accepts
    them), numbers that overflow to infinity (`1e400`), or nesting deep enough to exhaust a stack.
    Walked iteratively: the walk itself must not be the thing that recurses too deep.
    """
    pending = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if not _storable_text(value):
                return "JSON strings must not contain NUL characters or unpaired surrogates"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return "JSON numbers must be finite"
        elif isinstance(value, dict | list):
            if depth >= MAX_JSON_DEPTH:
                return f"JSON documents may nest at most {MAX_JSON_DEPTH} levels"
            if isinstance(value, dict):
                pending.extend((key, depth) for key in value)
                pending.extend((item, depth + 1) for item in value.values())
            else:
                pending.extend((item, depth + 1) for item in value)
    return None


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
    """JSON bodies the database can store; anything else is a 400, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(
                f"JSON documents may nest at most {MAX_JSON_DEPTH} levels"
            ) from None
        problem = _document_problem(data)
        if problem is not None:
            raise exceptions.ParseError(problem)
        return data


class FastJSONRenderer(JSONRenderer):
    """DRF's JSON, byte for byte, written by orjson: the standard library's encoder (and DRF's
    `default` for UUIDs and datetimes on every row) was a tenth of a small read's CPU.

    orjson writes datetimes and UUIDs itself, as DRF's encoder does (UTC as `Z`); anything it
    does not know goes to DRF's `default`. What orjson refuses (a non-string key, an integer
    beyond 64 bits) and pretty-printing (`Accept: application/json; indent=2`) take DRF's path.
    """

    _options = orjson.OPT_UTC_Z
    _fallback_default = JSONEncoder().default

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        if accepted_media_type and "indent" in accepted_media_type:
            return super().render(data, accepted_media_type, renderer_context)
        try:
            rendered = orjson.dumps(data, default=self._fallback_default, option=self._options)
        except (orjson.JSONEncodeError, ValueError):
            return super().render(data, accepted_media_type, renderer_context)
        # DRF escapes these two so that the JSON is also valid JavaScript.
        if b"\xe2\x80\xa8" in rendered or b"\xe2\x80\xa9" in rendered:
            rendered = rendered.replace(b"\xe2\x80\xa8", b"\\u2028")
            rendered = rendered.replace(b"\xe2\x80\xa9", b"\\u2029")
        return rendered


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

    def paginate_queryset(self, queryset, request, view=None):
        # decode_cursor checks the cursor's position against the ordering column's type.
        self._model = queryset.model
        return super().paginate_queryset(queryset, request, view)

    def get_page_size(self, request) -> int:
        """`limit` as documented (1 to 1000); anything else is a 400, never silently ignored."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= self.max_page_size:
            message = f"Must be an integer from 1 to {self.max_page_size}."
            raise exceptions.ValidationError({self.page_size_query_param: [message]})
        return size

    def decode_cursor(self, request) -> Cursor | None:
        """A cursor is opaque but travels through clients: a hand-made position that the
        ordering column cannot hold answers like any other invalid cursor, not a 500."""
        cursor = super().decode_cursor(request)
        if cursor is None or cursor.position is None:
            return cursor
        if "\x00" in cursor.position:
            raise exceptions.NotFound(self.invalid_cursor_message)
        field = self._model._meta.get_field(self.ordering[0].lstrip("-"))
        try:
            field.get_prep_value(field.to_python(cursor.position))
        except (DjangoValidationError, ValueError, TypeError, OverflowError):
            raise exceptions.NotFound(self.invalid_cursor_message) from None
        return cursor

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
