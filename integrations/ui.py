"""Settings → Integrations (connections: add, test, delete, OAuth buttons) and the sandbox outbox."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from integrations.forms import ConnectionForm
from integrations.models import Connection, Provider, SandboxCall
from integrations.services import ConnectionInvalid, connection_create, connection_delete, connection_test
from integrations.services import credential_hints as hints_of
from plgapp.roles import Capability
from plgapp.tenancy import TenantAccess
from plgapp.views import tenant_page

OUTBOX_PAGE_SIZE = 50


def _connections(access: TenantAccess) -> list[Connection]:
    connections = list(Connection.objects.for_tenant(access.tenant).order_by("provider", "name", "pk"))
    for connection in connections:
        connection.hints = hints_of(connection)  # type: ignore[attr-defined]
    return connections


def _render_page(request: HttpRequest, access: TenantAccess, form: ConnectionForm, status: int) -> HttpResponse:
    context: dict[str, Any] = {
        "connections": _connections(access),
        "form": form,
        "oauth": {
            Provider.SLACK: bool(settings.SLACK_CLIENT_ID),
            Provider.HUBSPOT: bool(settings.HUBSPOT_CLIENT_ID),
        },
    }
    return render(request, "integrations/integrations.html", context, status=status)


@tenant_page(read=Capability.MANAGE_TENANT, write=Capability.MANAGE_TENANT)
def integrations_page(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    if request.method == "GET":
        return _render_page(request, access, ConnectionForm(initial={"provider": request.GET.get("provider")}), 200)
    form = ConnectionForm(request.POST)
    if form.is_valid():
        try:
            connection = connection_create(
                tenant=access.tenant, provider=form.cleaned_data["provider"], name=form.cleaned_data["name"],
                mode=form.cleaned_data["mode"], credentials=form.credentials(), settings={}, now=timezone.now(),
            )  # fmt: skip
        except ConnectionInvalid as exc:
            form.add_service_errors(exc.fields)
        else:
            connection = connection_test(tenant=access.tenant, connection_id=connection.pk, now=timezone.now())
            outcome = "works" if connection.status == "ok" else f"was added, but: {connection.last_error}"
            messages.success(request, f"{connection.get_provider_display()} connection “{connection.name}” {outcome}")
            return redirect("integrations", tenant_slug=access.tenant.slug)
    return _render_page(request, access, form, 400)


def _connection(access: TenantAccess, connection_id: int) -> Connection:
    connection = Connection.objects.for_tenant(access.tenant).filter(pk=connection_id).first()
    if connection is None:
        raise Http404("No such connection")
    return connection


@require_POST
@tenant_page(read=Capability.MANAGE_TENANT, write=Capability.MANAGE_TENANT)
def connection_test_view(request: HttpRequest, access: TenantAccess, connection_id: int) -> HttpResponseBase:
    _connection(access, connection_id)
    connection = connection_test(tenant=access.tenant, connection_id=connection_id, now=timezone.now())
    if getattr(request, "htmx", False):
        connection.hints = hints_of(connection)  # type: ignore[attr-defined]
        return render(request, "integrations/_connection.html", {"connection": connection})
    messages.info(request, f"Tested “{connection.name}”: {connection.get_status_display()}.")
    return redirect("integrations", tenant_slug=access.tenant.slug)


@require_POST
@tenant_page(read=Capability.MANAGE_TENANT, write=Capability.MANAGE_TENANT)
def connection_delete_view(request: HttpRequest, access: TenantAccess, connection_id: int) -> HttpResponseBase:
    connection = _connection(access, connection_id)
    connection_delete(tenant=access.tenant, connection_id=connection.pk)
    messages.success(request, f"Removed “{connection.name}”. Actions that used it fail until another is connected.")
    return redirect("integrations", tenant_slug=access.tenant.slug)


@require_safe
@tenant_page()
def outbox_page(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    """What sandbox connections would have sent, newest first, filterable by connection."""
    calls = SandboxCall.objects.for_tenant(access.tenant).select_related("connection").order_by("-created_at", "-pk")
    connections = Connection.objects.for_tenant(access.tenant).filter(mode="sandbox").order_by("provider", "name")
    chosen = request.GET.get("connection", "")
    if chosen.isdigit():
        calls = calls.filter(connection_id=int(chosen))
    page = Paginator(calls, OUTBOX_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "connections": connections, "chosen": chosen}
    template = "integrations/_outbox_rows.html" if getattr(request, "htmx", False) else "integrations/outbox.html"
    return render(request, template, context)
