"""Hand-off of action runs to the executor: on time and fair between tenants (ADR 0010).

Runs to execute are not sent to Celery directly. They are scheduled in Redis — one sorted set per tenant,
scored by the moment the run is due — and *released* into the `actions` queue only while that queue is short,
one run per tenant in turn (the tenant served longest ago first). So:

- a retry waits in Redis until its `Retry-After` / backoff is over, not as a Celery ETA task (which the
  worker holds unacknowledged and can sit on — ADR 0009);
- a tenant with ten thousand runs due cannot fill the queue: another tenant's run is at most one short
  queue behind, not behind the whole backlog.

Releases happen right after scheduling (no added latency when the queue is short) and from every worker's
timer a few times a second. The database stays the truth: the minutely sweep re-schedules every due run, so
a run lost from Redis (restart with data loss, a crash between release and send) is only late, never lost,
and a run released twice is claimed once (the executor's compare-and-set).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from kombu.exceptions import OperationalError

from plgapp.redis_client import redis_for

logger = logging.getLogger(__name__)

TENANTS_KEY = "plg:runs:tenants"  # sorted set: tenant id → when it was last served (a counter)
DUE_PREFIX = "plg:runs:due:"  # + tenant id: sorted set run id → due time (epoch seconds)
ACTIONS_QUEUE = "actions"

# Round-robin over the tenants with due runs, one run each per turn, until `room` runs are taken.
_RELEASE = """
local now, room, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local released = {}
local tenants = redis.call('ZRANGE', KEYS[1], 0, -1)
local last = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local served = tonumber(last[2] or 0)
local progress = true
while room > 0 and progress do
  progress = false
  for _, tenant in ipairs(tenants) do
    if room <= 0 then break end
    local key = prefix .. tenant
    local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, 1)
    if #due > 0 then
      redis.call('ZREM', key, due[1])
      released[#released + 1] = tenant
      released[#released + 1] = due[1]
      served = served + 1
      redis.call('ZADD', KEYS[1], served, tenant)
      room = room - 1
      progress = true
    elseif redis.call('EXISTS', key) == 0 then
      redis.call('ZREM', KEYS[1], tenant)
    end
  end
end
return released
"""

_last_warning = 0.0


def _redis() -> redis.Redis:
    return redis_for(settings.REDIS_URL)


_scripts: dict[int, Any] = {}


def _release_script() -> Any:
    """The release script, registered once per client (it is called after every executed run)."""
    client = _redis()
    if id(client) not in _scripts:
        _scripts[id(client)] = client.register_script(_RELEASE)
    return _scripts[id(client)]


EVALUATION_IDS_PREFIX = "plg:eval:ids:"  # + tenant:playbook: set of entity ids waiting for an evaluation
EVALUATION_QUEUED_PREFIX = "plg:eval:queued:"  # + tenant:playbook: set while an evaluation task waits, not started
# A task lost on its way (a worker killed, a failed send) blocks new ones at most this long; the sweep runs anyway.
# Short, because a backlog longer than this only costs a duplicate (idempotent) evaluation.
EVALUATION_QUEUED_SECONDS = 10


def evaluation_hint(tenant_id: int, playbook_id: int, entity_ids: Iterable[int]) -> bool:
    """Add entity ids to the playbook's waiting set; True when no evaluation task waits (the caller sends one).

    Changes coalesce while the queue is busy: one evaluation of every id gathered meanwhile instead of one task per
    processing batch, which piled up by thousands under load (docs/benchmarks.md, event -> Slack)."""
    ids = [str(pk) for pk in entity_ids]
    key = f"{tenant_id}:{playbook_id}"
    pipe = _redis().pipeline(transaction=True)
    if ids:
        pipe.sadd(f"{EVALUATION_IDS_PREFIX}{key}", *ids)
        pipe.expire(f"{EVALUATION_IDS_PREFIX}{key}", 3600)
    pipe.set(f"{EVALUATION_QUEUED_PREFIX}{key}", "1", nx=True, ex=EVALUATION_QUEUED_SECONDS)
    return bool(pipe.execute()[-1])


def evaluation_unhint(tenant_id: int, playbook_id: int) -> None:
    """The task could not be sent: let the next change try again."""
    _redis().delete(f"{EVALUATION_QUEUED_PREFIX}{tenant_id}:{playbook_id}")


def evaluation_take(tenant_id: int, playbook_id: int) -> list[int]:
    """For the evaluation task as it starts: the waiting ids, emptied; changes from now on queue the next task."""
    key = f"{tenant_id}:{playbook_id}"
    pipe = _redis().pipeline(transaction=True)
    pipe.delete(f"{EVALUATION_QUEUED_PREFIX}{key}")
    pipe.smembers(f"{EVALUATION_IDS_PREFIX}{key}")
    pipe.delete(f"{EVALUATION_IDS_PREFIX}{key}")
    return sorted(int(pk) for pk in pipe.execute()[1])


def runs_schedule(tenant_id: int, run_ids: Iterable[int], due: datetime | float | None = None) -> None:
    """Due at `due` (a datetime or epoch seconds; now when None). A run already scheduled moves to `due`."""
    at = time.time() if due is None else due.timestamp() if isinstance(due, datetime) else float(due)
    members = {str(run_id): at for run_id in run_ids}
    if not members:
        return
    pipe = _redis().pipeline()
    pipe.zadd(f"{DUE_PREFIX}{tenant_id}", members)
    pipe.zadd(TENANTS_KEY, {str(tenant_id): 0}, nx=True)
    pipe.execute()


def runs_release(*, room: int | None = None) -> int:
    """Send due runs to the executor while the `actions` queue has room; returns how many were sent."""
    from celery import current_app

    if room is None:
        room = settings.PLAYBOOK_ACTIONS_QUEUE_DEPTH - int(redis_for(settings.CELERY_BROKER_URL).llen(ACTIONS_QUEUE))
    if room <= 0:
        return 0
    released = _release_script()(keys=[TENANTS_KEY], args=[repr(time.time()), room, DUE_PREFIX])
    pairs = [(int(released[i]), int(released[i + 1])) for i in range(0, len(released), 2)]
    for tenant_id, run_id in pairs:
        current_app.send_task("playbooks.tasks.run_execute", args=(tenant_id, run_id))
    return len(pairs)


def runs_schedule_and_release(tenant_id: int, run_ids: Iterable[int], due: datetime | float | None = None) -> None:
    """Schedule, then release what is due now. Redis being down only delays the runs: the sweep re-schedules
    every due run from the database."""
    try:
        runs_schedule(tenant_id, run_ids, due)
        runs_release()
    except (redis.RedisError, OperationalError) as exc:
        _warn("runs not scheduled now (the sweep will)", exc)


def release_tick() -> None:
    """A worker's timer: release runs that became due, or that wait for room in the queue."""
    try:
        runs_release()
    except (redis.RedisError, OperationalError) as exc:
        _warn("due runs not released", exc)


def _warn(message: str, exc: Exception) -> None:
    global _last_warning
    if time.monotonic() - _last_warning > 30:  # Redis down: say so, but not four times a second
        _last_warning = time.monotonic()
        logger.warning(message, extra={"error": str(exc)})
