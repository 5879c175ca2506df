"""The official SDK clients, pointed at the configured base URLs, with a timeout on every call and no retries
that sleep in a worker (a 429 becomes a rescheduled attempt at `Retry-After`, DESIGN §11)."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import hubspot
import orjson
import requests
import urllib3
from django.conf import settings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from urllib3.util.retry import Retry

# Slack answers these with HTTP 200 and ok=false: the token will not work until someone fixes the connection.
SLACK_AUTH_ERRORS = frozenset({
    "not_authed", "invalid_auth", "token_revoked", "token_expired", "account_inactive", "no_permission",
    "missing_scope", "not_allowed_token_type", "team_access_not_granted", "ekm_access_denied",
})  # fmt: skip


def slack_client(token: str) -> WebClient:
    base = settings.SLACK_API_URL if settings.SLACK_API_URL.endswith("/") else settings.SLACK_API_URL + "/"
    return WebClient(token=token, base_url=base, timeout=settings.INTEGRATION_TIMEOUT_SECONDS, retry_handlers=[])


def hubspot_client(access_token: str) -> hubspot.Client:
    url = settings.HUBSPOT_API_URL.rstrip("/")
    return hubspot.Client.create(access_token=access_token, host=url, base_url=url, retry=Retry(total=False))


def timeout() -> float:
    return float(settings.INTEGRATION_TIMEOUT_SECONDS)


def hubspot_account_details(access_token: str) -> dict[str, Any]:
    """GET /account-info/v3/details (portal id, UI domain); the SDK has no client for it. {} when unavailable:
    only links to records need it."""
    url = settings.HUBSPOT_API_URL.rstrip("/") + "/account-info/v3/details"
    try:
        answer = requests.get(url, headers={"Authorization": f"Bearer {access_token}"}, timeout=timeout())
        return dict(answer.json()) if answer.ok else {}
    except (requests.RequestException, ValueError):
        return {}


@dataclass(frozen=True)
class Outcome:
    """What a call to a provider came to, classified (DESIGN §11 / issue 6)."""

    # "ok" | "auth" (credentials refused) | "rate_limited" | "invalid" (4xx) | "unavailable" (5xx, network: not
    # delivered) | "ambiguous" (no answer: maybe delivered)
    kind: str
    message: str = ""
    retry_after: float | None = None
    body: Any = None


def slack_error(exc: SlackApiError) -> Outcome:
    response = exc.response
    error = str(response.get("error", "")) if response is not None else ""
    status = response.status_code if response is not None else 0
    if status == 429 or error == "ratelimited":
        headers = response.headers if response is not None else {}
        raw = headers.get("Retry-After") or headers.get("retry-after")
        return Outcome("rate_limited", "Slack rate limit", retry_after=float(raw) if raw else 1.0)
    if error in SLACK_AUTH_ERRORS:
        return Outcome("auth", f"Slack refused the token: {error}")
    if status >= 500:
        return Outcome("unavailable", f"Slack answered {status}")
    return Outcome("invalid", f"Slack refused the request: {error or status}")


def http_status_outcome(provider: str, status: int, body: Any, headers: Any) -> Outcome:
    """HubSpot and webhooks: classify an HTTP answer by status (and HubSpot's JSON error body)."""
    message = ""
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("category") or "")
    if status == 429:
        raw = headers.get("Retry-After") if headers is not None else None
        return Outcome("rate_limited", f"{provider} rate limit", retry_after=float(raw) if raw else 10.0, body=body)
    if status in (401, 403):
        return Outcome("auth", f"{provider} refused the credentials ({status}){': ' + message if message else ''}")
    if status >= 500:
        return Outcome("unavailable", f"{provider} answered {status}", body=body)
    return Outcome("invalid", f"{provider} refused the request ({status}){': ' + message if message else ''}",
                   body=body)  # fmt: skip


def hubspot_error(exc: Any) -> Outcome:
    """An ApiException of any hubspot sub-package (they share no base class)."""
    status = int(getattr(exc, "status", 0) or 0)
    raw = getattr(exc, "body", None)
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    if not status:
        return Outcome("unavailable", f"HubSpot could not be reached: {exc}")
    return http_status_outcome("HubSpot", status, body, getattr(exc, "headers", None))


# --- webhooks --------------------------------------------------------------------------------------------

SIGNATURE_HEADER = "X-PLG-Signature"
TIMESTAMP_HEADER = "X-PLG-Timestamp"
_http = urllib3.PoolManager(retries=False)


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>"): receivers check it and the timestamp's
    age (replays) before trusting a call."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_post(url: str, secret: str, payload: Any) -> Outcome:
    body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)  # the same bytes on every retry
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "plg-webhooks/1",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: webhook_signature(secret, timestamp, body),
    }
    try:
        response = _http.request("POST", url, body=body, headers=headers, timeout=timeout(), redirect=False)
    except urllib3.exceptions.HTTPError as exc:
        return Outcome("unavailable", f"the webhook could not be reached: {type(exc).__name__}")
    text = response.data[:2000].decode(errors="replace")
    if 200 <= response.status < 300:
        return Outcome("ok", body={"status": response.status, "body": text})
    outcome = http_status_outcome("The webhook", response.status, None, response.headers)
    return Outcome(outcome.kind, outcome.message, outcome.retry_after, {"status": response.status, "body": text})
