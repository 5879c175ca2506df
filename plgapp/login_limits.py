"""Sign-in throttling (issue 8): failed sign-ins are counted in Redis per email and per client address; past the
limit, every attempt — even with the right password — is refused for the rest of the window, with Retry-After.
A success clears the email's count. Redis down: sign-in still works (logged), nobody is locked out by an outage."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse

from plgapp.redis_client import redis_for

logger = logging.getLogger(__name__)


def _keys(request: HttpRequest) -> dict[str, tuple[str, int]]:
    """{redis key: (what, limit)} for this attempt; emails are hashed (no addresses in Redis)."""
    email = str(request.POST.get("username", "")).strip().lower()
    address = str(request.META.get("REMOTE_ADDR", ""))
    keys = {f"plg:login:ip:{address}": ("address", settings.LOGIN_FAILURES_PER_ADDRESS)}
    if email:
        digest = hashlib.sha256(email.encode()).hexdigest()[:32]
        keys[f"plg:login:email:{digest}"] = ("email", settings.LOGIN_FAILURES_PER_EMAIL)
    return keys


def _locked_for(client: redis.Redis, keys: dict[str, tuple[str, int]]) -> int:
    """Seconds until sign-in is allowed again for these keys (0: allowed)."""
    wait = 0
    for key, (_what, limit) in keys.items():
        count = client.get(key)
        if count is not None and int(count) >= limit:
            wait = max(wait, int(client.ttl(key)) or 1)
    return wait


def _failed(client: redis.Redis, keys: dict[str, tuple[str, int]]) -> None:
    pipe = client.pipeline()
    for key in keys:  # the window starts with the first failure (SET NX EX: Redis 6 has no EXPIRE NX)
        pipe.set(key, 0, ex=settings.LOGIN_LOCK_SECONDS, nx=True)
        pipe.incr(key)
    pipe.execute()


class ThrottledLoginView(LoginView):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        keys = _keys(request)
        try:
            client = redis_for(settings.REDIS_URL, timeout=0.5)
            wait = _locked_for(client, keys)
        except redis.RedisError as exc:
            logger.warning("sign-in throttling unavailable", extra={"error": str(exc)})
            return super().post(request, *args, **kwargs)
        if wait:
            form = self.get_form()
            minutes = max(1, round(wait / 60))
            form.errors.clear()
            form.add_error(
                None, f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
            )
            response = self.render_to_response(self.get_context_data(form=form), status=429)
            response["Retry-After"] = str(wait)
            return response
        response = super().post(request, *args, **kwargs)
        try:
            if response.status_code == 200:  # the form came back: wrong email or password
                _failed(client, keys)
            else:
                client.delete(*[key for key, (what, _limit) in keys.items() if what == "email"])
        except redis.RedisError as exc:
            logger.warning("sign-in throttling unavailable", extra={"error": str(exc)})
        return response
