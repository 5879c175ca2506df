"""The one permission check of the API: does the caller's access to the tenant include the capability?"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from plgapp.roles import Capability


class TenantRolePermission(BasePermission):
    message = "You do not have permission to do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False  # DRF answers 401 with the first authenticator's challenge
        required = getattr(view, "required_capability", None)
        if required is None:
            raise ImproperlyConfigured(f"{type(view).__name__} must derive from TenantScopedAPIView")
        access = view.tenant_access  # raises NotFound for a tenant the caller does not belong to
        capability: Capability = required(request.method)
        if access.can(capability):
            return True
        verb = "read this" if request.method in SAFE_METHODS else "change this"
        self.message = f"Your access ({access.actor}) cannot {verb}: it needs the '{capability}' capability."
        return False
