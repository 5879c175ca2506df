"""Management API of the tenancy core: the caller's tenant and its API keys."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.utils.cache import add_never_cache_headers
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from plgapp.api_base import TenantScopedAPIView, TenantScopedViewSet
from plgapp.models import KEY_KIND_CHOICES, ApiKey, User
from plgapp.roles import Capability
from plgapp.serializers import (
    ApiKeyCreatedOutputSerializer,
    ApiKeyCreateInputSerializer,
    ApiKeyOutputSerializer,
    TenantOutputSerializer,
)
from plgapp.services import api_key_create, api_key_revoke


class TenantView(TenantScopedAPIView):
    """The tenant the caller acts for (handy to check which tenant a key belongs to)."""

    serializer_class = TenantOutputSerializer

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(TenantOutputSerializer(self.tenant).data)


class ApiKeyFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=KEY_KIND_CHOICES)
    is_active = django_filters.BooleanFilter(field_name="revoked_at", lookup_expr="isnull")

    class Meta:
        model = ApiKey
        fields = ["kind", "is_active"]


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """API keys: list, create (the key is in the answer, once), revoke. Admins and secret keys only."""

    scoped_model = ApiKey
    read_capability = Capability.MANAGE_TENANT
    write_capability = Capability.MANAGE_TENANT
    serializer_class = ApiKeyOutputSerializer
    filterset_class = ApiKeyFilter

    def get_queryset(self) -> QuerySet[ApiKey]:
        return super().get_queryset().select_related("created_by")

    @extend_schema(request=ApiKeyCreateInputSerializer, responses={201: ApiKeyCreatedOutputSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = ApiKeyCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = request.user if isinstance(request.user, User) else None
        created = api_key_create(
            tenant=self.tenant, kind=data.validated_data["kind"], name=data.validated_data["name"], created_by=user
        )
        body = ApiKeyCreatedOutputSerializer(created.api_key).data | {"key": created.raw_key}
        response = Response(body, status=status.HTTP_201_CREATED)
        add_never_cache_headers(response)  # the answer holds a key shown once
        return response

    @extend_schema(request=None, responses=ApiKeyOutputSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        api_key = self.get_object()  # 404 for another tenant's key
        revoked = api_key_revoke(tenant=self.tenant, key_id=api_key.pk)
        return Response(ApiKeyOutputSerializer(revoked).data)
