"""Django's PostgreSQL backend with a health check that costs no round trip when it need not.

With CONN_HEALTH_CHECKS Django runs `SELECT 1` on a persistent connection before the first
query of every request: one more round trip for every API call. A connection the server closed
(a restart, a crash, an administrator's terminate) has said so on its socket: the server's last
message or the end of the stream is waiting there. So the check looks first; only a connection
with something to read, or one that is not idle, gets the `SELECT 1`.
"""

import select

from django.db.backends.postgresql import base as postgresql
from psycopg import pq


class DatabaseWrapper(postgresql.DatabaseWrapper):
    def close_if_health_check_failed(self):
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and _idle_and_quiet(self.connection)
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()


def _idle_and_quiet(connection) -> bool:
    """Whether nothing is waiting on an idle connection's socket (no message, no end)."""
    if connection.closed or connection.broken:
        return False
    if connection.info.transaction_status != pq.TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN)
    return not poller.poll(0)
