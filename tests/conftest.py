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


@pytest.fixture
def run_logs(settings, tmp_path):
    """Run logs go under tmp_path (where tests/cluster.py points product processes too), not the
    developer's PAPERCLIP_HOME."""
    root = tmp_path / "run-logs"
    settings.PAPERCLIP_HEARTBEAT = {"run_log_dir": str(root)}
    return root
