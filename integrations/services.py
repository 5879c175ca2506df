"""Connections: create with validated credentials (encrypted at rest), test, delete, and find the one an
action uses (DESIGN §7: one active connection per provider per tenant unless an action names its own)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from slack_sdk.errors import SlackApiError

from integrations import clients
from integrations.crypto import CredentialsUnreadable, decrypt, encrypt
from integrations.models import Connection, ConnectionMode, ConnectionStatus, Provider
from plgapp.models import Tenant

# provider -> credential keys it needs (a live connection), with what each must look like
CREDENTIAL_KEYS: dict[str, tuple[str, ...]] = {
    Provider.SLACK: ("bot_token",),
    Provider.HUBSPOT: ("access_token",),
    Provider.WEBHOOK: ("url", "secret"),
}
MIN_WEBHOOK_SECRET = 16


class ConnectionInvalid(Exception):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in fields.items()))
        self.fields = fields


def _credential_errors(provider: str, credentials: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    wanted = CREDENTIAL_KEYS[provider]
    for key in sorted(set(credentials) - set(wanted) - _optional(provider)):
        errors[f"credentials.{key}"] = f"not a {provider} credential (expected {', '.join(wanted)})"
    for key in wanted:
        value = credentials.get(key)
        if not isinstance(value, str) or not value.strip():
            errors[f"credentials.{key}"] = "required, a non-empty text"
    if errors:
        return errors
    if provider == Provider.SLACK and not credentials["bot_token"].startswith(("xoxb-", "xoxe.xoxb-")):
        errors["credentials.bot_token"] = "a Slack bot token starts with xoxb- (user tokens are not accepted)"  # noqa: S105
    if provider == Provider.WEBHOOK:
        parts = urlsplit(credentials["url"])
        if parts.scheme not in ("http", "https") or not parts.netloc:
            errors["credentials.url"] = "an http(s) URL, e.g. https://example.com/hooks/plg"
        if len(credentials["secret"]) < MIN_WEBHOOK_SECRET:
            errors["credentials.secret"] = f"at least {MIN_WEBHOOK_SECRET} characters: it signs every call"
    return errors


def _optional(provider: str) -> set[str]:
    """Credentials an OAuth install adds beside the required ones."""
    if provider in (Provider.SLACK, Provider.HUBSPOT):
        return {"refresh_token", "expires_at", "scope", "team_id", "bot_user_id", "hub_id"}
    return set()


def connection_create(
    *, tenant: Tenant, provider: str, name: str, mode: str, credentials: dict[str, Any], settings: dict[str, Any],
    now: datetime,
) -> Connection:  # fmt: skip
    if provider not in Provider.values:
        raise ConnectionInvalid({"provider": f"one of {', '.join(Provider.values)}"})
    if mode not in ConnectionMode.values:
        raise ConnectionInvalid({"mode": f"one of {', '.join(ConnectionMode.values)}"})
    if mode == ConnectionMode.SANDBOX:
        if credentials:
            raise ConnectionInvalid({"credentials": "a sandbox connection sends nothing and takes no credentials"})
    else:
        errors = _credential_errors(provider, credentials)
        if errors:
            raise ConnectionInvalid(errors)
    return Connection.objects.for_tenant(tenant).create(
        provider=provider, name=name, mode=mode, settings=settings, created_at=now,
        credentials=encrypt(credentials) if credentials else "",
    )  # fmt: skip


def credentials_of(connection: Connection) -> dict[str, Any]:
    return decrypt(connection.credentials)


def credential_hints(connection: Connection) -> dict[str, str]:
    """What the UI and API show of the credentials: each key with the last characters of its value."""
    try:
        values = credentials_of(connection)
    except CredentialsUnreadable:
        return {}
    shown = {"url"}  # not secret, and needed to recognise a webhook
    return {
        key: (value if key in shown else f"…{value[-4:]}" if len(value) > 8 else "…")
        for key, value in values.items()
        if isinstance(value, str)
    }


def _probe(connection: Connection) -> tuple[clients.Outcome, str]:
    """One harmless call with the connection's credentials: (outcome, account name). HubSpot's portal id and UI
    domain are kept in the connection's settings (links to records)."""
    from integrations.oauth import OAuthError, usable_credentials  # oauth builds on this module

    try:
        credentials = usable_credentials(connection)
    except OAuthError as exc:
        return clients.Outcome("auth", str(exc)), ""
    if connection.provider == Provider.SLACK:
        try:
            answer = clients.slack_client(credentials["bot_token"]).auth_test()
        except SlackApiError as exc:
            return clients.slack_error(exc), ""
        except OSError as exc:  # timeouts and refused connections
            return clients.Outcome("unavailable", f"Slack could not be reached: {type(exc).__name__}"), ""
        return clients.Outcome("ok"), str(answer.get("team") or "")
    if connection.provider == Provider.HUBSPOT:
        owners = clients.hubspot_client(credentials["access_token"]).crm.owners.owners_api
        try:
            owners.get_page(limit=1, _request_timeout=clients.timeout())
        except Exception as exc:
            return clients.hubspot_error(exc), ""
        details = clients.hubspot_account_details(credentials["access_token"])
        if details.get("portalId"):
            connection.settings = {**connection.settings, "portal_id": str(details["portalId"]),
                                   "ui_domain": str(details.get("uiDomain") or "app.hubspot.com")}  # fmt: skip
            return clients.Outcome("ok"), f"HubSpot portal {details['portalId']}"
        return clients.Outcome("ok"), ""
    outcome = clients.webhook_post(
        credentials["url"], credentials["secret"], {"type": "ping", "connection": connection.pk}
    )
    return outcome, urlsplit(credentials["url"]).netloc


def connection_test(*, tenant: Tenant, connection_id: int, now: datetime) -> Connection:
    """Check the connection against its provider and record the result: `ok`, or `broken` when the
    credentials are refused (actions stop using it); other failures keep the status and say why."""
    connection = Connection.objects.for_tenant(tenant).get(pk=connection_id)
    if connection.mode == ConnectionMode.SANDBOX:
        outcome, account = clients.Outcome("ok", "sandbox: calls are recorded, nothing is sent"), "sandbox"
    else:
        try:
            outcome, account = _probe(connection)
        except CredentialsUnreadable as exc:
            outcome, account = clients.Outcome("auth", str(exc)), ""
    connection.last_checked_at = now
    if outcome.kind == "ok":
        connection.status, connection.last_error = ConnectionStatus.OK, ""
        connection.account_name = account or connection.account_name
    elif outcome.kind == "auth":
        connection.status, connection.last_error = ConnectionStatus.BROKEN, outcome.message
    else:
        connection.last_error = outcome.message
    connection.save(update_fields=["status", "last_error", "last_checked_at", "account_name", "settings"])
    return connection


def connection_mark_broken(*, tenant_id: int, connection_id: int, message: str, now: datetime) -> None:
    """An action's call was refused for its credentials: every worker stops using the connection."""
    Connection.objects.for_tenant(tenant_id).filter(pk=connection_id).update(
        status=ConnectionStatus.BROKEN, last_error=message, last_checked_at=now
    )


def connection_delete(*, tenant: Tenant, connection_id: int) -> None:
    with transaction.atomic():
        Connection.objects.for_tenant(tenant).filter(pk=connection_id).delete()


class NoConnection(Exception):
    pass


def connection_for(*, tenant_id: int, provider: str, connection_id: int | None = None) -> Connection:
    """The connection an action of `provider` uses: the one it names, else the tenant's only one."""
    connections = Connection.objects.for_tenant(tenant_id).filter(provider=provider)
    if connection_id is not None:
        found = connections.filter(pk=connection_id).first()
        if found is None:
            raise NoConnection(f"no {provider} connection {connection_id}")
        return found
    found_all = list(connections.order_by("pk")[:2])
    if not found_all:
        raise NoConnection(f"no {provider} connection: connect {Provider(provider).label} in Settings")
    if len(found_all) > 1:
        raise NoConnection(f"several {provider} connections: the action must name its connection_id")
    return found_all[0]
