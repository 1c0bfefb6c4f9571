"""Telemetry: PAPERCLIP_TELEMETRY_CLIENT names a class with `track(event, properties)`."""

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string


class NullTelemetryClient:
    """The default: sends nothing anywhere."""

    def track(self, event: str, properties: dict) -> None:
        return None


@cache
def _client_for(path: str):
    return import_string(path)()


def telemetry_client():
    return _client_for(settings.PAPERCLIP_TELEMETRY_CLIENT)
