"""The Segment-compatible Tracking API under /api/segment/v1/ (DESIGN §6), for Segment and RudderStack SDKs.

Auth: HTTP Basic with the write key as user name, or `writeKey` in the body. Answers: 200
{"success": true, …}; errors {"code", "message"} with the 4xx/5xx status (the SDKs read both).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.views import APIView

from plgapp.authentication import WriteKeyAuthentication, authenticate_raw_key
from plgapp.models import ApiKey
from signals.calls import Call, CallInvalid
from signals.http import (
    MAX_BATCH_BYTES,
    MAX_BATCH_CALLS,
    MAX_CALL_BYTES,
    BodyError,
    CanIngest,
    RateLimitedIngestMixin,
    classify,
    json_response,
    parse_json,
    rate_limit_headers,
    raw_call_problems,
    read_body,
)
from signals.schema import segment_schema
from signals.segment import parse_message
from signals.services import calls_ingest

_BODY = "_plg_segment_body"


class SegmentWriteKeyAuthentication(WriteKeyAuthentication):
    """Header first (Basic / x-api-key); else the body's `writeKey`, as Segment's HTTP API allows."""

    def authenticate(self, request: Request) -> Any:
        found = super().authenticate(request)
        if found is not None:
            return found
        body = _body(request)
        write_key = body.get("writeKey") if isinstance(body, dict) else None
        if not isinstance(write_key, str) or not write_key:
            return None
        return authenticate_raw_key(write_key.strip(), accepted=self.accepted)


def _limit_for(request: Request) -> int:
    return MAX_BATCH_BYTES if request.path.rstrip("/").endswith("/batch") else MAX_CALL_BYTES


def _body(request: Request) -> Any:
    django_request = request._request
    if not hasattr(django_request, _BODY):
        setattr(django_request, _BODY, parse_json(read_body(django_request, limit=_limit_for(request))))
    return getattr(django_request, _BODY)


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class SegmentView(RateLimitedIngestMixin, APIView):
    authentication_classes = [SegmentWriteKeyAuthentication]
    permission_classes = [CanIngest]
    parser_classes: list[Any] = []
    message_type: str | None = None  # None: /v1/batch

    def answer(self, status: int, body: dict[str, Any]) -> HttpResponse:
        return json_response(body, status=status, headers=rate_limit_headers(self.rate))

    def handle_exception(self, exc: Exception) -> HttpResponse:  # type: ignore[override]
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            response = self.answer(401, {"code": "unauthorized", "message": str(exc.detail)})
            response["WWW-Authenticate"] = 'Basic realm="ingest"'
            return response
        status, message, headers = classify(exc)
        codes = {400: "invalid_request", 403: "forbidden", 413: "too_large", 415: "unsupported", 429: "rate_limited"}
        response = self.answer(status, {"code": codes.get(status, "error"), "message": message})
        for key, value in headers.items():
            response[key] = value
        return response

    def post(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        now = timezone.now()
        body = _body(request)
        if self.message_type is None:
            messages = body.get("batch") if isinstance(body, dict) else None
            if not isinstance(messages, list):
                raise BodyError(400, 'The body must be {"batch": [...]}.')
            if len(messages) > MAX_BATCH_CALLS:
                raise BodyError(413, f"The batch has {len(messages):,} messages; the limit is {MAX_BATCH_CALLS:,}.")
        else:
            messages = [body]
        calls: list[tuple[int, Call]] = []
        rejected: dict[int, dict[str, str]] = {}
        for index, message in enumerate(messages):
            problems = raw_call_problems(message, what="message")
            if problems:
                rejected[index] = problems
                continue
            try:
                calls.extend((index, call) for call in parse_message(message, kind=self.message_type, now=now))
            except CallInvalid as exc:
                rejected[index] = exc.fields
        api_key = request.auth
        assert isinstance(api_key, ApiKey)
        result = calls_ingest(tenant=api_key.tenant, calls=calls, now=now)
        for item in result.rejected:
            rejected[item.index] = item.fields
        rejections = [
            {"index": index, "message": "; ".join(f"{k}: {v}" for k, v in fields.items()), "fields": fields}
            for index, fields in sorted(rejected.items())
        ]
        if rejections and len(rejections) == len(messages):
            first = rejections[0]["message"]
            return self.answer(400, {"code": "invalid_request", "message": first, "rejected": rejections})
        return self.answer(200, {"success": True, "accepted": len(messages) - len(rejections), "rejected": rejections})


def _view(message_type: str | None) -> type[SegmentView]:
    kind = message_type or "batch"

    def post(self: SegmentView, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        return SegmentView.post(self, request, *args, **kwargs)

    return type(
        f"Segment{kind.title()}View", (SegmentView,), {"message_type": message_type, "post": segment_schema(kind)(post)}
    )


BatchView = _view(None)
IdentifyView = _view("identify")
GroupView = _view("group")
TrackView = _view("track")
AliasView = _view("alias")
PageView = _view("page")
ScreenView = _view("screen")
