"""Liveness (/healthz: the process answers) and readiness (/readyz: database and Redis reachable)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from plgapp.selectors import worker_heartbeats

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_redis() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _worker_ages() -> dict[str, Any]:
    now = timezone.now()
    return {queue: round((now - beat.seen_at).total_seconds()) for queue, beat in worker_heartbeats().items()}


@never_cache
@require_GET
@transaction.non_atomic_requests
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
@transaction.non_atomic_requests
def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    for name, check in (("database", check_database), ("redis", check_redis)):
        try:
            check()
        except Exception as exc:  # any failure means "not ready": say which, log why (not for the public)
            logger.warning("readiness check failed", extra={"check": name, "error": f"{type(exc).__name__}: {exc}"})
            checks[name] = f"unavailable ({type(exc).__name__})"
        else:
            checks[name] = "ok"
    ready = all(value == "ok" for value in checks.values())
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": checks}
    if checks["database"] == "ok":
        # Informational: seconds since a worker last consumed from each queue (workers do not gate readiness).
        body["worker_heartbeat_age_seconds"] = _worker_ages()
    return JsonResponse(body, status=200 if ready else 503)
