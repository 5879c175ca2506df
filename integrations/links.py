"""Open an account in HubSpot: the companies index of the tenant's connected portal, searched by the domain."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from accounts.links import ExternalLink
from integrations.models import Connection, ConnectionMode, ConnectionStatus, Provider
from plgapp.models import Tenant


def hubspot_links(tenant: Tenant, accounts: Sequence[object]) -> dict[int, list[ExternalLink]]:
    connection = (
        Connection.objects.for_tenant(tenant)
        .filter(provider=Provider.HUBSPOT, mode=ConnectionMode.LIVE, status=ConnectionStatus.OK)
        .order_by("pk")
        .first()
    )
    portal = (connection.settings or {}).get("portal_id") if connection is not None else None
    if connection is None or not portal:
        return {}
    domain = str(connection.settings.get("ui_domain") or "app.hubspot.com")
    base = f"https://{domain}/contacts/{quote(str(portal))}/companies/list/view/all/?query="
    return {
        int(account.pk): [ExternalLink("HubSpot", base + quote(str(account.domain)))]  # type: ignore[attr-defined]
        for account in accounts
        if getattr(account, "domain", None)
    }
