"""Waiting in tests for something another process or thread does: one polling loop, one way to
fail (the test fails saying what it waited for and how long)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str],
) -> T:
    """Call predicate() every `interval` seconds until it returns something truthy, and return
    that. After `timeout` seconds the test fails with "timed out after Ns waiting until
    <message>"; a callable message is built then (to show a log as it is at that moment)."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            pytest.fail(f"timed out after {timeout:g}s waiting until {what}")
        time.sleep(interval)
    return result
