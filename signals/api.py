"""Management API of the signals app (DESIGN §7): events (read, filtered by user, account, name, time range)
and the tenant's signal definitions (CRUD)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.utils import timezone
from rest_framework import mixins, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from plgapp.api_base import TenantScopedViewSet
from plgapp.pagination import CursorPagination
from plgapp.roles import Capability
from signals.models import Event, Signal, SignalEntity, SignalKind
from signals.serializers import EventOutputSerializer, SignalSerializer
from signals.services import SignalKeyTaken, signal_delete, signal_save


class UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """ISO-8601, as UTC: PostgreSQL refuses offsets of 16 hours or more, which ISO-8601 allows."""

    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        try:
            return parsed.astimezone(UTC) if parsed is not None else None
        except OverflowError:  # 0001-01-01T00:00+05:00 is in year 0
            raise forms.ValidationError("outside the years 1-9999 in UTC", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class EventFilter(django_filters.FilterSet):
    user = django_filters.NumberFilter(field_name="end_user_id", help_text="User id")
    account = django_filters.NumberFilter(field_name="account_id", help_text="Account id")
    name = django_filters.CharFilter(field_name="name")
    since = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")

    class Meta:
        model = Event
        fields = ["user", "account", "name", "since", "until"]


class EventPagination(CursorPagination):
    ordering = "-occurred_at"


class EventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    scoped_model = Event
    serializer_class = EventOutputSerializer
    filterset_class = EventFilter
    pagination_class = EventPagination


class SignalFilter(django_filters.FilterSet):
    entity_type = django_filters.ChoiceFilter(choices=SignalEntity.choices)
    kind = django_filters.ChoiceFilter(choices=SignalKind.choices)

    class Meta:
        model = Signal
        fields = ["entity_type", "kind"]


class SignalPagination(CursorPagination):
    ordering = "key"


class SignalViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    TenantScopedViewSet,
):
    """Signals: named features in the tenant's own terms (event count in a window, property value, ratio of two
    properties), with weights in the rule-based scores. Marketers and admins edit them; a change rescores."""

    scoped_model = Signal
    serializer_class = SignalSerializer
    filterset_class = SignalFilter
    pagination_class = SignalPagination
    write_capability = Capability.EDIT_PLAYBOOKS

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        if not getattr(self, "swagger_fake_view", False):
            context["tenant"] = self.tenant
        return context

    def perform_create(self, serializer: Any) -> None:
        self._save(serializer, None)

    def perform_update(self, serializer: Any) -> None:
        self._save(serializer, serializer.instance)

    def _save(self, serializer: Any, signal: Signal | None) -> None:
        try:
            serializer.instance = signal_save(
                tenant=self.tenant, signal=signal, data=serializer.validated_data, now=timezone.now()
            )
        except SignalKeyTaken as exc:
            raise ValidationError({"key": str(exc)}) from None

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        signal_delete(tenant=self.tenant, signal=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
