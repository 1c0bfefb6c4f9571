"""Django's PostgreSQL backend, pointed at the embedded server, started on first connection.

Starting lazily (not at settings import) keeps `manage.py help`, `makemigrations --check` and the
launcher free of a database start, and means the socket directory comes from the running server
rather than a guess (pgserver moves it elsewhere when the checkout path is too long for a socket).
"""

from pathlib import Path

from django.conf import settings

from paperclip import embedded_db
from paperclip.postgres import base as postgresql


class DatabaseWrapper(postgresql.DatabaseWrapper):
    def get_connection_params(self):
        params = super().get_connection_params()
        params["host"] = embedded_db.ensure_running(Path(settings.PAPERCLIP_HOME))
        return params
