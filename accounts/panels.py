"""Sections other apps add to the account and user pages, without accounts importing them (DESIGN §3): scoring adds
scores with their history and reasons, signals the event timeline, playbooks the enrollments and action runs.
Each app registers its panels when it loads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest

from plgapp.models import Tenant


@dataclass
class Panel:
    title: str
    template: str
    context: dict[str, Any] = field(default_factory=dict)
    anchor: str = ""


# (request, tenant, entity type "account" | "user", the entity) -> a panel, or None to show nothing
PanelMaker = Callable[[HttpRequest, Tenant, str, Any], Panel | None]

_makers: list[tuple[int, PanelMaker]] = []


def register(maker: PanelMaker, *, order: int) -> None:
    if all(existing is not maker for _order, existing in _makers):
        _makers.append((order, maker))
        _makers.sort(key=lambda item: item[0])


def panels_for(request: HttpRequest, tenant: Tenant, entity_type: str, entity: Any) -> list[Panel]:
    panels = (maker(request, tenant, entity_type, entity) for _order, maker in _makers)
    return [panel for panel in panels if panel is not None]
