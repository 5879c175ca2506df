"""Management read API: accounts, users (with relationship properties), the data catalogue (DESIGN §7)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import DecimalField, F, Func, Prefetch, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins
from rest_framework.exceptions import ValidationError

from accounts.models import Account, EndUser, EntityType, Membership, PropertyDefinition
from accounts.scores_hook import score_expression
from accounts.serializers import (
    AccountDetailOutputSerializer,
    AccountOutputSerializer,
    PropertyDefinitionOutputSerializer,
    UserDetailOutputSerializer,
    UserOutputSerializer,
)
from plgapp.api_base import TenantScopedViewSet
from plgapp.pagination import CursorPagination


class _Search(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", help_text="Search identifiers, email/domain and name.")
    stage = django_filters.CharFilter(field_name="stage")

    search_fields: tuple[str, ...] = ()

    def search(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        condition = Q()
        for field in self.search_fields:
            condition |= Q(**{f"{field}__icontains": value.strip()})
        return queryset.filter(condition)


SCORE_ORDERINGS = {"conversion", "churn"}


class AccountFilter(_Search):
    search_fields = ("external_id", "domain", "name")
    min_score = django_filters.NumberFilter(
        method="at_least", help_text="Only accounts whose score of `score_kind` (default conversion) is at least this."
    )
    score_kind = django_filters.ChoiceFilter(
        choices=[(kind, kind) for kind in sorted(SCORE_ORDERINGS)], method="noop",
        help_text="The score kind min_score applies to (default conversion).",
    )  # fmt: skip

    class Meta:
        model = Account
        fields = ["stage", "q", "min_score", "score_kind"]

    def at_least(self, queryset: QuerySet[Any], name: str, value: float) -> QuerySet[Any]:
        if not 0 <= value <= 1:
            raise ValidationError({"min_score": "min_score is a probability from 0 to 1."})
        kind = (self.data or {}).get("score_kind") or "conversion"
        return queryset.alias(min_score_value=score_expression(kind, "account")).filter(min_score_value__gte=value)

    def noop(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        return queryset


class UserFilter(_Search):
    search_fields = ("external_id", "email")
    account = django_filters.NumberFilter(field_name="memberships__account_id", help_text="Account id")

    class Meta:
        model = EndUser
        fields = ["stage", "q", "account"]


class ByIdPagination(CursorPagination):
    ordering = "-id"


class _DoubleBits(Func):
    """The IEEE-754 bits of a double as a number: ordered exactly as non-negative doubles are; negative ones (the -1
    of "no score") come below them all."""

    template = "(('x' || encode(float8send(%(expressions)s), 'hex'))::bit(64)::bigint)::numeric"
    output_field = DecimalField()


def score_sort_key(kind: str) -> Any:
    """One exact number per account that orders by (score, id), unscored lowest. The cursor pages by this single
    value, so it must be unique: with ties (every unscored account, equal rule scores) a cursor position would
    name several rows and paging back through `previous` loses some of them."""
    score = Coalesce(score_expression(kind, "account"), Value(-1.0))
    return _DoubleBits(score) * Value(2**63) + F("id")


class AccountPagination(ByIdPagination):
    """Newest first, or by a score: ?ordering=-conversion (highest first), conversion, -churn, churn."""

    def get_ordering(self, request: Any, queryset: Any, view: Any) -> tuple[str, ...]:
        ordering = request.query_params.get("ordering")
        if ordering is None:
            return ("-id",)
        kind = ordering.removeprefix("-")
        if kind not in SCORE_ORDERINGS:
            choices = ", ".join(f"-{k}, {k}" for k in sorted(SCORE_ORDERINGS))
            raise ValidationError({"ordering": f"ordering must be one of {choices}; got {ordering!r}."})
        return (f"-score_{kind}" if ordering.startswith("-") else f"score_{kind}",)


ORDERING_PARAMETER = OpenApiParameter(
    "ordering", str, enum=[f"{sign}{kind}" for kind in sorted(SCORE_ORDERINGS) for sign in ("-", "")],
    description="By a score: -conversion (highest first; unscored accounts last), conversion, -churn, churn. "
    "Default: newest first.",
)  # fmt: skip


@extend_schema_view(list=extend_schema(parameters=[ORDERING_PARAMETER]))
class AccountViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Accounts; the detail has its users with their relationship properties (e.g. role)."""

    scoped_model = Account
    filterset_class = AccountFilter
    pagination_class = AccountPagination

    def get_serializer_class(self) -> Any:
        return AccountDetailOutputSerializer if self.action == "retrieve" else AccountOutputSerializer

    def get_queryset(self) -> QuerySet[Account]:
        queryset = super().get_queryset()
        ordering = self.request.query_params.get("ordering", "").removeprefix("-")
        if self.action == "list" and ordering in SCORE_ORDERINGS:
            # Unscored accounts sort last (highest first) or first; ties in score by id.
            queryset = queryset.annotate(**{f"score_{ordering}": score_sort_key(ordering)})
        if self.action == "retrieve" and not getattr(self, "swagger_fake_view", False):
            memberships = Membership.objects.for_tenant(self.tenant).select_related("end_user").order_by("joined_at")
            queryset = queryset.prefetch_related(Prefetch("memberships", queryset=memberships))
        return queryset


class UserViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Users ("end users" of the tenant's product); the detail has their accounts and roles there."""

    scoped_model = EndUser
    filterset_class = UserFilter
    pagination_class = ByIdPagination

    def get_serializer_class(self) -> Any:
        return UserDetailOutputSerializer if self.action == "retrieve" else UserOutputSerializer

    def get_queryset(self) -> QuerySet[EndUser]:
        queryset = super().get_queryset().distinct()
        if self.action == "retrieve" and not getattr(self, "swagger_fake_view", False):
            memberships = Membership.objects.for_tenant(self.tenant).select_related("account").order_by("joined_at")
            queryset = queryset.prefetch_related(Prefetch("memberships", queryset=memberships))
        return queryset


class PropertyFilter(django_filters.FilterSet):
    entity_type = django_filters.ChoiceFilter(choices=EntityType.choices)

    class Meta:
        model = PropertyDefinition
        fields = ["entity_type"]


class PropertyPagination(CursorPagination):
    ordering = "key"


class PropertyDefinitionViewSet(mixins.ListModelMixin, TenantScopedViewSet):
    """The data catalogue: every property key seen, per entity type, with its type and first sighting."""

    scoped_model = PropertyDefinition
    serializer_class = PropertyDefinitionOutputSerializer
    filterset_class = PropertyFilter
    pagination_class = PropertyPagination
