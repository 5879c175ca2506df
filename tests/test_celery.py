"""Celery: configuration, the beat schedule, and a real worker process."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from plgapp.beat_schedule import BEAT_SCHEDULE
from plgapp.celery import QUEUES, app
from plgapp.models import WorkerHeartbeat
from plgapp.tasks import heartbeat_record_task, heartbeats_dispatch
from tests.workers import start_worker

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_every_beat_entry_names_a_registered_task() -> None:
    app.loader.import_default_modules()

    assert BEAT_SCHEDULE, "the beat schedule is empty"
    for name, entry in BEAT_SCHEDULE.items():
        assert entry["task"] in app.tasks, f"beat entry {name!r} names unknown task {entry['task']!r}"
    assert app.conf.beat_schedule == BEAT_SCHEDULE


def test_celery_is_configured_for_safe_redelivery() -> None:
    conf = app.conf

    assert conf.accept_content == ["json"]
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]
    assert [q.name for q in conf.task_queues] == list(QUEUES)
    assert conf.broker_url == settings.REDIS_URL


def test_tasks_of_each_app_route_to_its_queue() -> None:
    router = app.amqp.router

    def queue_of(task_name: str) -> str:
        return str(router.route({}, task_name)["queue"].name)

    assert queue_of("signals.tasks.events_process") == "ingest"
    assert queue_of("scoring.tasks.scores_compute") == "scoring"
    assert queue_of("playbooks.tasks.playbooks_evaluate") == "playbooks"
    assert queue_of("integrations.tasks.action_send") == "actions"
    assert queue_of("plgapp.tasks.heartbeats_dispatch") == "default"


@pytest.mark.django_db
def test_the_heartbeat_dispatch_sends_one_heartbeat_to_every_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[tuple[str, ...], str]] = []
    monkeypatch.setattr(heartbeat_record_task, "apply_async", lambda args, queue, **kw: sent.append((args, queue)))

    heartbeats_dispatch()

    assert sent == [((queue,), queue) for queue in QUEUES]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_process_consumes_a_task_and_writes_a_row() -> None:
    queue = f"test-{uuid.uuid4().hex[:12]}"  # a private queue: no other worker may take the message
    worker = start_worker("heartbeat", queue)
    try:
        heartbeat_record_task.apply_async(args=(queue,), queue=queue)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            if WorkerHeartbeat.objects.filter(queue=queue).exists():
                break
            time.sleep(0.2)
        beat = WorkerHeartbeat.objects.filter(queue=queue).first()
        assert beat is not None, "the worker did not write the row within 60 s"
        assert beat.hostname
    finally:
        output = worker.stop()
    assert worker.returncode in (0, -15), output


def test_a_worker_whose_broker_connection_died_with_tasks_in_hand_does_not_crash_closing_it() -> None:
    # Given a broker channel holding an unacknowledged (late-ack) message whose connection was lost: kombu has
    # dropped its pool and the connection's client, as after Redis went away (found by the chaos suite, issue 8)
    from kombu import Connection

    connection = Connection(settings.CELERY_BROKER_URL)
    channel: Any = None
    try:
        channel = connection.default_channel
        channel.qos._delivered["tag-1"] = None  # what the channel holds for a message in hand
        channel._pool = None
        channel.connection.client = None

        # When the consumer closes the channel to reconnect, kombu restores the unacked messages through it
        result = channel.qos.restore_unacked()
    finally:
        if channel is not None:
            channel.qos._delivered.clear()

    # Then the failed restore is logged, not raised (it stopped the worker as an "unrecoverable error")
    assert result is None


@pytest.mark.parametrize("settle", ["ack", "reject"])
def test_a_task_finished_while_the_broker_was_away_is_settled_without_crashing_the_worker(settle: str) -> None:
    # Given a late-ack message in hand on a channel whose connection was lost while its task ran: kombu has dropped
    # the channel's pool and connection (found by the chaos suite, issue 8: Redis down with its data lost)
    from kombu import Connection

    connection = Connection(settings.CELERY_BROKER_URL)
    channel: Any = None
    try:
        channel = connection.default_channel
        qos = channel.qos
        qos._delivered["tag-1"] = None
        channel._pool = None
        channel.connection = None

        # When the event loop runs the task's acknowledgement (or rejection) once the consumer is back
        getattr(qos, settle)("tag-1")

        # Then it is logged, not raised (it stopped the worker as an "unrecoverable error"), and the channel no
        # longer counts the message as in hand: Redis redelivers it after the visibility timeout, if it kept it
        qos._flush()
        assert "tag-1" not in qos._delivered
    finally:
        if channel is not None:
            channel.qos._delivered.clear()
