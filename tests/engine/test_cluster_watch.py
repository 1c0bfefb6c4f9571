"""Whether a django-q2 cluster is stuck, from its queue's head over time (pure)."""

from heartbeat.cluster_watch import QueueWatch


def test_queue_whose_head_moves_is_never_stuck():
    watch = QueueWatch(stuck_after_sec=60)
    assert not any(watch.stuck(head, now) for head, now in [(1, 0), (2, 50), (3, 100), (9, 200)])


def test_empty_queue_is_never_stuck():
    watch = QueueWatch(stuck_after_sec=60)
    assert not any(watch.stuck(None, now) for now in (0, 100, 1000))


def test_same_head_past_the_limit_is_stuck():
    watch = QueueWatch(stuck_after_sec=60)
    assert not watch.stuck(7, 0)
    assert not watch.stuck(7, 59)
    assert watch.stuck(7, 60)


def test_head_that_moves_again_starts_the_wait_over():
    watch = QueueWatch(stuck_after_sec=60)
    watch.stuck(7, 0)
    assert not watch.stuck(8, 59)
    assert not watch.stuck(8, 100)
    assert watch.stuck(8, 119)
