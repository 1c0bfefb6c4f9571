import json
import math

from django.core.management.base import BaseCommand, CommandError

from heartbeat.conf import heartbeat_conf
from heartbeat.services import reap_orphaned_runs

# A year: no run stays silent that long, and the cutoff (now - threshold) stays a real date.
MAX_STALE_THRESHOLD_SEC = 365 * 24 * 3600


class Command(BaseCommand):
    help = (
        "Fail running runs whose worker is gone as process_lost (one automatic retry each), "
        "mark those whose process still lives as process_detached, and terminate leftovers."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="report what would change, change nothing"
        )
        parser.add_argument(
            "--json", action="store_true", help="print exactly one JSON object on stdout"
        )
        parser.add_argument(
            "--stale-threshold",
            type=float,
            default=None,
            metavar="SECONDS",
            help="skip runs updated more recently than this (default: the periodic sweep's "
            f"{heartbeat_conf().reap_stale_threshold_sec} s; 0 as at start-up)",
        )

    def handle(self, *args, **options):
        threshold = options["stale_threshold"]
        if threshold is None:
            threshold = heartbeat_conf().reap_stale_threshold_sec
        if not math.isfinite(threshold) or not 0 <= threshold <= MAX_STALE_THRESHOLD_SEC:
            raise CommandError(
                f"--stale-threshold must be a number of seconds from 0 to "
                f"{MAX_STALE_THRESHOLD_SEC} (got {threshold})"
            )
        result = reap_orphaned_runs(stale_threshold_sec=threshold, dry_run=options["dry_run"])
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
            return
        if result.sweep_skipped:
            self.stderr.write("Skipped: another reap sweep is running.")
            return
        verb = "Would reap" if result.dry_run else "Reaped"
        self.stdout.write(
            f"{verb} {result.reaped} orphaned run(s); {result.detached} newly detached; "
            f"{result.deferred} deferred (issue busy); {result.errors} error(s)."
        )
        for run_id in result.run_ids:
            self.stdout.write(f"  lost      {run_id}")
        for run_id in result.detached_run_ids:
            self.stdout.write(f"  detached  {run_id}")
        for run_id in result.deferred_run_ids:
            self.stdout.write(f"  deferred  {run_id}")
