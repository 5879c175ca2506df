"""OpenAPI descriptions of the ingestion routes (the views parse JSON themselves, for speed)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema

USER = {"userId": "u-123", "email": "ann@acme.com"}
ACCOUNT = {"accountId": "acc-9", "domain": "acme.com"}
JOURNY_EXAMPLES: dict[str, dict[str, Any]] = {
    "track": {"identification": {"user": USER, "account": ACCOUNT}, "name": "report_built",
              "metadata": {"pages": 3}, "triggeredAt": "2026-01-31T12:00:00Z"},
    "upsertUser": {"identification": USER, "properties": {"first_name": "Ann", "plan": "pro"},
                   "timestamp": "2026-01-31T12:00:00Z"},
    "upsertAccount": {"identification": ACCOUNT, "properties": {"name": "Acme", "stage": "Trial", "seats": 12}},
    "deleteUser": {"identification": USER},
    "deleteAccount": {"identification": ACCOUNT},
    "addUsers": {"account": ACCOUNT, "users": [{"identification": USER, "properties": {"role": "Owner"}}]},
    "removeUsers": {"account": ACCOUNT, "users": [{"identification": USER}]},
    "link": {"deviceId": "device-abc", "identification": USER},
    "batch": {"calls": [{"type": "track", "identification": {"user": USER}, "name": "signed_in"}]},
}  # fmt: skip
SEGMENT_EXAMPLES: dict[str, dict[str, Any]] = {
    "identify": {"userId": "u-123", "traits": {"email": "ann@acme.com", "plan": "pro"}},
    "group": {"userId": "u-123", "groupId": "acc-9", "traits": {"name": "Acme", "website": "https://acme.com"},
              "context": {"membership": {"role": "Owner"}}},
    "track": {"userId": "u-123", "event": "Report Built", "properties": {"pages": 3},
              "context": {"groupId": "acc-9"}, "messageId": "m-1"},
    "alias": {"previousId": "anon-1", "userId": "u-123"},
    "page": {"userId": "u-123", "name": "Pricing", "properties": {"path": "/pricing"}},
    "screen": {"userId": "u-123", "name": "Dashboard"},
    "batch": {"batch": [{"type": "track", "userId": "u-123", "event": "Signed In"}]},
}  # fmt: skip


def journy_schema(kind: str, summary: str) -> Any:
    return extend_schema(
        tags=["ingestion (journy.io-compatible)"],
        summary=summary,
        request=OpenApiTypes.OBJECT,
        responses={
            200 if kind == "batch" else 201: OpenApiResponse(OpenApiTypes.OBJECT, description="Stored"),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid: errors.fields says where"),
            401: OpenApiResponse(description="Missing, wrong or revoked write key"),
            413: OpenApiResponse(description="Over 32 KB a call, 500 KB a batch, or 1,000 calls"),
            429: OpenApiResponse(description="Over the key's rate limit; see Retry-After"),
            503: OpenApiResponse(description="Database unavailable; nothing stored; see Retry-After"),
        },
        examples=[OpenApiExample(kind, value=JOURNY_EXAMPLES[kind], request_only=True)],
    )


def segment_schema(kind: str) -> Any:
    return extend_schema(
        tags=["ingestion (Segment-compatible)"],
        summary=f"Segment {kind}",
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description='{"success": true, …}')},
        examples=[OpenApiExample(kind, value=SEGMENT_EXAMPLES[kind], request_only=True)],
    )


class SegmentWriteKeyScheme(OpenApiAuthenticationExtension):
    target_class = "signals.api_segment.SegmentWriteKeyAuthentication"
    name = "segmentWriteKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "basic",
            "description": "Write key as user name, empty password (or `writeKey` in the JSON body).",
        }
