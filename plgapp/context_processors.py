from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from plgapp.selectors import tenant_memberships_for_user


def tenant_navigation(request: HttpRequest) -> dict[str, Any]:
    """The signed-in user's tenants (for the switcher) and the tenant of the current page, if any."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "user_memberships": tenant_memberships_for_user(user=user),
        "tenant_access": getattr(request, "tenant_access", None),
    }
