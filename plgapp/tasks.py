"""Celery tasks of the tenancy core. Thin: take ids/names, call a service, return."""

from __future__ import annotations

import socket

from celery import shared_task

from plgapp.services import heartbeat_record


@shared_task(name="plgapp.tasks.heartbeat_record")
def heartbeat_record_task(queue: str) -> None:
    """Runs on `queue`: records that a worker consumed from it (shown on /readyz and the overview page)."""
    heartbeat_record(queue=queue, hostname=socket.gethostname())


@shared_task(name="plgapp.tasks.heartbeats_dispatch")
def heartbeats_dispatch() -> None:
    from plgapp.celery import QUEUES

    for queue in QUEUES:
        heartbeat_record_task.apply_async(args=(queue,), queue=queue, expires=55)
