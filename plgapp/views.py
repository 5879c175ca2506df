"""Server-rendered UI of the tenancy core: sign-in, tenant home and switcher, API keys page."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.template import loader
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from plgapp.api_errors import SERVER_ERROR, error_body
from plgapp.forms import ApiKeyCreateForm
from plgapp.models import ApiKey, TenantMember
from plgapp.roles import Capability, Role
from plgapp.selectors import api_keys_list, tenant_members_list, tenant_memberships_for_user, worker_heartbeats
from plgapp.services import (
    CreatedApiKey,
    MemberChangeRefused,
    api_key_create,
    api_key_revoke,
    tenant_member_change_role,
    tenant_member_invite,
    tenant_member_remove,
)
from plgapp.tenancy import TenantAccess, access_for_user

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
ViewFunc = Callable[..., HttpResponseBase]


def tenant_page(
    *, read: Capability = Capability.VIEW, write: Capability | None = None
) -> Callable[[ViewFunc], ViewFunc]:
    """Resolve /t/<tenant_slug>/ against the user's memberships (404 if not theirs) and check the role."""

    def decorator(view: ViewFunc) -> ViewFunc:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, tenant_slug: str, *args: Any, **kwargs: Any) -> HttpResponseBase:
            access = access_for_user(user=request.user, tenant_slug=tenant_slug)
            if access is None:
                raise Http404("No such tenant")
            required = read if request.method in SAFE_METHODS else (write or read)
            if not access.can(required):
                raise PermissionDenied(f"Your role ({access.role}) cannot open this page.")
            request.tenant_access = access  # type: ignore[attr-defined]
            if request.session.get("tenant_slug") != tenant_slug:
                request.session["tenant_slug"] = tenant_slug  # where "/" takes the user next time
            return view(request, access, *args, **kwargs)

        return wrapper

    return decorator


@login_required
def home(request: HttpRequest) -> HttpResponse:
    memberships = tenant_memberships_for_user(user=request.user)
    if not memberships:
        return render(request, "plgapp/no_tenant.html", status=200)
    by_slug = {member.tenant.slug: member for member in memberships}
    last = request.session.get("tenant_slug")
    member = by_slug.get(str(last)) or memberships[0]
    # Each role starts where its work is: sales reps on their PQL list, marketers on their playbooks.
    start = {Role.SALES: "pqls", Role.MARKETER: "playbooks"}.get(Role(member.role), "tenant_overview")
    return redirect(start, tenant_slug=member.tenant.slug)


@require_safe
@tenant_page()
def tenant_overview(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    context: dict[str, Any] = {
        "members": tenant_members_list(tenant=access.tenant),
        "heartbeats": worker_heartbeats(),
    }
    if access.can(Capability.MANAGE_TENANT):
        context["active_key_count"] = api_keys_list(tenant=access.tenant, include_revoked=False).count()
    return render(request, "plgapp/tenant_overview.html", context)


def _render_api_keys(
    request: HttpRequest, access: TenantAccess, *, form: ApiKeyCreateForm, created: CreatedApiKey | None, status: int
) -> HttpResponse:
    context = {"form": form, "created": created, "api_keys": api_keys_list(tenant=access.tenant)}
    is_htmx = bool(getattr(request, "htmx", False))
    template = "plgapp/_api_keys_panel.html" if is_htmx else "plgapp/api_keys.html"
    # htmx swaps only 2xx answers, so a form with errors goes back as 200 to be shown in place.
    response = render(request, template, context, status=200 if is_htmx and status >= 400 else status)
    if created is not None:
        add_never_cache_headers(response)  # the page holds a key shown once
    return response


@require_http_methods(["GET", "POST"])
@tenant_page(read=Capability.MANAGE_TENANT, write=Capability.MANAGE_TENANT)
def api_keys(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    if request.method == "GET":
        return _render_api_keys(request, access, form=ApiKeyCreateForm(), created=None, status=200)
    form = ApiKeyCreateForm(request.POST)
    if not form.is_valid():
        return _render_api_keys(request, access, form=form, created=None, status=400)
    created = api_key_create(
        tenant=access.tenant,
        kind=form.cleaned_data["kind"],
        name=form.cleaned_data["name"],
        created_by=request.user,  # type: ignore[arg-type]
    )
    # Rendered, not redirected: the key must not travel through a session or a URL to be shown once.
    return _render_api_keys(request, access, form=ApiKeyCreateForm(), created=created, status=201)


@require_POST
@tenant_page(read=Capability.MANAGE_TENANT, write=Capability.MANAGE_TENANT)
def api_key_revoke_view(request: HttpRequest, access: TenantAccess, key_id: UUID) -> HttpResponse:
    try:
        revoked = api_key_revoke(tenant=access.tenant, key_id=key_id)
    except ApiKey.DoesNotExist as exc:
        raise Http404("No such API key") from exc
    if getattr(request, "htmx", False):
        return _render_api_keys(request, access, form=ApiKeyCreateForm(), created=None, status=200)
    messages.success(request, f"Revoked {revoked.name} ({revoked.prefix}…).")
    return redirect(reverse("api_keys", kwargs={"tenant_slug": access.tenant.slug}))


# --- Error pages: JSON under /api/, HTML elsewhere -------------------------------------------------


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "/api/v1/" in request.path


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return render(request, "404.html", status=404)


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    message = str(exception) if exception and str(exception) else "You do not have permission to open this page."
    if _is_api(request):
        return JsonResponse(error_body("permission_denied", message), status=403)
    return render(request, "403.html", {"message": message}, status=403)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(SERVER_ERROR, status=500)
    # No request context: the failure may be the database that context processors would query.
    return HttpResponse(loader.get_template("500.html").render(), status=500)


# --- Settings → members -------------------------------------------------------------------------------------------


def _render_members(request: HttpRequest, access: TenantAccess, *, invitation: Any = None, error: str = "",
                    status: int = 200) -> HttpResponse:  # fmt: skip
    context = {
        "members": tenant_members_list(tenant=access.tenant).select_related("user").order_by("user__email"),
        "roles": Role.choices,
        "invitation": invitation,
        "invite_link": request.build_absolute_uri(invitation.set_password_path)
        if invitation is not None and invitation.set_password_path
        else None,
        "error": error,
    }
    return render(request, "plgapp/members.html", context, status=status)


@tenant_page(read=Capability.MANAGE_TENANT, write=Capability.MANAGE_TENANT)
def members_page(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    if request.method == "GET":
        return _render_members(request, access)
    email, role = request.POST.get("email", "").strip(), request.POST.get("role", "")
    if "@" not in email or role not in Role.values:
        return _render_members(request, access, error="Give an email address and a role.", status=400)
    try:
        invitation = tenant_member_invite(tenant=access.tenant, email=email, role=role)
    except MemberChangeRefused as exc:
        return _render_members(request, access, error=str(exc), status=400)
    # Rendered, not redirected: the one-time link is shown once and never travels through the session.
    return _render_members(request, access, invitation=invitation, status=201)


@require_POST
@tenant_page(read=Capability.MANAGE_TENANT, write=Capability.MANAGE_TENANT)
def member_change_view(request: HttpRequest, access: TenantAccess, member_id: int) -> HttpResponse:
    try:
        if request.POST.get("remove"):
            member = tenant_member_remove(tenant=access.tenant, member_id=member_id)
            messages.success(request, f"Removed {member.user.email} from {access.tenant.name}.")
        else:
            member = tenant_member_change_role(tenant=access.tenant, member_id=member_id,
                                               role=request.POST.get("role", ""))  # fmt: skip
            messages.success(request, f"{member.user.email} is now {member.get_role_display().lower()}.")
    except TenantMember.DoesNotExist as exc:
        raise Http404("No such member") from exc
    except (MemberChangeRefused, ValueError) as exc:
        messages.error(request, str(exc))
    return redirect("members", tenant_slug=access.tenant.slug)
