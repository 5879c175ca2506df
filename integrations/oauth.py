"""Connecting Slack and HubSpot with their OAuth flows, and keeping rotating tokens fresh (issue 6).

Install: `authorize_url` sends an admin to the provider with a signed `state` (tenant, user, provider, a nonce
also kept in their session, 10 minutes); `install_complete` checks all of it, exchanges the code
(Slack `oauth.v2.access`, HubSpot `/oauth/v1/token`) and stores one connection (Slack: one bot token per
workspace — installing the same workspace again updates its connection).

Refresh: `usable_credentials` returns credentials whose access token has at least REFRESH_MARGIN left. A
token near expiry is refreshed by one process at a time — a Redis lock per connection (Slack refresh tokens
are single-use: two processes refreshing at once would break the connection); the others wait for the new
token to be stored and read it.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core import signing
from django.urls import reverse
from slack_sdk.errors import SlackApiError

from integrations import clients, limits
from integrations.crypto import encrypt
from integrations.models import Connection, ConnectionMode, ConnectionStatus, Provider
from integrations.services import connection_mark_broken, credentials_of
from plgapp.models import Tenant

STATE_SALT = "plg.integrations.oauth"
STATE_MAX_AGE = 600
REFRESH_MARGIN = timedelta(minutes=5)
REFRESH_WAIT_SECONDS = 10.0
SESSION_NONCE = "oauth_nonce"


class OAuthError(Exception):
    """The install cannot complete; the message says why (shown to the admin)."""


def enabled(provider: str) -> bool:
    return bool(_client_id(provider))


def _client_id(provider: str) -> str:
    return str(settings.SLACK_CLIENT_ID if provider == Provider.SLACK else settings.HUBSPOT_CLIENT_ID)


def _client_secret(provider: str) -> str:
    return str(settings.SLACK_CLIENT_SECRET if provider == Provider.SLACK else settings.HUBSPOT_CLIENT_SECRET)


def redirect_uri(provider: str) -> str:
    return settings.PUBLIC_URL + reverse("oauth-callback", kwargs={"provider": provider})


def authorize_url(*, provider: str, tenant: Tenant, user_id: int, session: Any) -> str:
    if provider not in (Provider.SLACK, Provider.HUBSPOT):
        raise OAuthError(f"{provider} has no OAuth install")
    if not enabled(provider):
        raise OAuthError(f"no {provider} app is configured here: paste a token instead")
    nonce = secrets.token_urlsafe(16)
    session[SESSION_NONCE] = nonce
    state = signing.dumps({"t": tenant.pk, "u": user_id, "p": provider, "n": nonce}, salt=STATE_SALT)
    if provider == Provider.SLACK:
        query = {"client_id": _client_id(provider), "scope": settings.SLACK_BOT_SCOPES, "state": state,
                 "redirect_uri": redirect_uri(provider)}  # fmt: skip
        return f"{settings.SLACK_AUTHORIZE_URL}?{urlencode(query)}"
    query = {"client_id": _client_id(provider), "scope": settings.HUBSPOT_SCOPES, "state": state,
             "redirect_uri": redirect_uri(provider)}  # fmt: skip
    return f"{settings.HUBSPOT_AUTHORIZE_URL}?{urlencode(query)}"


def state_read(*, provider: str, state: str, user_id: int, session_nonce: str | None) -> int:
    """The tenant id the signed state names, after checking it is this install's (else OAuthError)."""
    try:
        values = signing.loads(state, salt=STATE_SALT, max_age=STATE_MAX_AGE)
    except signing.SignatureExpired:
        raise OAuthError("the install took more than 10 minutes: start again") from None
    except signing.BadSignature:
        raise OAuthError("the install link is not valid: start again from Settings") from None
    if (
        values.get("p") != provider
        or values.get("u") != user_id
        or not session_nonce
        or values.get("n") != session_nonce
    ):
        raise OAuthError("this install was started by someone else or in another browser: start again")
    return int(values["t"])


def _expires_at(expires_in: Any) -> str | None:
    if not expires_in:
        return None
    return (datetime.now(UTC) + timedelta(seconds=int(expires_in))).isoformat()


def install_complete(*, provider: str, code: str, tenant: Tenant, now: datetime) -> Connection:
    """Exchange the code and store the connection (Slack: the workspace's existing one is updated)."""
    if provider == Provider.SLACK:
        credentials, name, team = _slack_exchange({"code": code, "redirect_uri": redirect_uri(provider)})
        existing = next((c for c in Connection.objects.for_tenant(tenant).filter(provider=provider)
                         if credentials_of(c).get("team_id") == team), None)  # fmt: skip
    else:
        credentials = _hubspot_exchange({"grant_type": "authorization_code", "code": code,
                                         "redirect_uri": redirect_uri(provider)})  # fmt: skip
        name, existing = "HubSpot", None
    if existing is None:
        existing = Connection(tenant=tenant, provider=provider, mode=ConnectionMode.LIVE, created_at=now)
    existing.name, existing.credentials = name, encrypt(credentials)
    existing.status, existing.last_error, existing.last_checked_at = ConnectionStatus.OK, "", now
    existing.account_name = name
    existing.save()
    return existing


def _slack_exchange(arguments: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    client = clients.slack_client("")
    try:
        answer = client.oauth_v2_access(client_id=_client_id(Provider.SLACK),
                                        client_secret=_client_secret(Provider.SLACK), **arguments)  # fmt: skip
    except SlackApiError as exc:
        raise OAuthError(f"Slack refused the install: {exc.response.get('error')}") from None
    except OSError as exc:
        raise OAuthError(f"Slack could not be reached: {type(exc).__name__}") from None
    team = answer.get("team") or {}
    credentials = {
        "bot_token": answer["access_token"],
        "team_id": str(team.get("id") or ""),
        "bot_user_id": str(answer.get("bot_user_id") or ""),
        "scope": str(answer.get("scope") or ""),
    }
    if answer.get("refresh_token"):  # token rotation on
        credentials["refresh_token"] = answer["refresh_token"]
        credentials["expires_at"] = _expires_at(answer.get("expires_in"))
    return credentials, f"Slack: {team.get('name') or team.get('id') or 'workspace'}", credentials["team_id"]


def _hubspot_exchange(arguments: dict[str, Any]) -> dict[str, Any]:
    api = clients.hubspot_client("").oauth.tokens_api
    try:
        answer = api.create(client_id=_client_id(Provider.HUBSPOT), client_secret=_client_secret(Provider.HUBSPOT),
                            _request_timeout=clients.timeout(), **arguments)  # fmt: skip
    except Exception as exc:
        raise OAuthError(f"HubSpot refused the install: {clients.hubspot_error(exc).message}") from None
    return {"access_token": answer.access_token, "refresh_token": answer.refresh_token,
            "expires_at": _expires_at(answer.expires_in)}  # fmt: skip


def _near_expiry(credentials: dict[str, Any]) -> bool:
    expires_at = credentials.get("expires_at")
    if not expires_at or not credentials.get("refresh_token"):
        return False
    return datetime.fromisoformat(str(expires_at)) - datetime.now(UTC) < REFRESH_MARGIN


def usable_credentials(connection: Connection) -> dict[str, Any]:
    """The connection's credentials with an access token that will last the call (refreshed when needed)."""
    credentials = credentials_of(connection)
    if connection.mode == ConnectionMode.SANDBOX or not _near_expiry(credentials):
        return credentials
    deadline = time.monotonic() + REFRESH_WAIT_SECONDS
    while True:
        if limits.lock_take(f"oauth-refresh:{connection.pk}", seconds=30):
            try:
                connection.refresh_from_db(fields=["credentials"])
                credentials = credentials_of(connection)
                if _near_expiry(credentials):  # nobody refreshed it meanwhile
                    credentials = _refreshed(connection, credentials)
                return credentials
            finally:
                limits.lock_release(f"oauth-refresh:{connection.pk}")
        time.sleep(0.2)  # another process is refreshing: read what it stores
        connection.refresh_from_db(fields=["credentials"])
        credentials = credentials_of(connection)
        if not _near_expiry(credentials) or time.monotonic() > deadline:
            return credentials


def _refreshed(connection: Connection, credentials: dict[str, Any]) -> dict[str, Any]:
    try:
        if connection.provider == Provider.SLACK:
            new, _name, _team = _slack_exchange({"grant_type": "refresh_token",
                                                 "refresh_token": credentials["refresh_token"]})  # fmt: skip
            new = {**credentials, **new}
        else:
            new = {**credentials, **_hubspot_exchange({"grant_type": "refresh_token",
                                                       "refresh_token": credentials["refresh_token"]})}  # fmt: skip
    except OAuthError as exc:
        connection_mark_broken(tenant_id=connection.tenant_id, connection_id=connection.pk,
                               message=f"token refresh failed: {exc}", now=datetime.now(UTC))  # fmt: skip
        raise
    Connection.objects.for_tenant(connection.tenant_id).filter(pk=connection.pk).update(credentials=encrypt(new))
    return new
