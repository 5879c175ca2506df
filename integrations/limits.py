"""Provider rate limits in Redis, shared by every worker (issue 6, DESIGN §11).

- `slot(key, interval)`: at most one call per `interval` seconds per key (Slack: one message per second per
  channel) — SET NX PX, so two workers never both get the same second.
- `window(key, limit, seconds)`: at most `limit` calls in a fixed window (HubSpot: 100 per 10 s per account).
- `cooldown_set(key, seconds)` after a provider's 429; `cooldown_left(key)` is checked before every call, so
  no worker calls that provider for that tenant before its Retry-After.
A caller that is refused raises `RateLimited(retry_after)`: the run is rescheduled without using an attempt.
"""

from __future__ import annotations

import redis
from django.conf import settings

from plgapp.redis_client import redis_for


def _redis() -> redis.Redis:
    return redis_for(settings.REDIS_URL)


def _key(*parts: object) -> str:
    return "plg:limits:" + ":".join(str(part) for part in parts)


def cooldown_left(tenant_id: int, provider: str) -> float:
    """Seconds until the provider may be called again for this tenant after a 429 (0: now)."""
    left = _redis().pttl(_key("cooldown", tenant_id, provider))
    return max(int(left), 0) / 1000 if isinstance(left, int) else 0.0


def cooldown_set(tenant_id: int, provider: str, seconds: float) -> None:
    milliseconds = max(int(seconds * 1000), 1)
    key = _key("cooldown", tenant_id, provider)
    # Never shorten a cooldown another worker set from a longer Retry-After.
    if cooldown_left(tenant_id, provider) * 1000 < milliseconds:
        _redis().set(key, 1, px=milliseconds)


def slot(tenant_id: int, provider: str, scope: str, interval: float) -> float:
    """Take the next `interval`-long slot for this scope: 0 when taken, else seconds to wait."""
    key = _key("slot", tenant_id, provider, scope)
    if _redis().set(key, 1, nx=True, px=max(int(interval * 1000), 1)):
        return 0.0
    left = _redis().pttl(key)
    return max(int(left), 1) / 1000 if isinstance(left, int) and left > 0 else interval


def window(tenant_id: int, provider: str, scope: str, limit: int, seconds: int) -> float:
    """Count one call in the current `seconds`-long window: 0 when within `limit`, else seconds to wait."""
    key = _key("window", tenant_id, provider, scope)
    pipe = _redis().pipeline()
    pipe.incr(key)
    pipe.pttl(key)
    count, left = pipe.execute()
    if int(left) < 0:
        _redis().pexpire(key, seconds * 1000)
        left = seconds * 1000
    if int(count) <= limit:
        return 0.0
    return max(int(left), 1) / 1000


def lock_take(name: str, *, seconds: int) -> bool:
    """A short cross-process lock (e.g. one token refresh at a time); expires by itself if its holder dies."""
    return bool(_redis().set(_key("lock", name), 1, nx=True, ex=seconds))


def lock_release(name: str) -> None:
    _redis().delete(_key("lock", name))
