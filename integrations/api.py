"""Management API of connections (DESIGN §7): create with credentials, list, test, delete; the sandbox outbox.
Admins (and secret keys) manage connections; everyone with access may list them (the playbook builder picks
one), never seeing more of a credential than its last characters."""

from __future__ import annotations

from typing import Any

import django_filters
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from integrations.models import Connection, ConnectionStatus, Provider, SandboxCall
from integrations.pickers import PickerError, hubspot_lists_of, hubspot_owners, slack_channels
from integrations.serializers import (
    ConnectionCreateInputSerializer,
    ConnectionOutputSerializer,
    SandboxCallOutputSerializer,
)
from integrations.services import ConnectionInvalid, connection_create, connection_delete, connection_test
from plgapp.api_base import TenantScopedViewSet
from plgapp.pagination import CursorPagination
from plgapp.roles import Capability
from plgapp.schema import error_answer

PICKER_REFUSED = error_answer("Not a connection of that provider, or the provider refused: error.fields.connection")


class ConnectionFilter(django_filters.FilterSet):
    provider = django_filters.ChoiceFilter(choices=Provider.choices)
    status = django_filters.ChoiceFilter(choices=ConnectionStatus.choices)

    class Meta:
        model = Connection
        fields = ["provider", "status"]


class ByIdPagination(CursorPagination):
    ordering = "-id"


class ConnectionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    scoped_model = Connection
    serializer_class = ConnectionOutputSerializer
    filterset_class = ConnectionFilter
    pagination_class = ByIdPagination
    write_capability = Capability.MANAGE_TENANT
    lookup_value_regex = r"\d+"

    @extend_schema(request=ConnectionCreateInputSerializer, responses={201: ConnectionOutputSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = ConnectionCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            connection = connection_create(tenant=self.tenant, now=timezone.now(), **data.validated_data)
        except ConnectionInvalid as exc:
            raise ValidationError(exc.fields) from None
        return Response(ConnectionOutputSerializer(connection).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        connection_delete(tenant=self.tenant, connection_id=self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=ConnectionOutputSerializer)
    @action(detail=True, methods=["post"])
    def test(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Call the provider with the stored credentials; `status` and `last_error` say how it went."""
        connection = connection_test(tenant=self.tenant, connection_id=self.get_object().pk, now=timezone.now())
        return Response(ConnectionOutputSerializer(connection).data)

    def _picked(self, pick: Any, *args: Any) -> Response:
        try:
            return Response({"results": pick(self.get_object(), *args)})
        except PickerError as exc:
            raise ValidationError({"connection": str(exc)}) from None

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 400: PICKER_REFUSED})
    @action(detail=True, methods=["get"])
    def channels(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Slack channels the bot can post to (the builder's channel picker)."""
        return self._picked(slack_channels)

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 400: PICKER_REFUSED})
    @action(detail=True, methods=["get"])
    def lists(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """HubSpot lists that accept members (MANUAL, SNAPSHOT); `?q=` filters by name."""
        return self._picked(hubspot_lists_of, request.query_params.get("q", "")[:100])

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 400: PICKER_REFUSED})
    @action(detail=True, methods=["get"])
    def owners(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """HubSpot owners (task assignees)."""
        return self._picked(hubspot_owners)


class SandboxCallViewSet(mixins.ListModelMixin, TenantScopedViewSet):
    """What sandbox connections would have sent, newest first."""

    scoped_model = SandboxCall
    serializer_class = SandboxCallOutputSerializer
    pagination_class = ByIdPagination
