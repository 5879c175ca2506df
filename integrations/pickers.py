"""What the playbook builder offers to pick from a connection (issue 6): Slack channels, HubSpot lists that
accept members (MANUAL and SNAPSHOT), HubSpot owners. Each answers (items, error): a refused token marks the
connection broken, as any other call does. Sandbox connections offer sample items so the demo can be built."""

from __future__ import annotations

from typing import Any

from hubspot.crm import lists as hubspot_lists
from slack_sdk.errors import SlackApiError

from integrations import clients
from integrations.crypto import CredentialsUnreadable
from integrations.delivery import _after
from integrations.models import Connection, ConnectionMode, Provider
from integrations.oauth import OAuthError, usable_credentials

MAX_PAGES = 20  # 4,000 channels or lists: more than a picker can show
SANDBOX: dict[str, list[dict[str, Any]]] = {
    "channels": [{"id": "CSANDBOX01", "name": "sales", "is_private": False},
                 {"id": "CSANDBOX02", "name": "customer-success", "is_private": False}],
    "lists": [{"id": "9001", "name": "PQLs (sandbox)", "processing_type": "MANUAL"}],
    "owners": [{"id": "7001", "email": "owner@sandbox.test", "name": "Sandbox Owner"}],
}  # fmt: skip


class PickerError(Exception):
    pass


def _token(connection: Connection, key: str) -> str:
    try:
        return str(usable_credentials(connection)[key])
    except (CredentialsUnreadable, KeyError, OAuthError) as exc:
        raise PickerError(f"unreadable credentials: {exc}") from None


def slack_channels(connection: Connection) -> list[dict[str, Any]]:
    if connection.provider != Provider.SLACK:
        raise PickerError("channels come from a Slack connection")
    if connection.mode == ConnectionMode.SANDBOX:
        return SANDBOX["channels"]
    client = clients.slack_client(_token(connection, "bot_token"))
    channels: list[dict[str, Any]] = []
    cursor = None
    try:
        for _page in range(MAX_PAGES):
            page = client.conversations_list(types="public_channel,private_channel", exclude_archived=True,
                                             limit=200, cursor=cursor)  # fmt: skip
            listed: list[dict[str, Any]] = page.get("channels") or []
            channels += [{"id": c["id"], "name": c["name"], "is_private": bool(c.get("is_private"))}
                         for c in listed]  # fmt: skip
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
    except SlackApiError as exc:
        raise PickerError(_after(connection, clients.slack_error(exc)).message) from None
    except OSError as exc:
        raise PickerError(f"Slack could not be reached: {type(exc).__name__}") from None
    return sorted(channels, key=lambda channel: channel["name"])


def hubspot_lists_of(connection: Connection, query: str = "") -> list[dict[str, Any]]:
    if connection.provider != Provider.HUBSPOT:
        raise PickerError("lists come from a HubSpot connection")
    if connection.mode == ConnectionMode.SANDBOX:
        return SANDBOX["lists"]
    api = clients.hubspot_client(_token(connection, "access_token")).crm.lists.lists_api
    found: list[dict[str, Any]] = []
    offset = 0
    try:
        for _page in range(MAX_PAGES):
            request = hubspot_lists.ListSearchRequest(query=query, processing_types=["MANUAL", "SNAPSHOT"],
                                                      count=100, offset=offset)  # fmt: skip
            page = api.do_search(request, _request_timeout=clients.timeout())
            found += [{"id": str(item.list_id), "name": item.name, "processing_type": item.processing_type}
                      for item in page.lists or [] if item.processing_type in ("MANUAL", "SNAPSHOT")]  # fmt: skip
            if not page.has_more:
                break
            offset = int(page.offset or 0)
    except Exception as exc:
        raise PickerError(_after(connection, clients.hubspot_error(exc)).message) from None
    return found


def hubspot_owners(connection: Connection) -> list[dict[str, Any]]:
    if connection.provider != Provider.HUBSPOT:
        raise PickerError("owners come from a HubSpot connection")
    if connection.mode == ConnectionMode.SANDBOX:
        return SANDBOX["owners"]
    api = clients.hubspot_client(_token(connection, "access_token")).crm.owners.owners_api
    owners: list[dict[str, Any]] = []
    after = None
    try:
        for _page in range(MAX_PAGES):
            page = api.get_page(limit=100, after=after, _request_timeout=clients.timeout())
            owners += [{"id": str(o.id), "email": o.email,
                        "name": " ".join(part for part in (o.first_name, o.last_name) if part)}
                       for o in page.results or []]  # fmt: skip
            after = page.paging.next.after if page.paging and page.paging.next else None
            if not after:
                break
    except Exception as exc:
        raise PickerError(_after(connection, clients.hubspot_error(exc)).message) from None
    return owners
