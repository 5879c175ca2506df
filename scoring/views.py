"""The sales reps' home: the PQA / PQL list (filters, keyset pages, users with their roles, CSV, quick actions)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from accounts.links import links_for
from accounts.models import Account
from plgapp.roles import Capability
from plgapp.tenancy import TenantAccess
from plgapp.views import tenant_page
from scoring.pql_api import DEFAULT_LIMIT, filters_from
from scoring.pqls import OWNER_PROPERTIES, PqlQueryInvalid, pql_page, trial_stages
from scoring.services import DispositionInvalid, lead_disposition_set, settings_get

FILTER_KEYS = ("stage", "min_score", "segment", "owner", "q")


def _owners(access: TenantAccess, stages: tuple[str, ...]) -> list[str]:
    """Owners of the listed stages' accounts, for the owner filter (the first 200, alphabetically)."""
    found: set[str] = set()
    accounts = Account.objects.for_tenant(access.tenant).filter(stage__in=stages)
    for key in OWNER_PROPERTIES:
        values = accounts.filter(**{f"properties__{key}__isnull": False}).values_list(f"properties__{key}", flat=True)
        found.update(str(value) for value in values.distinct()[:200] if value)
    return sorted(found)[:200]


@require_safe
@tenant_page()
def pql_list_page(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    errors: dict[str, str] = {}
    try:
        filters = filters_from(request.GET)
        page = pql_page(tenant=access.tenant, filters=filters, cursor=request.GET.get("cursor") or None,
                        limit=DEFAULT_LIMIT, now=timezone.now())  # fmt: skip
    except PqlQueryInvalid as exc:  # say what is wrong, and show the list without that parameter
        errors = exc.fields
        usable = request.GET.copy()
        for key in [*errors, "cursor"]:
            usable.pop(key, None)
        filters = filters_from(usable)
        page = pql_page(tenant=access.tenant, filters=filters, cursor=None, limit=DEFAULT_LIMIT, now=timezone.now())
    kept = {key: request.GET.get(key, "") for key in FILTER_KEYS if request.GET.get(key)}
    external = links_for(access.tenant, [row.account for row in page.rows])
    for row in page.rows:
        row.links = external.get(row.account.pk, [])  # type: ignore[attr-defined]
    stages = trial_stages(access.tenant)
    context: dict[str, Any] = {
        "page": page,
        "errors": errors,
        "values": kept,
        "filtered": bool(kept),
        "query": urlencode(kept),
        "segments": [s["name"] for s in settings_get(tenant=access.tenant)["size_segments"]["segments"]],
        "owners": _owners(access, filters.stages or stages),
        "stages": stages,
        "can_work": access.can(Capability.WORK_LEADS),
    }
    if not getattr(request, "htmx", False):
        return render(request, "scoring/pqls.html", context, status=400 if errors else 200)
    response = render(request, "scoring/_pql_table.html", context, status=400 if errors else 200)
    response["HX-Push-Url"] = request.path + (f"?{context['query']}" if context["query"] else "")  # no empty filters
    return response


@require_POST
@tenant_page(read=Capability.WORK_LEADS, write=Capability.WORK_LEADS)
def pql_disposition_view(request: HttpRequest, access: TenantAccess, account_id: int) -> HttpResponseBase:
    outcome, reason = request.POST.get("outcome", ""), request.POST.get("reason", "")
    try:
        disposition = lead_disposition_set(tenant=access.tenant, account_id=account_id, outcome=outcome,
                                           reason=reason, user=request.user, now=timezone.now())  # fmt: skip
    except Account.DoesNotExist as exc:
        raise Http404("No such account") from exc
    except DispositionInvalid as exc:
        message = " ".join(exc.fields.values())
        if getattr(request, "htmx", False):
            return HttpResponse(f'<p class="error" role="alert">{message}</p>', status=400)
        messages.error(request, message)
        return redirect("pqls", tenant_slug=access.tenant.slug)
    note = f"Marked {disposition.get_outcome_display().lower()}; hidden until {disposition.hidden_until:%b %-d}."
    if getattr(request, "htmx", False):  # the row goes away; a status line says why
        return HttpResponse(f'<tr class="gone"><td colspan="8" role="status">{note}</td></tr>')
    messages.success(request, note)
    return redirect("pqls", tenant_slug=access.tenant.slug)
