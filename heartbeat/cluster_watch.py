"""Whether the django-q2 cluster still takes tasks from its queue, watched from the cluster's own
main process (`manage.py run_cluster`, which `python3 -m paperclip start` runs).

A django-q2 worker waits for its next task holding the task queue's read lock
(multiprocessing.Queue.get); SIGKILLed there (the OOM killer, an operator), it takes the lock
with it, and every worker after it, replacements included, waits forever. The cluster's processes
all live on, so nothing restarts it, and no run is launched and no sweep runs again. The sign in
the database: the oldest task waiting in the queue stops changing. Runs already executing are not
affected (they live under their shims, watched by the run supervisor).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Min
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ


def queue_head(*, now: datetime | None = None) -> int | None:
    """The oldest task of this cluster's queue that waits to be taken (None: none waits)."""
    waiting = OrmQ.objects.using(Conf.ORM).filter(
        key=Conf.CLUSTER_NAME, lock__lt=now or timezone.now()
    )
    return waiting.aggregate(head=Min("id"))["head"]


@dataclass
class QueueWatch:
    """The queue's head over time: stuck once the same task has waited at the head this long."""

    stuck_after_sec: float
    head: int | None = None
    head_since: float = 0.0

    def stuck(self, head: int | None, now: float) -> bool:
        """Record the head seen at monotonic time `now`; whether the queue is stuck."""
        if head is None or head != self.head:
            self.head, self.head_since = head, now
            return False
        return now - self.head_since >= self.stuck_after_sec
