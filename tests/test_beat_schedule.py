"""Every beat entry names a registered task and a known queue."""

from beat_schedule import SCHEDULE
from workers import tasks  # noqa: F401  (registers the tasks)
from workers.celery_app import app


def test_every_entry_names_a_registered_task_and_a_known_queue():
    assert SCHEDULE
    for name, entry in SCHEDULE.items():
        assert entry["task"] in app.tasks, name
        assert entry["options"]["queue"] in [q.name for q in app.conf.task_queues], name


def test_the_app_declares_the_tier_queues_and_reliable_delivery():
    assert [q.name for q in app.conf.task_queues] == ["maintenance", "elite", "pro", "core"]
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.beat_schedule is SCHEDULE
