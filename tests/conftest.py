from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.supervision import SupervisorDriver


@pytest.fixture
def supervisor(db) -> Iterator[SupervisorDriver]:
    """This host's run supervisor, in the test process (use with transaction=True tests)."""
    driver = SupervisorDriver()
    try:
        yield driver
    finally:
        driver.close()
