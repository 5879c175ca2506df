"""Account 360 and the user page: properties, stage history, the people ↔ accounts relationship with its
properties (role …), and the panels other apps add (scores, timeline, playbooks)."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from accounts.links import links_for
from accounts.models import Account, EndUser, Membership, StageChange
from accounts.panels import panels_for
from accounts.scores_hook import scores_for
from plgapp.tenancy import TenantAccess
from plgapp.views import tenant_page


def _stages(access: TenantAccess, entity_type: str, entity_id: int) -> list[StageChange]:
    changes = StageChange.objects.for_tenant(access.tenant).filter(entity_type=entity_type, entity_id=entity_id)
    return list(changes.order_by("-changed_at")[:50])


def _memberships(access: TenantAccess, **where: Any) -> list[Membership]:
    """Relationships with their properties and the scores on both ends (champion on the link, health on the user)."""
    rows = list(
        Membership.objects.for_tenant(access.tenant)
        .filter(**where)
        .select_related("end_user", "account")
        .order_by("left_at", "-joined_at")[:500]
    )
    champion = scores_for(access.tenant.pk, "membership", [m.pk for m in rows])
    health = scores_for(access.tenant.pk, "user", list({m.end_user_id for m in rows}))
    for membership in rows:
        membership.champion = champion.get(membership.pk, {}).get("champion")  # type: ignore[attr-defined]
        membership.health = health.get(membership.end_user_id, {}).get("health")  # type: ignore[attr-defined]
    rows.sort(key=lambda m: (m.left_at is not None, -(m.champion or {}).get("value", -1)))  # type: ignore[attr-defined]
    return rows


@require_safe
@tenant_page()
def account_page(request: HttpRequest, access: TenantAccess, account_id: int) -> HttpResponse:
    account = Account.objects.for_tenant(access.tenant).filter(pk=account_id).first()
    if account is None:
        raise Http404("No such account")
    context = {
        "account": account,
        "links": links_for(access.tenant, [account]).get(account.pk, []),
        "properties": sorted(account.properties.items()),
        "stages": _stages(access, "account", account.pk),
        "memberships": _memberships(access, account_id=account.pk),
        "panels": panels_for(request, access.tenant, "account", account),
    }
    return render(request, "accounts/account.html", context)


@require_safe
@tenant_page()
def user_page(request: HttpRequest, access: TenantAccess, user_id: int) -> HttpResponse:
    user = EndUser.objects.for_tenant(access.tenant).filter(pk=user_id).first()
    if user is None:
        raise Http404("No such user")
    context = {
        "person": user,
        "properties": sorted(user.properties.items()),
        "stages": _stages(access, "user", user.pk),
        "memberships": _memberships(access, end_user_id=user.pk),
        "panels": panels_for(request, access.tenant, "user", user),
    }
    return render(request, "accounts/user.html", context)
