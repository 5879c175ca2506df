"""The OAuth install pages: `connect` sends an admin to Slack or HubSpot; `callback` is where the provider sends
them back (one fixed URL per provider, as the apps register it; the tenant comes from the signed state)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from integrations.oauth import SESSION_NONCE, OAuthError, authorize_url, install_complete, state_read
from plgapp.models import Tenant
from plgapp.roles import Capability
from plgapp.tenancy import TenantAccess, access_for_user
from plgapp.views import tenant_page


def _refused(message: str) -> HttpResponse:
    return HttpResponse(f"Could not connect: {message}", status=400, content_type="text/plain; charset=utf-8")


def _connected(request: HttpRequest, tenant: Tenant, connection_name: str, provider: str) -> HttpResponseBase:
    messages.success(request, f"Connected {provider.title()}: “{connection_name}”.")
    return HttpResponseRedirect(reverse("integrations", kwargs={"tenant_slug": tenant.slug}))


@require_GET
@tenant_page(read=Capability.MANAGE_TENANT)
def oauth_connect(request: HttpRequest, access: TenantAccess, provider: str) -> HttpResponseBase:
    try:
        url = authorize_url(
            provider=provider, tenant=access.tenant, user_id=int(request.user.pk or 0), session=request.session
        )
    except OAuthError as exc:
        return _refused(str(exc))
    return HttpResponseRedirect(url)


@require_GET
@login_required
def oauth_callback(request: HttpRequest, provider: str) -> HttpResponseBase:
    if request.GET.get("error"):
        return _refused(f"{provider} says: {request.GET['error']}")
    code, state = request.GET.get("code", ""), request.GET.get("state", "")
    if not code or not state:
        return _refused("the provider did not send back a code and a state")
    try:
        tenant_id = state_read(provider=provider, state=state, user_id=int(request.user.pk or 0),
                               session_nonce=request.session.pop(SESSION_NONCE, None))  # fmt: skip
        tenant = Tenant.objects.get(pk=tenant_id)
        access = access_for_user(user=request.user, tenant_slug=tenant.slug)
        if access is None or not access.can(Capability.MANAGE_TENANT):
            raise OAuthError("only the tenant's admins connect integrations")
        connection = install_complete(provider=provider, code=code, tenant=tenant, now=timezone.now())
    except (OAuthError, Tenant.DoesNotExist) as exc:
        return _refused(str(exc))
    return _connected(request, tenant, connection.name, provider)
