"""Action types for tests that run in a real worker process (PLAYBOOK_ACTION_MODULES=tests.playbook_recorder):
each delivery is pushed to a Redis list, so the test — another process — sees exactly what was sent."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import redis
from django.conf import settings

from playbooks.actions import ActionContext, ActionType, register

KEY = "playbook-recorder:{tenant}"
SLOW_SECONDS = float(os.environ.get("PLAYBOOK_RECORDER_SLOW", "0"))


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _send(request: Mapping[str, Any], context: ActionContext) -> Mapping[str, Any]:
    if SLOW_SECONDS:
        import time

        time.sleep(SLOW_SECONDS)  # a slow provider: lets a test kill the worker mid-call
    entry = {"action": context.action_id, "run": context.run_id, "account": (context.account or {}).get("external_id"),
             "user": (context.user or {}).get("email"), "role": (context.membership or {}).get("role")}  # fmt: skip
    _client().rpush(KEY.format(tenant=context.tenant_id), json.dumps(entry))
    return {"ok": True}


def sent(tenant_id: int) -> list[dict[str, Any]]:
    return [json.loads(item) for item in _client().lrange(KEY.format(tenant=tenant_id), 0, -1)]


for _name, _idempotent in (("rec.notify", False), ("rec.list_add", True), ("rec.list_remove", True),
                           ("rec.task", False)):  # fmt: skip
    register(ActionType(name=_name, send=_send, idempotent=_idempotent, targets=frozenset({"entity", "users"})))
