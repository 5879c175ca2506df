"""Sending through a connection: everything between a prepared request and the provider (issue 6).

Each function takes plain data and answers an `Outcome` (ok / auth / rate_limited / invalid / unavailable);
the playbook executor maps it onto its retry rules. Before any call: the connection must not be broken, the
tenant's cooldown for the provider (set on each 429, shared by all workers) must have passed, and the
provider's own limit must have room (Slack: one message per second per channel). A sandbox connection
records the call instead of making it. An auth refusal marks the connection broken for every worker.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone
from slack_sdk.errors import SlackApiError

from integrations import clients, limits
from integrations.crypto import CredentialsUnreadable
from integrations.models import Connection, ConnectionMode, ConnectionStatus, Provider, SandboxCall
from integrations.oauth import OAuthError, usable_credentials
from integrations.services import NoConnection, connection_for, connection_mark_broken, credentials_of

SLACK_COLORS = ("good", "warning", "danger")


def resolve(tenant_id: int, provider: str, connection_id: int | None) -> tuple[Connection | None, clients.Outcome]:
    """The connection to send through, or why there is none usable (a permanent refusal)."""
    try:
        connection = connection_for(tenant_id=tenant_id, provider=provider, connection_id=connection_id)
    except NoConnection as exc:
        return None, clients.Outcome("invalid", str(exc))
    if connection.status == ConnectionStatus.BROKEN:
        return None, clients.Outcome("auth", f"the {provider} connection is broken: {connection.last_error}")
    return connection, clients.Outcome("ok")


def _waiting(tenant_id: int, provider: str, scope: str | None = None, interval: float = 0.0) -> clients.Outcome | None:
    left = limits.cooldown_left(tenant_id, provider)
    if left > 0:
        return clients.Outcome("rate_limited", f"{provider} asked us to wait", retry_after=left)
    if scope is not None:
        wait = limits.slot(tenant_id, provider, scope, interval)
        if wait > 0:
            return clients.Outcome("rate_limited", f"{provider} limit for {scope}", retry_after=wait)
    return None


def _after(connection: Connection, outcome: clients.Outcome) -> clients.Outcome:
    if outcome.kind == "rate_limited":
        limits.cooldown_set(connection.tenant_id, connection.provider, outcome.retry_after or 1.0)
    elif outcome.kind == "auth":
        connection_mark_broken(tenant_id=connection.tenant_id, connection_id=connection.pk, message=outcome.message,
                               now=timezone.now())  # fmt: skip
    return outcome


def _sandboxed(connection: Connection, operation: str, request: dict[str, Any], run_id: int | None) -> clients.Outcome:
    call = SandboxCall.objects.for_tenant(connection.tenant_id).create(
        connection=connection, operation=operation, request=request, run_id=run_id
    )
    return clients.Outcome("ok", body={"sandbox": True, "sandbox_call": call.pk})


def slack_attachments(text: str, color: str | None) -> list[dict[str, Any]] | None:
    return [{"color": color, "text": text, "fallback": text}] if color else None


SLACK_MARKER_EVENT = "plg_action_run"


def slack_post(*, tenant_id: int, connection_id: int | None, channel: str, text: str, color: str | None,
               run_id: int | None = None, marker: str | None = None) -> clients.Outcome:  # fmt: skip
    """chat.postMessage with top-level `text` always, plus a coloured attachment when a colour is set. A `marker`
    travels in the message's metadata (invisible to readers), so `slack_find` can tell later whether it was posted."""
    connection, refused = resolve(tenant_id, Provider.SLACK, connection_id)
    if connection is None:
        return refused
    request = {"channel": channel, "text": text, "attachments": slack_attachments(text, color)}
    if marker:
        request["marker"] = marker
    if connection.mode == ConnectionMode.SANDBOX:
        return _sandboxed(connection, "chat.postMessage", request, run_id)
    interval = 1.0 / settings.SLACK_MESSAGES_PER_SECOND_PER_CHANNEL
    waiting = _waiting(tenant_id, Provider.SLACK, f"channel:{connection.pk}:{channel}", interval)
    if waiting is not None:
        return waiting
    try:
        token = usable_credentials(connection)["bot_token"]
    except OAuthError as exc:
        return clients.Outcome("auth", str(exc))
    except (CredentialsUnreadable, KeyError) as exc:
        return _after(connection, clients.Outcome("auth", f"unreadable credentials: {exc}"))
    try:
        metadata = {"event_type": SLACK_MARKER_EVENT, "event_payload": {"marker": marker}} if marker else None
        answer = clients.slack_client(token).chat_postMessage(
            channel=channel, text=text, attachments=request["attachments"], metadata=metadata
        )
    except SlackApiError as exc:
        return _after(connection, clients.slack_error(exc))
    except TimeoutError:  # sent, but no answer: it may have been posted, and a post is not idempotent
        return clients.Outcome("ambiguous", "Slack did not answer in time; not re-sent to avoid a duplicate post")
    except OSError as exc:  # refused or unreachable: nothing was posted
        return clients.Outcome("unavailable", f"Slack could not be reached: {type(exc).__name__}")
    return clients.Outcome("ok", body={"channel": answer.get("channel"), "ts": answer.get("ts")})


def slack_find(*, tenant_id: int, connection_id: int | None, channel: str, marker: str) -> dict[str, Any] | None:
    """The message posted with `marker` (channel, ts) among the channel's latest 200, or None. Raises
    `clients.OutcomeError`-like `LookupFailed` when Slack cannot answer (then nobody knows: the caller retries)."""
    connection, refused = resolve(tenant_id, Provider.SLACK, connection_id)
    if connection is None:
        raise LookupFailed(refused.message)
    if connection.mode == ConnectionMode.SANDBOX:
        found = SandboxCall.objects.for_tenant(tenant_id).filter(connection=connection, operation="chat.postMessage",
                                                                 request__marker=marker).first()  # fmt: skip
        return {"sandbox_call": found.pk} if found else None
    try:
        client = clients.slack_client(usable_credentials(connection)["bot_token"])
        channel_id = channel
        if not channel.startswith(("C", "G")) or channel.startswith("#"):
            name = channel.lstrip("#")
            listed = client.conversations_list(types="public_channel,private_channel", limit=1000)
            matches = [c["id"] for c in listed.get("channels") or [] if c.get("name") == name]
            if not matches:
                return None
            channel_id = matches[0]
        history = client.conversations_history(channel=channel_id, limit=200, include_all_metadata=True)
    except (SlackApiError, OAuthError, CredentialsUnreadable, KeyError, OSError) as exc:
        raise LookupFailed(f"Slack could not be asked whether the message was posted: {type(exc).__name__}") from None
    for message in history.get("messages") or []:
        metadata = message.get("metadata") or {}
        if (
            metadata.get("event_type") == SLACK_MARKER_EVENT
            and (metadata.get("event_payload") or {}).get("marker") == marker
        ):
            return {"channel": channel_id, "ts": message.get("ts")}
    return None


class LookupFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def webhook_deliver(*, tenant_id: int, connection_id: int | None, payload: dict[str, Any],
                    run_id: int | None = None) -> clients.Outcome:  # fmt: skip
    connection, refused = resolve(tenant_id, Provider.WEBHOOK, connection_id)
    if connection is None:
        return refused
    if connection.mode == ConnectionMode.SANDBOX:
        return _sandboxed(connection, "webhook.post", payload, run_id)
    waiting = _waiting(tenant_id, Provider.WEBHOOK)
    if waiting is not None:
        return waiting
    try:
        credentials = credentials_of(connection)
    except CredentialsUnreadable as exc:
        return _after(connection, clients.Outcome("auth", str(exc)))
    return _after(connection, clients.webhook_post(credentials["url"], credentials["secret"], payload))


def account_url(tenant_slug: str, account_id: str | int) -> str:
    return f"{settings.PUBLIC_URL}/t/{tenant_slug}/accounts/{account_id}/"


def user_url(tenant_slug: str, user_id: str | int) -> str:
    return f"{settings.PUBLIC_URL}/t/{tenant_slug}/users/{user_id}/"
