"""The journy.io-compatible ingestion API under /api/journy/ (DESIGN §6), for the official journyio-sdk.

Every answer: {"meta": {"status", "requestId"}, "message", "data"?, "errors": {"fields"}?} and the
X-RateLimit-Limit / X-RateLimit-Remaining headers (the SDK reads both on every answer).
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

from plgapp.authentication import WriteKeyAuthentication
from plgapp.keys import KeyKind
from plgapp.models import ApiKey
from signals.calls import CallInvalid
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
from signals.journy import parse_call
from signals.schema import journy_schema, journy_validate_schema
from signals.services import calls_ingest


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class JournyView(RateLimitedIngestMixin, APIView):
    """Base: write-key auth, rate limit, journy envelope for answers and errors."""

    authentication_classes = [WriteKeyAuthentication]
    permission_classes = [CanIngest]
    parser_classes: list[Any] = []

    def envelope(self, status: int, message: str, **extra: Any) -> HttpResponse:
        body: dict[str, Any] = {
            "meta": {"status": status, "requestId": getattr(self.request, "request_id", "")},
            "message": message,
        }
        body.update(extra)
        return json_response(body, status=status, headers=rate_limit_headers(self.rate))

    def handle_exception(self, exc: Exception) -> HttpResponse:  # type: ignore[override]
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            response = self.envelope(401, str(exc.detail))
            response["WWW-Authenticate"] = 'Basic realm="ingest"'
            return response
        status, message, headers = classify(exc)
        response = self.envelope(status, message)
        for key, value in headers.items():
            response[key] = value
        return response

    def ingest_one(self, request: Request, kind: str) -> HttpResponse:
        now = timezone.now()
        body = parse_json(read_body(request, limit=MAX_CALL_BYTES))
        try:
            problems = raw_call_problems(body, what="call")
            if problems:
                raise CallInvalid(problems)
            call = parse_call(kind, body, now=now)
        except CallInvalid as exc:
            return self.envelope(400, f"The {kind} call is invalid: {exc}", errors={"fields": exc.fields})
        api_key = request.auth
        assert isinstance(api_key, ApiKey)
        result = calls_ingest(tenant=api_key.tenant, calls=[(0, call)], now=now)
        if result.rejected:
            fields = result.rejected[0].fields
            return self.envelope(
                400, f"The {kind} call is invalid: {result.rejected[0].message}", errors={"fields": fields}
            )
        if request.method == "DELETE":
            return self.envelope(200, "Deleted")
        return self.envelope(201, "Accepted")


def _single(kind: str, method: str, summary: str) -> type[JournyView]:
    def handler(self: JournyView, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        return self.ingest_one(request, kind)

    return type(
        f"Journy{kind[0].upper()}{kind[1:]}View", (JournyView,), {method: journy_schema(kind, summary, method)(handler)}
    )


TrackView = _single("track", "post", "Track an event of a user, an account, or a user in an account")
UpsertUserView = _single("upsertUser", "post", "Create or update a user (null deletes a property)")
UpsertAccountView = _single("upsertAccount", "post", "Create or update an account (properties.stage moves its stage)")
DeleteUserView = _single("deleteUser", "delete", "Delete a user with its events and memberships")
DeleteAccountView = _single("deleteAccount", "delete", "Delete an account with its events and memberships")
AddUsersView = _single("addUsers", "post", "Add up to 100 users to an account, with relationship properties")
RemoveUsersView = _single("removeUsers", "post", "Remove users from an account (the membership keeps left_at)")
LinkView = _single("link", "post", "Link an anonymous device id to a user; its events move to the user")


class ValidateView(JournyView):
    @journy_validate_schema()
    def get(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        api_key = request.auth
        assert isinstance(api_key, ApiKey)
        permissions = ["TrackData", "ReadApiKey"] + (["ManageData"] if api_key.kind == KeyKind.SECRET else [])
        return self.envelope(200, "OK", data={"permissions": permissions, "tenant": api_key.tenant.slug})


class BatchView(JournyView):
    """Our extension: {"calls": [{"type": "track"|…, …body}]}; good calls are stored, bad ones listed."""

    @journy_schema("batch", "Up to 1,000 calls of any type; good ones are stored, bad ones listed by index")
    def post(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        now = timezone.now()
        body = parse_json(read_body(request, limit=MAX_BATCH_BYTES))
        raw_calls = body.get("calls") if isinstance(body, dict) else None
        if not isinstance(raw_calls, list):
            raise BodyError(400, 'The body must be {"calls": [...]}.')
        if len(raw_calls) > MAX_BATCH_CALLS:
            raise BodyError(413, f"The batch has {len(raw_calls):,} calls; the limit is {MAX_BATCH_CALLS:,}.")
        parsed = []
        rejected: dict[int, dict[str, str]] = {}
        for index, raw in enumerate(raw_calls):
            if not isinstance(raw, dict):
                rejected[index] = {"call": "must be an object with a type"}
                continue
            problems = raw_call_problems(raw, what="call")
            if problems:
                rejected[index] = problems
                continue
            try:
                parsed.append((index, parse_call(str(raw.get("type")), raw, now=now)))
            except CallInvalid as exc:
                rejected[index] = exc.fields
        api_key = request.auth
        assert isinstance(api_key, ApiKey)
        result = calls_ingest(tenant=api_key.tenant, calls=parsed, now=now)
        for item in result.rejected:
            rejected[item.index] = item.fields
        rejections = [
            {"index": index, "message": "; ".join(f"{k}: {v}" for k, v in fields.items()), "fields": fields}
            for index, fields in sorted(rejected.items())
        ]
        accepted = len(raw_calls) - len(rejections)
        if raw_calls and accepted == 0:
            return self.envelope(400, "No call of the batch was stored.", data={"accepted": 0, "rejected": rejections})
        message = "Accepted" if not rejections else f"Accepted {accepted} calls; rejected {len(rejections)}."
        return self.envelope(200, message, data={"accepted": accepted, "rejected": rejections})
