"""Links from an account to the same company in other systems (HubSpot …), without accounts importing those
apps: integrations registers a link maker when it loads (like `scores_hook` and `panels`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from plgapp.models import Tenant


@dataclass(frozen=True)
class ExternalLink:
    label: str
    url: str


# (tenant, accounts) -> {account id: [links]}; called once per page with all its accounts
LinkMaker = Callable[[Tenant, Sequence[object]], dict[int, list[ExternalLink]]]

_makers: list[LinkMaker] = []


def register(maker: LinkMaker) -> None:
    if maker not in _makers:
        _makers.append(maker)


def links_for(tenant: Tenant, accounts: Sequence[object]) -> dict[int, list[ExternalLink]]:
    found: dict[int, list[ExternalLink]] = {}
    for maker in _makers:
        for account_id, links in maker(tenant, accounts).items():
            found.setdefault(account_id, []).extend(links)
    return found
