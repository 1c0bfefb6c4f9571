from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

from tests.supervision import SupervisorDriver


def pytest_configure(config):
    # Users made with a password cost 0.2 s each at PBKDF2's production work factor; the tests
    # check who may log in, not how hard a stolen hash is to crack. Product processes that tests
    # start keep the production hashers (no test logs in to them with a password made here).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def pytest_collection_modifyitems(items):
    """Tests that start the product's processes or a browser are slow too, so that
    `-m "not slow"` alone gives the quick loop."""
    for item in items:
        if item.get_closest_marker("cluster") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


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
