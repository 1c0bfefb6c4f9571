from django_q.management.commands import qcluster

from paperclip.launcher_channel import tell_launcher


class Command(qcluster.Command):
    help = (
        "django-q2's qcluster, telling `python3 -m paperclip start` (which runs this one) when "
        "the cluster is up. Behind another process manager, run `qcluster` itself."
    )

    def handle(self, *args, **options):
        # qcluster returns once the sentinel has spawned the workers and guards them; the
        # process then waits for the cluster until SIGTERM stops it.
        super().handle(*args, **options)
        tell_launcher("ready")
