"""`/api/v1/pqls/`: the PQA / PQL list for sales tools (JSON, keyset-paged, or `?format=csv`), and the reps' quick
actions on it. The UI page reads the same selector (`scoring.pqls`)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

import orjson
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Account
from plgapp import rls
from plgapp.api_base import TenantScopedAPIView
from plgapp.roles import Capability
from scoring.api import INVALID
from scoring.pqls import MAX_LIMIT, PqlAccount, PqlFilters, PqlQueryInvalid, csv_rows, pql_iter, pql_page
from scoring.services import DispositionInvalid, lead_disposition_set

DEFAULT_LIMIT = 50


class CsvRenderer(renderers.BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return b""  # the view streams CSV itself; errors come back as JSON


class FastJSONRenderer(renderers.JSONRenderer):
    """DRF's JSON (compact, UTF-8) through orjson: a page of the list is ~50 accounts with ~400 users and their
    scores (~380 KB), which the standard library's encoder takes ~5 ms to write. Datetimes and anything else orjson
    does not write itself go to DRF's encoder, so the output is the same."""

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if data is None:
            return b""
        return orjson.dumps(data, default=self.encoder_class().default, option=orjson.OPT_PASSTHROUGH_DATETIME)


class _Echo:
    def write(self, value: str) -> str:
        return value


def filters_from(params: Any) -> PqlFilters:
    """The list's filters from query parameters (the API's and the page's): stage (repeat or comma-separate),
    min_score (0-1), segment, owner, q."""
    stages = tuple(s.strip() for raw in params.getlist("stage") for s in raw.split(",") if s.strip())
    raw_min = (params.get("min_score") or "").strip()
    try:
        min_score = float(raw_min) if raw_min else None
    except ValueError as exc:
        raise PqlQueryInvalid({"min_score": "a probability from 0 to 1, e.g. 0.75"}) from exc
    if min_score is not None and not 0 <= min_score <= 1:
        raise PqlQueryInvalid({"min_score": "a probability from 0 to 1, e.g. 0.75"})
    return PqlFilters(stages=stages, min_score=min_score, segment=(params.get("segment") or "").strip(),
                      owner=(params.get("owner") or "").strip(), q=(params.get("q") or "").strip())  # fmt: skip


def stream_csv(rows: Iterator[PqlAccount], filename: str, *, tenant_id: int) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse(_as_tenant(tenant_id, (writer.writerow(row) for row in csv_rows(rows))),
                                     content_type="text/csv")  # fmt: skip
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _as_tenant(tenant_id: int, lines: Iterator[str]) -> Iterator[str]:
    """A streamed body is read after the view returned and the request's tenant was cleared (plgapp/rls.py)."""
    with rls.tenant(tenant_id):
        yield from lines


def pql_json(row: PqlAccount) -> dict[str, Any]:
    account = row.account
    return {
        "id": str(account.pk), "external_id": account.external_id, "name": account.name, "domain": account.domain,
        "stage": account.stage, "owner": row.owner or None, "properties": account.properties,
        "conversion": row.conversion, "activation": row.details.get("activation"),
        "size_segment": row.details.get("size_segment"), "product_qualified": row.details.get("product_qualified"),
        "users": [
            {"id": str(user.id), "external_id": user.external_id, "email": user.email, "role": user.role,
             "properties": user.membership,
             "scores": {k: v for k, v in (("health", user.health), ("champion", user.champion)) if v}}
            for user in row.users
        ],
    }  # fmt: skip


PARAMETERS = [
    OpenApiParameter("stage", str, description="Stage(s), repeated or comma-separated. Default: the trial stages."),
    OpenApiParameter("min_score", float, description="Lowest conversion score, 0-1."),
    OpenApiParameter("segment", str, description="Size segment (scoring settings), e.g. small, mid, large."),
    OpenApiParameter("owner", str, description="Owner email (account property owner_email or owner)."),
    OpenApiParameter("q", str, description="Search name, domain, external id."),
    OpenApiParameter("limit", int, description=f"Rows per page, 1-{MAX_LIMIT} (default {DEFAULT_LIMIT})."),
    OpenApiParameter("cursor", str, description="From `next` / `previous` of the last page."),
    OpenApiParameter("format", str, enum=["json", "csv"], description="csv: every row of the list, one download."),
]


class PqlListView(TenantScopedAPIView):
    """Trial accounts ranked by conversion score, each with its users ranked (champion, health) and their role."""

    renderer_classes = [FastJSONRenderer, renderers.BrowsableAPIRenderer, CsvRenderer]

    @extend_schema(parameters=PARAMETERS, responses={200: dict, 400: INVALID})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        now = timezone.now()
        try:
            filters = filters_from(request.query_params)
            if request.accepted_renderer.format == "csv":
                return stream_csv(pql_iter(tenant=self.tenant, filters=filters, now=now), "pqls.csv",
                                  tenant_id=self.tenant.pk)  # fmt: skip
            raw_limit = request.query_params.get("limit") or str(DEFAULT_LIMIT)
            if not (raw_limit.isascii() and raw_limit.isdigit()):
                raise PqlQueryInvalid({"limit": f"a whole number from 1 to {MAX_LIMIT}"})
            # orjson writes the stored JSON of reasons, details and properties as it is; DRF's browsable page
            # encodes with the standard library, which needs them decoded.
            as_stored = isinstance(request.accepted_renderer, FastJSONRenderer)
            page = pql_page(tenant=self.tenant, filters=filters, cursor=request.query_params.get("cursor"),
                            limit=int(raw_limit), now=now, as_stored=as_stored)  # fmt: skip
        except PqlQueryInvalid as exc:
            raise ValidationError(exc.fields) from exc
        return Response({"next": self._link(request, page.next_cursor),
                         "previous": self._link(request, page.previous_cursor),
                         "results": [pql_json(row) for row in page.rows]})  # fmt: skip

    def handle_exception(self, exc: Exception) -> Response:
        # Errors answer in the API's JSON error shape, ?format=csv too: the CSV renderer draws only the list.
        renderer = getattr(self.request, "accepted_renderer", None)
        if renderer is not None and renderer.format == "csv":
            self.request.accepted_renderer = renderers.JSONRenderer()
            self.request.accepted_media_type = renderers.JSONRenderer.media_type
        return super().handle_exception(exc)

    @staticmethod
    def _link(request: Request, cursor: str | None) -> str | None:
        if cursor is None:
            return None
        params = request.query_params.copy()
        params["cursor"] = cursor
        return request.build_absolute_uri(f"{request.path}?{params.urlencode()}")


class DispositionInputSerializer(serializers.Serializer[Any]):
    outcome = serializers.ChoiceField(choices=["done", "disqualified"])
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)


class PqlDispositionView(TenantScopedAPIView):
    """Mark a PQA done or disqualified (with a reason): off the list for a cooldown (14 / 30 days)."""

    read_capability = Capability.WORK_LEADS
    write_capability = Capability.WORK_LEADS

    @extend_schema(request=DispositionInputSerializer, responses={201: dict, 400: INVALID})
    def post(self, request: Request, account_id: int, *args: Any, **kwargs: Any) -> Response:
        body = DispositionInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            disposition = lead_disposition_set(
                tenant=self.tenant, account_id=account_id, outcome=body.validated_data["outcome"],
                reason=body.validated_data["reason"], user=request.user, now=timezone.now(),
            )  # fmt: skip
        except Account.DoesNotExist as exc:
            raise NotFound() from exc
        except DispositionInvalid as exc:
            raise ValidationError(exc.fields) from exc
        return Response(
            {"account": str(account_id), "outcome": disposition.outcome, "reason": disposition.reason,
             "hidden_until": disposition.hidden_until},
            status=status.HTTP_201_CREATED,
        )  # fmt: skip
