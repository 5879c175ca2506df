"""Management read API of events (DESIGN §7): filter by user, account (ids), name, time range."""

from __future__ import annotations

import django_filters
from rest_framework import mixins

from plgapp.api_base import TenantScopedViewSet
from plgapp.pagination import CursorPagination
from signals.models import Event
from signals.serializers import EventOutputSerializer


class EventFilter(django_filters.FilterSet):
    user = django_filters.NumberFilter(field_name="end_user_id", help_text="User id")
    account = django_filters.NumberFilter(field_name="account_id", help_text="Account id")
    name = django_filters.CharFilter(field_name="name")
    since = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")

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
