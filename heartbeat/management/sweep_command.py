"""What the sweep commands share: --dry-run, --json (exactly one JSON object on stdout), and a
line on stderr when another sweep of the kind holds its lock."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand


class SweepCommand(BaseCommand):
    # The sweep's name in "Skipped: another <name> sweep is running."
    sweep_name = ""

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="report what would change, change nothing"
        )
        parser.add_argument(
            "--json", action="store_true", help="print exactly one JSON object on stdout"
        )

    def sweep(self, options):
        """Run the sweep with the command's options; returns its result."""
        raise NotImplementedError

    def report(self, result) -> None:
        """Write the result for a person."""
        raise NotImplementedError

    def handle(self, *args, **options):
        result = self.sweep(options)
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
        elif result.sweep_skipped:
            self.stderr.write(f"Skipped: another {self.sweep_name} sweep is running.")
        else:
            self.report(result)
