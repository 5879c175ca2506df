"""The Celery app: JSON only, late acks, one message at a time, time limits, one queue per kind of work."""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

from celery import Celery, bootsteps, signals
from kombu import Queue

from plgapp.beat_schedule import BEAT_SCHEDULE

if TYPE_CHECKING:
    from plgapp.rls import Context

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "plgapp.settings")

QUEUES = ("ingest", "scoring", "playbooks", "actions", "default")

app = Celery("plgapp")
# Broker URL, eager mode and time limits come from Django settings (CELERY_* names), i.e. the environment.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=[Queue(name, routing_key=name) for name in QUEUES],
    task_default_queue="default",
    task_default_routing_key="default",
    task_routes={
        "accounts.tasks.*": {"queue": "ingest"},
        "signals.tasks.*": {"queue": "ingest"},
        "scoring.tasks.*": {"queue": "scoring"},
        # The executor sends to providers: its own queue, so slow providers never hold up evaluation.
        "playbooks.tasks.run_execute": {"queue": "actions"},
        "playbooks.tasks.enrollment_runs_execute": {"queue": "actions"},
        "playbooks.tasks.*": {"queue": "playbooks"},
        "integrations.tasks.*": {"queue": "actions"},
    },
    task_serializer="json",
    result_serializer="json",
    event_serializer="json",
    accept_content=["json"],
    # Tasks are idempotent, so a task whose worker died is redelivered rather than lost.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    # Redis redelivers unacked messages after the visibility timeout: keep it above the hard time limit.
    broker_transport_options={"visibility_timeout": 3600, "socket_connect_timeout": 2},
    broker_connection_timeout=2,
    broker_connection_retry_on_startup=True,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    worker_hijack_root_logger=False,
    timezone="UTC",
    enable_utc=True,
    beat_schedule=BEAT_SCHEDULE,
)
app.autodiscover_tasks()

RELEASE_INTERVAL_SECONDS = 0.25


class DueRunsRelease(bootsteps.StartStopStep):
    """Every worker hands due action runs to the executor a few times a second (playbooks/dispatch.py), so a
    retry goes out when its Retry-After ends without any Celery ETA task. A thread of its own, not the worker's
    event-loop timer: publishing from inside the consumer's loop can block it."""

    def __init__(self, worker: object, **kwargs: object) -> None:
        super().__init__(worker, **kwargs)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, worker: object) -> None:
        from playbooks.dispatch import release_tick

        def loop() -> None:
            while not self.stopping.wait(RELEASE_INTERVAL_SECONDS):
                release_tick()

        self.thread = threading.Thread(target=loop, name="due-runs-release", daemon=True)
        self.thread.start()

    def stop(self, worker: object) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


app.steps["worker"].add(DueRunsRelease)


def _guard_calls_through_a_dead_connection() -> None:
    """Keep the worker alive when Redis goes away while tasks are in hand (found by the chaos suite, issue 8).

    On a lost broker connection the consumer closes its channel, and kombu's Redis transport then goes on using that
    channel's connection, whose client is already gone. Its `QoS` raises an AttributeError ("'NoneType' object has
    no attribute 'hostname'" / "'client'"), which Celery reports as an unrecoverable error, and stops the worker, from:
    - `restore_unacked`: the channel's unacknowledged (late-ack) messages, restored as it closes;
    - `ack` / `reject`: a task that finished during the outage, acknowledged when the event loop runs again.

    Nothing can reach Redis through a dead connection anyway. The messages stay in Redis' unacked set (redelivered
    after the visibility timeout, to tasks that are safe to run twice) or are gone with Redis' data, and the sweeps
    redo their work from the database (DESIGN §2). So the failed call is logged, the channel's own bookkeeping of
    the message is done, and the consumer reconnects as usual."""
    from kombu.transport import redis as kombu_redis
    from kombu.transport.virtual import base as virtual

    def guarded(name: str, what: str, local: Callable[..., None] | None) -> None:
        original = getattr(kombu_redis.QoS, name)
        if getattr(original, "plg_guarded", False):
            return

        @wraps(original)
        def call(self: kombu_redis.QoS, *args: Any, **kwargs: Any) -> None:
            try:
                original(self, *args, **kwargs)
            except AttributeError as exc:
                logging.getLogger(__name__).warning(
                    f"{what}: the broker connection is gone (the sweeps redo their work)",
                    extra={"error": str(exc), "messages": len(getattr(self, "_delivered", ()))},
                )
                if local is not None:
                    local(self, *args, **kwargs)

        call.plg_guarded = True  # type: ignore[attr-defined]
        setattr(kombu_redis.QoS, name, call)

    guarded("restore_unacked", "unacked messages not restored", None)
    guarded("ack", "message not acknowledged in Redis", virtual.QoS.ack)
    # The channel's own part of a reject, without its requeue: that goes through the dead connection too.
    guarded("reject", "message not rejected in Redis", lambda qos, tag, requeue=False: virtual.QoS.ack(qos, tag))


_guard_calls_through_a_dead_connection()


# --- row-level security: each task runs with its tenant's database context (plgapp/rls.py) ---


def _task_database_context(task: object, args: tuple[object, ...] | None, kwargs: dict[str, object] | None) -> Context:
    """Tasks about one tenant take `tenant_id` and see that tenant's rows; system tasks (sweeps, dispatch) take
    none and see every tenant's. A tenant task called without a usable tenant id sees nothing."""
    from plgapp import rls

    parameters = list(inspect.signature(task.run).parameters)  # type: ignore[attr-defined]
    if "tenant_id" not in parameters:
        return rls.ALL_TENANTS
    value = (kwargs or {}).get("tenant_id")
    position = parameters.index("tenant_id")
    if value is None and args is not None and len(args) > position:
        value = args[position]
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        return rls.NO_TENANT
    return rls.tenant_context(int(value))


@signals.task_prerun.connect
def _task_database_context_enter(task: object, args: tuple[object, ...], kwargs: dict[str, object],
                                 **_: object) -> None:  # fmt: skip
    from plgapp import rls

    task.request.plg_db_previous = rls.swap(_task_database_context(task, args, kwargs))  # type: ignore[attr-defined]


@signals.task_postrun.connect
def _task_database_context_leave(task: object, **_: object) -> None:
    from django.db import DatabaseError, connection

    from plgapp import rls

    previous = getattr(task.request, "plg_db_previous", rls.NO_TENANT)  # type: ignore[attr-defined]
    try:
        rls.restore(previous)
    except DatabaseError:
        connection.close()  # a connection we could not clear is not reused
