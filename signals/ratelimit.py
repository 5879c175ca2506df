"""Per-key request rate limits in Redis: one atomic script per request (fixed one-minute windows).

If Redis is unreachable the limiter lets requests through: ingestion depends on PostgreSQL, not on
the limiter, and losing data because a rate counter is down would be the wrong trade.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import redis
from django.conf import settings

logger = logging.getLogger(__name__)
WINDOW_MS = 60_000
_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('PTTL', KEYS[1])}
"""
_lock = threading.Lock()
_clients: dict[str, tuple[redis.Redis, object]] = {}


@dataclass(frozen=True)
class RateLimit:
    limit: int
    remaining: int
    retry_after: int  # seconds until the window resets

    @property
    def exceeded(self) -> bool:
        return self.remaining < 0


def _redis() -> tuple[redis.Redis, object]:
    url = settings.REDIS_URL
    with _lock:
        if url not in _clients:
            client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
            _clients[url] = (client, client.register_script(_SCRIPT))
        return _clients[url]


def rate_limit_hit(*, key_id: str, limit: int) -> RateLimit:
    """Count one request for the key; `remaining` < 0 means over the limit."""
    try:
        script = _redis()[1]
        count, ttl_ms = script(keys=[f"plg:rl:{key_id}"], args=[WINDOW_MS])  # type: ignore[operator]
    except redis.RedisError as exc:
        logger.warning("rate limiter unavailable, letting the request through", extra={"error": str(exc)})
        return RateLimit(limit=limit, remaining=limit, retry_after=0)
    retry_after = max(1, math.ceil(max(int(ttl_ms), 0) / 1000))
    return RateLimit(limit=limit, remaining=limit - int(count), retry_after=retry_after)


def default_limit() -> int:
    return int(getattr(settings, "INGEST_RATE_LIMIT_PER_MINUTE", 6000))
