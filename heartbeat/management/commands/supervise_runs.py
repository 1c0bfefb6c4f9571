import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from heartbeat.supervisor import Supervisor, SupervisorAlreadyRunning
from paperclip.launcher_channel import tell_launcher


class Command(BaseCommand):
    help = (
        "Watch every run of this host until stopped (one per host; `python3 -m paperclip start` "
        "runs it): adopt runs, renew their leases, apply cancels, finalize runs when their "
        "agents end. SIGTERM or Ctrl-C stops it and the runs keep running; SIGUSR1 stops it "
        "after cancelling them and watching until they have ended."
    )

    def handle(self, *args, **options):
        stop, stop_runs = threading.Event(), threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())

        def stop_with_runs(*_):
            stop_runs.set()
            stop.set()

        signal.signal(signal.SIGUSR1, stop_with_runs)
        try:
            Supervisor(report=tell_launcher).serve(stop, stop_runs=stop_runs)
        except SupervisorAlreadyRunning as exc:
            raise CommandError(str(exc)) from exc
