import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from heartbeat.supervisor import Supervisor, SupervisorAlreadyRunning


class Command(BaseCommand):
    help = (
        "Watch every run of this host until stopped (one per host; `python3 -m paperclip start` "
        "runs it): adopt runs, renew their leases, apply cancels, finalize runs when their "
        "agents end. SIGTERM or Ctrl-C stops it; the runs keep running."
    )

    def handle(self, *args, **options):
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            Supervisor().serve(stop)
        except SupervisorAlreadyRunning as exc:
            raise CommandError(str(exc)) from exc
