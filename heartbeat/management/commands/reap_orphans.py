import math

from django.core.management.base import CommandError

from heartbeat.conf import heartbeat_conf
from heartbeat.management.sweep_command import SweepCommand
from heartbeat.services import reap_orphaned_runs

# A year: no run stays silent that long, and the cutoff (now - threshold) stays a real date.
MAX_STALE_THRESHOLD_SEC = 365 * 24 * 3600


class Command(SweepCommand):
    help = (
        "Fail running runs whose worker is gone as process_lost (one automatic retry each), "
        "mark those whose process still lives as process_detached, and terminate leftovers."
    )

    sweep_name = "reap"

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--stale-threshold",
            type=float,
            default=None,
            metavar="SECONDS",
            help="skip runs updated more recently than this (default: the periodic sweep's "
            f"{heartbeat_conf().reap_stale_threshold_sec} s; 0 as at start-up)",
        )

    def sweep(self, options):
        threshold = options["stale_threshold"]
        if threshold is None:
            threshold = heartbeat_conf().reap_stale_threshold_sec
        if not math.isfinite(threshold) or not 0 <= threshold <= MAX_STALE_THRESHOLD_SEC:
            raise CommandError(
                f"--stale-threshold must be a number of seconds from 0 to "
                f"{MAX_STALE_THRESHOLD_SEC} (got {threshold})"
            )
        return reap_orphaned_runs(stale_threshold_sec=threshold, dry_run=options["dry_run"])

    def report(self, result) -> None:
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
