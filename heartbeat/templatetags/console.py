"""Template filters of the operator console: durations and ages as operators read them."""

from datetime import datetime

from django import template
from django.utils import timezone

from paperclip.admin import humanize_seconds, short_id

register = template.Library()


@register.filter
def duration(seconds: float | None) -> str:
    """45s, 12m03s, 3h05m, 2d04h."""
    return humanize_seconds(seconds)


@register.filter
def since(moment: datetime | None) -> str:
    """How long ago `moment` was, as a duration."""
    if moment is None:
        return "-"
    return humanize_seconds((timezone.now() - moment).total_seconds())


@register.filter
def shortid(value) -> str:
    return short_id(value)
