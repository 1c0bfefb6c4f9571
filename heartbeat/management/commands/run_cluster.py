import logging
import os
import time

from django.db import DatabaseError, InterfaceError, connection
from django_q.cluster import Cluster
from django_q.management.commands import qcluster

from heartbeat import process_control
from heartbeat.cluster_watch import QueueWatch, queue_head
from heartbeat.conf import heartbeat_conf
from paperclip.launcher_channel import tell_launcher

logger = logging.getLogger(__name__)

# How often the cluster's main process looks at its queue (it wakes every second for a stop).
_WATCH_INTERVAL_SEC = 15.0


class Command(qcluster.Command):
    help = (
        "django-q2's qcluster, telling `python3 -m paperclip start` (which runs this one) when "
        "the cluster is up, and exiting when the cluster is stuck (a worker killed while it "
        "held the task queue) so that it is restarted. Behind another process manager, run this "
        "command the same way, restarted when it exits."
    )

    def handle(self, *args, **options):
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        cluster = Cluster()
        cluster.start()
        tell_launcher("ready")
        self.watch(cluster)

    def watch(self, cluster: Cluster) -> None:
        """Until the cluster stops (SIGTERM stops it through django-q2's own handler), check
        that its queue moves; a stuck cluster is killed whole, and this process exits 1."""
        watch = QueueWatch(stuck_after_sec=heartbeat_conf().cluster_stuck_after_sec)
        next_look = time.monotonic() + _WATCH_INTERVAL_SEC
        while cluster.sentinel is not None and cluster.sentinel.is_alive():
            time.sleep(1.0)
            if time.monotonic() < next_look:
                continue
            next_look = time.monotonic() + _WATCH_INTERVAL_SEC
            try:
                head = queue_head()
            except (DatabaseError, InterfaceError):
                # The database being away is not the cluster's fault; look again later.
                connection.close()
                continue
            if watch.stuck(head, time.monotonic()):
                logger.error(
                    "django-q2 cluster stuck: task %s has waited at the head of the queue for "
                    "%.0f s while the cluster runs; killing the cluster so that it is restarted",
                    head,
                    watch.stuck_after_sec,
                )
                process_control.descendants_kill()
                os._exit(1)
