"""Bad configuration ends with one clear line, never a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(90)
def test_malformed_database_url_is_one_clear_line():
    result = run_manage("migrate", "--check", DATABASE_URL="postgresql://user@host:notaport/db")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "DATABASE_URL is malformed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(90)
def test_non_postgresql_database_url_is_refused():
    result = run_manage("migrate", "--check", DATABASE_URL="sqlite:///tmp/x.db")
    assert result.returncode != 0
    assert "must point at PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(90)
def test_unreachable_database_is_one_clear_line():
    result = run_manage(
        "migrate", "--check", DATABASE_URL="postgresql://u:p@127.0.0.1:1/nowhere?connect_timeout=2"
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "cannot reach the database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(90)
def test_unusable_paperclip_home_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--check"],
        cwd=ROOT,
        env={**env, "PAPERCLIP_HOME": str(blocker / "home")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "PAPERCLIP_HOME" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
