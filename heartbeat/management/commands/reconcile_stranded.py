import json

from django.core.management.base import BaseCommand

from heartbeat.services import reconcile_stranded_assigned_issues


class Command(BaseCommand):
    help = (
        "Re-dispatch or continue agent-assigned issues that have no live execution path, once; "
        "escalate them to blocked with a comment when that recovery failed too."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="report what would change, change nothing"
        )
        parser.add_argument(
            "--json", action="store_true", help="print exactly one JSON object on stdout"
        )

    def handle(self, *args, **options):
        result = reconcile_stranded_assigned_issues(dry_run=options["dry_run"])
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
            return
        if result.sweep_skipped:
            self.stderr.write("Skipped: another reconcile sweep is running.")
            return
        prefix = "Would have: " if result.dry_run else ""
        self.stdout.write(
            f"{prefix}re-dispatched {result.dispatch_requeued}, continued "
            f"{result.continuation_requeued}, escalated {result.escalated}, skipped "
            f"{result.skipped} stranded issue(s); {result.errors} error(s)."
        )
        for issue_id in result.issue_ids:
            self.stdout.write(f"  {issue_id}")
