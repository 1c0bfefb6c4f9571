"""Signals the core app sends; apps that own the subject listen (paperclip imports no app)."""

from django.dispatch import Signal

# Sent after a successful write (POST, PATCH, PUT, DELETE) by an agent whose request is linked to
# a run (run credential or X-Paperclip-Run-Id): the write is activity of that run. Keyword
# arguments: run_id, agent_id.
agent_run_write = Signal()

# Sent after commit when a paused company becomes active again (the board resumed it, raised its
# budget, or a new month began): the runs queued for its agents may start. Keyword arguments:
# company_id.
company_resumed = Signal()
