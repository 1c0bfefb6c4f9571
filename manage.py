#!/usr/bin/env python
"""Django's command-line utility, reporting bad configuration as one line instead of a traceback."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paperclip.settings")
    from django.core.management import execute_from_command_line
    from django.db.utils import OperationalError

    from paperclip.embedded_db import ConfigurationError

    try:
        execute_from_command_line(sys.argv)
    except ConfigurationError as exc:
        sys.exit(f"paperclip: configuration error: {exc}")
    except OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        sys.exit(
            f"paperclip: cannot reach the database ({first_line}); "
            "check DATABASE_URL or unset it to use the embedded PostgreSQL"
        )


if __name__ == "__main__":
    main()
