"""Management API of scoring (DESIGN §7): scores in bulk, settings, model versions (+ train), discovery."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Account, EndUser, Membership
from accounts.serializers import ReasonSerializer
from plgapp.api_base import TenantScopedAPIView, TenantScopedViewSet
from plgapp.pagination import CursorPagination
from plgapp.roles import Capability
from plgapp.schema import error_answer
from scoring.config import MAX_HORIZON_DAYS, MILESTONE_METRICS, ConfigInvalid
from scoring.discovery import discovery_report
from scoring.models import ModelVersion, Score, ScoreKind
from scoring.services import LEARNED_KINDS, model_version_start, settings_get, settings_set
from scoring.tasks import model_train_task

KIND_CHOICES = [(kind.value, kind.value) for kind in ScoreKind]


# --- shapes for the OpenAPI description (the API renders the stored JSON as it is) ---------------------------------

INVALID = error_answer("Invalid input; error.fields names each bad field")


@extend_schema_field(ReasonSerializer(many=True))
class ReasonsField(serializers.JSONField):
    pass


class ModelMetricsSerializer(serializers.Serializer[Any]):
    """Evaluation of a version on its newest snapshots (DESIGN §7); empty (`{}`) until it is trained, and for a
    version that failed."""

    auc = serializers.FloatField(allow_null=True, required=False)
    pr_auc = serializers.FloatField(allow_null=True, required=False)
    brier = serializers.FloatField(allow_null=True, required=False)
    ece = serializers.FloatField(allow_null=True, required=False, help_text="Expected calibration error.")
    lift_top_decile = serializers.FloatField(allow_null=True, required=False)
    recall_top_20 = serializers.FloatField(allow_null=True, required=False)
    baseline_auc = serializers.FloatField(
        allow_null=True, required=False, help_text="The rule-based score's AUC on the same rows."
    )
    n_train = serializers.IntegerField(required=False)
    n_positive = serializers.IntegerField(required=False)


@extend_schema_field(ModelMetricsSerializer)
class MetricsField(serializers.JSONField):
    pass


class StageGroupsSerializer(serializers.Serializer[Any]):
    trial = serializers.ListField(child=serializers.CharField())
    paying = serializers.ListField(child=serializers.CharField())
    churned = serializers.ListField(child=serializers.CharField())


class HorizonSerializer(serializers.Serializer[Any]):
    horizon_days = serializers.IntegerField(min_value=1, max_value=MAX_HORIZON_DAYS)


class HealthHorizonSerializer(HorizonSerializer):
    activity_events = serializers.ListField(child=serializers.CharField(), help_text="Empty: any event counts.")


class ModelSettingsSerializer(serializers.Serializer[Any]):
    conversion = HorizonSerializer()
    churn = HorizonSerializer()
    health = HealthHorizonSerializer()


class MilestoneSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    metric = serializers.ChoiceField(choices=MILESTONE_METRICS, required=False, help_text="Default: event.")
    event = serializers.CharField(required=False, help_text="The event to count (metric event).")
    count = serializers.FloatField()
    within_hours = serializers.FloatField(required=False, allow_null=True, help_text="From the account's start.")


class SizeSegmentSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    max = serializers.FloatField(allow_null=True, help_text="Upper bound; null on the last (open-ended) segment.")
    activation_threshold = serializers.FloatField(min_value=0, max_value=1)


class SizeSegmentsSerializer(serializers.Serializer[Any]):
    property = serializers.CharField(help_text="A numeric account property, e.g. employees.")
    segments = SizeSegmentSerializer(many=True)


class ChampionWeightsSerializer(serializers.Serializer[Any]):
    share = serializers.FloatField(min_value=0, max_value=1)
    role = serializers.FloatField(min_value=0, max_value=1)
    health = serializers.FloatField(min_value=0, max_value=1)


class ChampionSettingsSerializer(serializers.Serializer[Any]):
    role_weights = serializers.DictField(child=serializers.FloatField(min_value=0, max_value=1))
    weights = ChampionWeightsSerializer()


class ScoringSettingsSerializer(serializers.Serializer[Any]):
    """The scoring settings document; on PUT a section left out takes its default."""

    stages = StageGroupsSerializer(required=False)
    key_events = serializers.ListField(child=serializers.CharField(), required=False,
                                       help_text="Value metrics; empty: the most frequent events.")  # fmt: skip
    excluded_properties = serializers.ListField(child=serializers.CharField(), required=False,
                                                help_text="Property keys that are never features.")  # fmt: skip
    models = ModelSettingsSerializer(required=False)
    milestones = MilestoneSerializer(many=True, required=False)
    size_segments = SizeSegmentsSerializer(required=False)
    champion = ChampionSettingsSerializer(required=False)


class TrainOutputSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    status = serializers.CharField(help_text="training")
    version = serializers.IntegerField()


class DistributionSerializer(serializers.Serializer[Any]):
    mean = serializers.FloatField(allow_null=True)
    median = serializers.FloatField(allow_null=True)
    std = serializers.FloatField(allow_null=True)


class FeatureEvidenceSerializer(serializers.Serializer[Any]):
    feature = serializers.CharField()
    positive = DistributionSerializer(help_text="Among the rows with the outcome (e.g. converted).")
    negative = DistributionSerializer(help_text="Among the others.")
    p_value = serializers.FloatField(help_text="Mann-Whitney U, two-sided.")
    auc = serializers.FloatField(help_text="How well the feature alone ranks the outcome (0.5: not at all).")
    direction = serializers.ChoiceField(choices=[("+", "raises the score"), ("-", "lowers the score")])
    lift_above_median = serializers.FloatField(allow_null=True)
    rows_known = serializers.IntegerField()


class DiscoveryOutputSerializer(serializers.Serializer[Any]):
    kind = serializers.CharField()
    positive_label = serializers.CharField(required=False)
    rows = serializers.IntegerField(help_text="Labelled snapshot rows.")
    positives = serializers.IntegerField()
    snapshots = serializers.ListField(child=serializers.DateField(), required=False)
    features = FeatureEvidenceSerializer(many=True, help_text="Strongest evidence first.")
    note = serializers.CharField(required=False)


# --- scores -------------------------------------------------------------------------------------------------------


class ScoreOutputSerializer(serializers.ModelSerializer[Score]):
    entity_id = serializers.SerializerMethodField()
    external_id = serializers.SerializerMethodField()
    account_external_id = serializers.SerializerMethodField(help_text="Champion scores: the account's id.")
    value = serializers.SerializerMethodField(method_name="rounded_value")
    reasons = ReasonsField(read_only=True)

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
    kind = django_filters.ChoiceFilter(choices=KIND_CHOICES, required=True)

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

    @extend_schema(responses=ScoringSettingsSerializer, summary="The effective scoring settings (defaults filled in)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(settings_get(tenant=self.tenant))

    @extend_schema(
        request=ScoringSettingsSerializer,
        responses={200: ScoringSettingsSerializer, 400: INVALID},
        summary="Replace the settings (a section left out takes its default)",
    )
    def put(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            settings = settings_set(tenant=self.tenant, raw=request.data, now=timezone.now())
        except ConfigInvalid as exc:
            raise ValidationError(exc.fields) from None
        return Response(settings)


class ModelVersionOutputSerializer(serializers.ModelSerializer[ModelVersion]):
    id = serializers.SerializerMethodField()
    metrics = MetricsField(read_only=True)

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
    # Newest first by id, a unique cursor position: the nightly retrain starts every kind at the same created_at.
    ordering = "-id"


class ModelVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Model versions per kind with their evaluation; `POST train` trains a new one in the background."""

    scoped_model = ModelVersion
    serializer_class = ModelVersionOutputSerializer
    filterset_class = ModelVersionFilter
    pagination_class = ModelVersionPagination
    write_capability = Capability.MANAGE_TENANT

    def get_queryset(self) -> QuerySet[ModelVersion]:
        return super().get_queryset().defer("artifact")

    @extend_schema(request=TrainInputSerializer, responses={202: TrainOutputSerializer, 400: INVALID})
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
        parameters=[
            OpenApiParameter(
                "kind", str, enum=[kind.value for kind in LEARNED_KINDS], description="Default: conversion."
            )
        ],
        responses={200: DiscoveryOutputSerializer, 400: INVALID},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        kind = request.query_params.get("kind", ScoreKind.CONVERSION)
        if kind not in LEARNED_KINDS:
            raise ValidationError({"kind": f"kind must be one of {', '.join(LEARNED_KINDS)}."})
        return Response(discovery_report(tenant=self.tenant, kind=kind, now=timezone.now()))
