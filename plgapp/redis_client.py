"""One Redis client per URL per process (connection pools are thread-safe; forked children get their own)."""

from __future__ import annotations

import os
import threading

import redis

_clients: dict[tuple[str, int], redis.Redis] = {}
_lock = threading.Lock()


def redis_for(url: str, *, timeout: float = 2.0) -> redis.Redis:
    key = (url, os.getpid())
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
            _clients[key] = client
        return client
