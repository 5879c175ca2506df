"""Management API of scoring (DESIGN §7): scores in bulk, settings, model versions (+ train), discovery."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Account, EndUser, Membership
from plgapp.api_base import TenantScopedAPIView, TenantScopedViewSet
from plgapp.pagination import CursorPagination
from plgapp.roles import Capability
from scoring.config import ConfigInvalid
from scoring.discovery import discovery_report
from scoring.models import ModelVersion, Score, ScoreKind
from scoring.services import LEARNED_KINDS, model_version_start, settings_get, settings_set
from scoring.tasks import model_train_task

KIND_CHOICES = [(kind.value, kind.value) for kind in ScoreKind]


class ScoreOutputSerializer(serializers.ModelSerializer[Score]):
    entity_id = serializers.SerializerMethodField()
    external_id = serializers.SerializerMethodField()
    account_external_id = serializers.SerializerMethodField(help_text="Champion scores: the account's id.")
    value = serializers.SerializerMethodField(method_name="rounded_value")

    class Meta:
        model = Score
        fields = ["kind", "entity_type", "entity_id", "external_id", "account_external_id", "value", "percentile",
                  "grade", "reasons", "model_version", "rule_based", "computed_at", "details"]  # fmt: skip

    def get_entity_id(self, obj: Score) -> str:
        return str(obj.entity_id)

    def rounded_value(self, obj: Score) -> float:
        return round(obj.value, 4)

    def _names(self) -> dict[tuple[str, int], tuple[str | None, str | None]]:
        names: dict[tuple[str, int], tuple[str | None, str | None]] = self.context.get("external_ids", {})
        return names

    def get_external_id(self, obj: Score) -> str | None:
        return self._names().get((obj.entity_type, obj.entity_id), (None, None))[0]

    def get_account_external_id(self, obj: Score) -> str | None:
        return self._names().get((obj.entity_type, obj.entity_id), (None, None))[1]


class ScoreFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=KIND_CHOICES)

    class Meta:
        model = Score
        fields = ["kind"]


class ScorePagination(CursorPagination):
    ordering = "id"


class ScoreViewSet(mixins.ListModelMixin, TenantScopedViewSet):
    """Every current score (of a kind), for bulk pulls by warehouses and CRMs."""

    scoped_model = Score
    serializer_class = ScoreOutputSerializer
    filterset_class = ScoreFilter
    pagination_class = ScorePagination

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        scores = list(page or [])
        context = {**self.get_serializer_context(), "external_ids": _external_ids(self.tenant.pk, scores)}
        return self.get_paginated_response(ScoreOutputSerializer(scores, many=True, context=context).data)


def _external_ids(tenant_id: int, scores: list[Score]) -> dict[tuple[str, int], tuple[str | None, str | None]]:
    wanted: dict[str, set[int]] = {}
    for score in scores:
        wanted.setdefault(score.entity_type, set()).add(score.entity_id)
    names: dict[tuple[str, int], tuple[str | None, str | None]] = {}
    for pk, external_id in (
        Account.objects.for_tenant(tenant_id).filter(pk__in=wanted.get("account", ())).values_list("pk", "external_id")
    ):
        names[("account", pk)] = (external_id, None)
    for pk, external_id, email in (
        EndUser.objects.for_tenant(tenant_id)
        .filter(pk__in=wanted.get("user", ()))
        .values_list("pk", "external_id", "email")
    ):
        names[("user", pk)] = (external_id or email, None)
    for pk, user_id, user_email, account_id in (
        Membership.objects.for_tenant(tenant_id)
        .filter(pk__in=wanted.get("membership", ()))
        .values_list("pk", "end_user__external_id", "end_user__email", "account__external_id")
    ):
        names[("membership", pk)] = (user_id or user_email, account_id)
    return names


class ScoringSettingsView(TenantScopedAPIView):
    """The tenant's scoring settings: stage mapping, key events, horizons, milestones, size segments."""

    write_capability = Capability.MANAGE_TENANT

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="The effective scoring settings (defaults filled in)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(settings_get(tenant=self.tenant))

    @extend_schema(request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT, summary="Replace the settings")
    def put(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            settings = settings_set(tenant=self.tenant, raw=request.data, now=timezone.now())
        except ConfigInvalid as exc:
            raise ValidationError(exc.fields) from None
        return Response(settings)


class ModelVersionOutputSerializer(serializers.ModelSerializer[ModelVersion]):
    id = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = ["id", "kind", "version", "status", "algorithm", "created_at", "trained_at", "scored_at", "metrics",
                  "report", "error"]  # fmt: skip

    def get_id(self, obj: ModelVersion) -> str:
        return str(obj.pk)


class TrainInputSerializer(serializers.Serializer[Any]):
    kind = serializers.ChoiceField(choices=[(kind.value, kind.value) for kind in LEARNED_KINDS])


class ModelVersionFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=KIND_CHOICES)

    class Meta:
        model = ModelVersion
        fields = ["kind"]


class ModelVersionPagination(CursorPagination):
    ordering = "-created_at"


class ModelVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Model versions per kind with their evaluation; `POST train` trains a new one in the background."""

    scoped_model = ModelVersion
    serializer_class = ModelVersionOutputSerializer
    filterset_class = ModelVersionFilter
    pagination_class = ModelVersionPagination
    write_capability = Capability.MANAGE_TENANT

    def get_queryset(self) -> QuerySet[ModelVersion]:
        return super().get_queryset().defer("artifact")

    @extend_schema(request=TrainInputSerializer, responses={202: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"])
    def train(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = TrainInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = model_version_start(tenant=self.tenant, kind=data.validated_data["kind"], now=timezone.now())
        tenant_id = self.tenant.pk
        transaction.on_commit(lambda: model_train_task.apply_async(args=(tenant_id, version.pk)))
        return Response({"id": str(version.pk), "status": version.status, "version": version.version},
                        status=status.HTTP_202_ACCEPTED)  # fmt: skip


class DiscoveryView(TenantScopedAPIView):
    """Signal discovery: per candidate feature, positives vs negatives (means, spread, significance, lift)."""

    @extend_schema(
        parameters=[OpenApiParameter("kind", str, enum=[kind.value for kind in LEARNED_KINDS])],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        kind = request.query_params.get("kind", ScoreKind.CONVERSION)
        if kind not in LEARNED_KINDS:
            raise ValidationError({"kind": f"kind must be one of {', '.join(LEARNED_KINDS)}."})
        return Response(discovery_report(tenant=self.tenant, kind=kind, now=timezone.now()))
