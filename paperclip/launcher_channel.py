"""How the children of `python3 -m paperclip start` tell the launcher how they are doing.

The launcher gives each child the write end of a pipe of its own (its number in
PAPERCLIP_LAUNCHER_FD, non-blocking); a child writes one line per message: `ready` once it is up
(the launcher prints "ready" only when every child has said so), and the run supervisor also
`runs N` (runs of this host in flight) and `cancelled N`. Standard library only: the launcher
imports it before the virtual environment exists.
"""

from __future__ import annotations

import os

LAUNCHER_FD_ENV = "PAPERCLIP_LAUNCHER_FD"


def tell_launcher(message: str) -> None:
    """Send one message to the launcher; nothing when not started by one."""
    fd = os.environ.get(LAUNCHER_FD_ENV)
    if not fd:
        return
    try:
        os.write(int(fd), f"{message}\n".encode())
    except (OSError, ValueError):
        # The launcher is gone (EPIPE), or not reading (EAGAIN): it learns the rest from the
        # process table; a child never fails or blocks because of its launcher.
        return
