"""The event timeline panel of the account and user pages: newest first, paged by (time, id) so older pages stay
fast however many events an account has."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db.models import Q
from django.http import HttpRequest

from accounts.panels import Panel
from plgapp.models import Tenant
from signals.models import Event

PAGE_SIZE = 25
CURSOR_PARAM = "events_before"


def _cursor(raw: str) -> tuple[datetime, int] | None:
    try:
        micros, event_id = raw.split("_")
        return datetime.fromtimestamp(int(micros) / 1_000_000, tz=UTC), int(event_id)
    except ValueError:
        return None  # a mangled link: start from the newest


def timeline_panel(request: HttpRequest, tenant: Tenant, entity_type: str, entity: Any) -> Panel | None:
    column = {"account": "account_id", "user": "end_user_id"}.get(entity_type)
    if column is None:
        return None
    events = Event.objects.for_tenant(tenant).filter(**{column: entity.pk})
    before = _cursor(request.GET.get(CURSOR_PARAM, ""))
    if before is not None:
        moment, event_id = before
        events = events.filter(Q(occurred_at__lt=moment) | Q(occurred_at=moment, id__lt=event_id))
    page = list(events.select_related("end_user").order_by("-occurred_at", "-id")[: PAGE_SIZE + 1])
    older = None
    if len(page) > PAGE_SIZE:
        page = page[:PAGE_SIZE]
        last = page[-1]
        older = f"{int(last.occurred_at.timestamp() * 1_000_000)}_{last.pk}"
    context = {"events": page, "older": older, "param": CURSOR_PARAM, "paged": before is not None,
               "show_user": entity_type == "account"}  # fmt: skip
    return Panel("Timeline", "signals/_timeline_panel.html", context, "timeline")
