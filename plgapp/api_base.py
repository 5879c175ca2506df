"""Base classes of every tenant endpoint: they resolve the caller's tenant and hand out scoped querysets.

Subclasses set `scoped_model` (a TenantScopedModel) and the capabilities for reading and writing; they
never filter by tenant themselves. `get_object()` therefore answers 404 for another tenant's id, exactly
as for a missing one.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

from django.db.models import QuerySet
from rest_framework import generics, viewsets
from rest_framework.exceptions import NotAuthenticated, NotFound, PermissionDenied, ValidationError
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

from plgapp.models import ApiKey, Tenant, TenantScopedModel
from plgapp.parsers import NUL_MESSAGE
from plgapp.roles import Capability
from plgapp.tenancy import TenantAccess, access_for_api_key, access_for_user


class TenantScopedAPIView(generics.GenericAPIView[Any]):
    scoped_model: ClassVar[type[TenantScopedModel] | None] = None
    read_capability: ClassVar[Capability] = Capability.VIEW
    write_capability: ClassVar[Capability] = Capability.MANAGE_TENANT

    def required_capability(self, method: str | None) -> Capability:
        return self.read_capability if method in SAFE_METHODS else self.write_capability

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authenticated and allowed first: 401/403 before 400
        # PostgreSQL text cannot hold NUL: a parameter with one is refused here, before any query sees it.
        refused = {key for key, values in request.query_params.lists() if any("\x00" in v for v in [key, *values])}
        if refused:
            raise ValidationError({key.replace("\x00", "\\u0000"): NUL_MESSAGE for key in sorted(refused)})

    @cached_property
    def tenant_access(self) -> TenantAccess:
        request = self.request
        tenant_slug = self.kwargs.get("tenant_slug")
        if isinstance(request.auth, ApiKey):
            if tenant_slug is not None and tenant_slug != request.auth.tenant.slug:
                raise NotFound()
            return access_for_api_key(request.auth)
        if not request.user.is_authenticated:
            raise NotAuthenticated()
        if tenant_slug is None:
            raise PermissionDenied(
                "Signed-in requests name their tenant in the URL (/t/<slug>/api/v1/…); scripts use a secret key."
            )
        access = access_for_user(user=request.user, tenant_slug=tenant_slug)
        if access is None:
            raise NotFound()
        return access

    @property
    def tenant(self) -> Tenant:
        return self.tenant_access.tenant

    def get_queryset(self) -> QuerySet[Any]:
        if self.scoped_model is None:
            raise NotImplementedError(f"{type(self).__name__} must set scoped_model or override get_queryset")
        if getattr(self, "swagger_fake_view", False):  # OpenAPI generation: no caller, no rows
            return self.scoped_model.objects.unscoped().none()
        return self.scoped_model.objects.for_tenant(self.tenant)


class TenantScopedViewSet(TenantScopedAPIView, viewsets.GenericViewSet[Any]):
    pass
