from heartbeat.management.sweep_command import SweepCommand
from heartbeat.services import reconcile_stranded_assigned_issues


class Command(SweepCommand):
    help = (
        "Re-dispatch or continue agent-assigned issues that have no live execution path, once; "
        "escalate them to blocked with a comment when that recovery failed too."
    )
    sweep_name = "reconcile"

    def sweep(self, options):
        return reconcile_stranded_assigned_issues(dry_run=options["dry_run"])

    def report(self, result) -> None:
        prefix = "Would have: " if result.dry_run else ""
        self.stdout.write(
            f"{prefix}re-dispatched {result.dispatch_requeued}, continued "
            f"{result.continuation_requeued}, escalated {result.escalated}, skipped "
            f"{result.skipped} stranded issue(s); {result.errors} error(s)."
        )
        for issue_id in result.issue_ids:
            self.stdout.write(f"  {issue_id}")
