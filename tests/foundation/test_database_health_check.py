"""The persistent connection's health check: a connection the server closed is replaced before
the next request uses it; a quiet idle one is trusted without a round trip."""

import pytest
from django.db import close_old_connections, connection

from paperclip.postgres.base import _idle_and_quiet
from tests.polling import wait_until


def _terminate_from_another_connection(backend_pid: int) -> None:
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend_pid])

            def backend_gone() -> bool:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [backend_pid]
                )
                return cursor.fetchone()[0] == 0

            wait_until(backend_gone, timeout=10, message=f"backend {backend_pid} is gone")
    finally:
        other.close()


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_closed_is_replaced_before_the_next_request():
    connection.ensure_connection()
    old_pid = connection.connection.info.backend_pid
    _terminate_from_another_connection(old_pid)
    close_old_connections()  # what Django does when a request starts
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != old_pid


@pytest.mark.django_db(transaction=True)
def test_an_idle_connection_with_nothing_to_read_passes_without_a_statement():
    connection.ensure_connection()
    assert _idle_and_quiet(connection.connection)


@pytest.mark.django_db(transaction=True)
def test_a_terminated_connection_does_not_pass_the_socket_check():
    connection.ensure_connection()
    raw = connection.connection
    _terminate_from_another_connection(raw.info.backend_pid)
    try:
        assert not _idle_and_quiet(raw)
    finally:
        connection.close()
