"""Management API of playbooks (DESIGN §7): CRUD with versions, lifecycle, preview, results, enrollments, runs."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from integrations.templates import MAX_TEMPLATE, TemplateInvalid
from playbooks.connectors import PreviewNotFound, template_preview
from playbooks.evaluation import preview
from playbooks.models import (
    ActionPhase,
    ActionRun,
    Enrollment,
    EnrollmentGroup,
    EnrollmentStatus,
    Playbook,
    PlaybookStatus,
    PlaybookVersion,
    RunStatus,
)
from playbooks.selectors import playbook_results
from playbooks.serializers import (
    ActionRunOutputSerializer,
    EnrollmentOutputSerializer,
    PlaybookCreateInputSerializer,
    PlaybookOutputSerializer,
    PlaybookPublishInputSerializer,
    PreviewInputSerializer,
    VersionOutputSerializer,
)
from playbooks.services import (
    PlaybookInvalid,
    TransitionRefused,
    playbook_create,
    playbook_publish,
    playbook_transition,
    run_retry,
)
from plgapp.api_base import TenantScopedAPIView, TenantScopedViewSet
from plgapp.models import User
from plgapp.pagination import CursorPagination
from plgapp.roles import Capability
from plgapp.schema import error_answer


def _user(request: Request) -> User | None:
    return request.user if isinstance(request.user, User) else None


class PlaybookFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=PlaybookStatus.choices)
    object = django_filters.ChoiceFilter(choices=[("account", "account"), ("user", "user")])

    class Meta:
        model = Playbook
        fields = ["status", "object"]


class PlaybookPagination(CursorPagination):
    ordering = "-created_at"


class EnrollmentFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=EnrollmentStatus.choices)
    group = django_filters.ChoiceFilter(choices=EnrollmentGroup.choices)
    entity = django_filters.NumberFilter(field_name="entity_id")

    class Meta:
        model = Enrollment
        fields = ["status", "group", "entity"]


class RunFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=RunStatus.choices)
    phase = django_filters.ChoiceFilter(choices=ActionPhase.choices)
    action_id = django_filters.CharFilter()

    class Meta:
        model = ActionRun
        fields = ["status", "phase", "action_id"]


class ByIdPagination(CursorPagination):
    ordering = "-id"


ENROLLMENT_FILTERS = [
    OpenApiParameter("status", str, enum=EnrollmentStatus.values),
    OpenApiParameter("group", str, enum=EnrollmentGroup.values),
    OpenApiParameter("entity", int, description="The enrolled account's or user's id."),
]
RUN_FILTERS = [
    OpenApiParameter("status", str, enum=RunStatus.values),
    OpenApiParameter("phase", str, enum=ActionPhase.values),
    OpenApiParameter("action_id", str),
]


class PlaybookViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Playbooks. `PUT` publishes a new immutable version (running enrollments keep theirs unless
    `in_flight_policy` is "exit"). Marketers and admins edit; everyone with access reads."""

    scoped_model = Playbook
    serializer_class = PlaybookOutputSerializer
    filterset_class = PlaybookFilter
    pagination_class = PlaybookPagination
    write_capability = Capability.EDIT_PLAYBOOKS
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Playbook]:
        return super().get_queryset().select_related("current_version")

    def get_object(self) -> Playbook:
        # The list filters (status, object) are not for details: `…/runs?status=dead` filters the runs.
        return get_object_or_404(self.get_queryset(), pk=self.kwargs["pk"])

    def _invalid(self, exc: PlaybookInvalid) -> ValidationError:
        return ValidationError(exc.fields)

    @extend_schema(request=PlaybookCreateInputSerializer, responses={201: PlaybookOutputSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = PlaybookCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            playbook = playbook_create(tenant=self.tenant, name=data.validated_data["name"],
                                       definition=data.validated_data["definition"], created_by=_user(request),
                                       now=timezone.now())  # fmt: skip
        except PlaybookInvalid as exc:
            raise self._invalid(exc) from None
        return Response(PlaybookOutputSerializer(playbook).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=PlaybookPublishInputSerializer, responses=PlaybookOutputSerializer)
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        playbook = self.get_object()
        data = PlaybookPublishInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            playbook = playbook_publish(
                tenant=self.tenant, playbook_id=playbook.pk, definition=data.validated_data["definition"],
                in_flight_policy=data.validated_data["in_flight_policy"], name=data.validated_data.get("name"),
                created_by=_user(request), now=timezone.now(),
            )  # fmt: skip
        except PlaybookInvalid as exc:
            raise self._invalid(exc) from None
        except TransitionRefused as exc:
            raise ValidationError({"status": str(exc)}) from None
        return Response(PlaybookOutputSerializer(self.get_queryset().get(pk=playbook.pk)).data)

    def _transition(self, name: str) -> Response:
        playbook = self.get_object()
        try:
            playbook = playbook_transition(tenant=self.tenant, playbook_id=playbook.pk, action=name, now=timezone.now())
        except TransitionRefused as exc:
            raise ValidationError({"status": str(exc)}) from None
        return Response(PlaybookOutputSerializer(self.get_queryset().get(pk=playbook.pk)).data)

    @extend_schema(request=None, responses=PlaybookOutputSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._transition("activate")

    @extend_schema(request=None, responses=PlaybookOutputSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._transition("pause")

    @extend_schema(request=None, responses=PlaybookOutputSerializer)
    @action(detail=True, methods=["post"])
    def archive(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._transition("archive")

    @extend_schema(request=PreviewInputSerializer, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["post"], url_path="preview")
    def preview(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """How many entities match the entry now (or the `entry` sent), and a sample — computed in SQL."""
        playbook = self.get_object()
        data = PreviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        entry = data.validated_data.get("entry")
        if entry is None:
            assert playbook.current_version is not None
            entry = playbook.current_version.definition.get("entry")
        try:
            found = preview(tenant=self.tenant, obj=playbook.object, condition=entry, now=timezone.now(),
                            sample=data.validated_data["sample"])  # fmt: skip
        except PlaybookInvalid as exc:
            raise self._invalid(exc) from None
        return Response(found)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def results(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(playbook_results(tenant=self.tenant, playbook=self.get_object()))

    @extend_schema(responses=VersionOutputSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])  # every version, newest first
    def versions(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        playbook = self.get_object()
        versions = PlaybookVersion.objects.for_tenant(self.tenant).filter(playbook=playbook).order_by("-number")
        return Response(VersionOutputSerializer(versions, many=True).data)

    def _paged(self, queryset: QuerySet[Any], filterset: type[django_filters.FilterSet], serializer: Any) -> Response:
        filtered = filterset(self.request.query_params, queryset=queryset, request=self.request)
        if not filtered.is_valid():
            raise ValidationError(filtered.errors)
        paginator = ByIdPagination()
        page = paginator.paginate_queryset(filtered.qs, self.request, view=self)
        return paginator.get_paginated_response(serializer(page, many=True).data)

    # Paged and filtered by _paged (not by the playbook list's filters): the schema says so.
    @extend_schema(responses=EnrollmentOutputSerializer(many=True), filters=False, parameters=ENROLLMENT_FILTERS)
    @action(detail=True, methods=["get"], pagination_class=ByIdPagination)
    def enrollments(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        playbook = self.get_object()
        queryset = Enrollment.objects.for_tenant(self.tenant).filter(playbook=playbook).select_related("version")
        return self._paged(queryset, EnrollmentFilter, EnrollmentOutputSerializer)

    @extend_schema(responses=ActionRunOutputSerializer(many=True), filters=False, parameters=RUN_FILTERS)
    @action(detail=True, methods=["get"], pagination_class=ByIdPagination)
    def runs(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        playbook = self.get_object()
        return self._paged(ActionRun.objects.for_tenant(self.tenant).filter(playbook=playbook), RunFilter,
                           ActionRunOutputSerializer)  # fmt: skip


class ActionRunViewSet(mixins.RetrieveModelMixin, TenantScopedViewSet):
    """One action run; `POST retry` re-drives a dead one."""

    scoped_model = ActionRun
    serializer_class = ActionRunOutputSerializer
    write_capability = Capability.EDIT_PLAYBOOKS

    @extend_schema(request=None, responses=ActionRunOutputSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        run = self.get_object()
        try:
            run = run_retry(tenant=self.tenant, run_id=run.pk, now=timezone.now())
        except TransitionRefused as exc:
            raise ValidationError({"status": str(exc)}) from None
        return Response(ActionRunOutputSerializer(run).data)


class TemplatePreviewInputSerializer(serializers.Serializer[Any]):
    template = serializers.CharField(trim_whitespace=False, max_length=MAX_TEMPLATE)
    account = serializers.IntegerField(required=False, help_text="An account id of the tenant.")
    user = serializers.IntegerField(required=False, help_text="A user id (with an account: their role there).")


class TemplatePreviewView(TenantScopedAPIView):
    """Render a message template for a chosen account and/or user, as it would be sent (the builder's live
    preview). An unknown name or a syntax error answers 400 with what is wrong."""

    write_capability = Capability.EDIT_PLAYBOOKS

    @extend_schema(
        request=TemplatePreviewInputSerializer,
        responses={200: OpenApiTypes.OBJECT, 404: error_answer("No such account or user in this tenant")},
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = TemplatePreviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            text = template_preview(tenant=self.tenant, template=data.validated_data["template"],
                                    account_id=data.validated_data.get("account"),
                                    user_id=data.validated_data.get("user"))  # fmt: skip
        except PreviewNotFound:
            raise NotFound("no such account or user") from None
        except TemplateInvalid as exc:
            raise ValidationError({"template": str(exc)}) from None
        return Response({"text": text})
