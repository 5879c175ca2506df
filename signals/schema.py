"""OpenAPI descriptions of the ingestion routes (the views parse JSON themselves, for speed)."""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers

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


# --- request bodies (JSON Schema): what each call takes. The views parse JSON themselves (no DRF parser), so the
# shapes are written out here; signals.journy / signals.segment are the truth and answer 400 for the rest. -------

_ID = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"}
_TIME = {"type": "string", "format": "date-time", "description": "ISO-8601; the time the call describes"}
_USER = {
    "type": "object",
    "description": "userId and/or email",
    "properties": {"userId": _ID, "email": {"type": "string", "format": "email", "maxLength": 255}},
    "anyOf": [{"required": ["userId"]}, {"required": ["email"]}],
}
_ACCOUNT = {
    "type": "object",
    "description": "accountId and/or domain",
    "properties": {"accountId": _ID, "domain": {"type": "string", "format": "hostname"}},
    "anyOf": [{"required": ["accountId"]}, {"required": ["domain"]}],
}
_SINGLE = [{"type": "string", "maxLength": 10_000}, {"type": "number"}, {"type": "boolean"}]
_PROPERTIES = {
    "type": "object",
    "description": "string, number, boolean, ISO-8601 datetime or list of strings; null deletes the property",
    "additionalProperties": {"anyOf": [*_SINGLE, {"type": "array", "items": {"type": "string"}, "maxItems": 1000}]},
}
_METADATA = {"type": "object", "description": "single values only", "additionalProperties": {"anyOf": _SINGLE}}


def _call(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, **({"required": required} if required else {})}


JOURNY_BODIES: dict[str, dict[str, Any]] = {
    "track": _call(
        ["identification", "name"],
        identification={"type": "object", "description": "user, account, or both",
                        "properties": {"user": _USER, "account": _ACCOUNT},
                        "anyOf": [{"required": ["user"]}, {"required": ["account"]}]},
        name={**_ID, "description": "the event"}, metadata=_METADATA, triggeredAt=_TIME,
        messageId={**_ID, "description": "dedupes: the same messageId is stored once"},
    ),
    "upsertUser": _call(["identification"], identification=_USER, properties=_PROPERTIES, timestamp=_TIME),
    "upsertAccount": _call(["identification"], identification=_ACCOUNT, properties=_PROPERTIES, timestamp=_TIME),
    "deleteUser": _call(["identification"], identification=_USER),
    "deleteAccount": _call(["identification"], identification=_ACCOUNT),
    "addUsers": _call(
        ["account", "users"], account=_ACCOUNT, timestamp=_TIME,
        users={"type": "array", "minItems": 1, "maxItems": 100,
               "items": _call(["identification"], identification=_USER,
                              properties={**_PROPERTIES, "description": "relationship properties, e.g. role"})},
    ),
    "removeUsers": _call(
        ["account", "users"], account=_ACCOUNT, timestamp=_TIME,
        users={"type": "array", "minItems": 1, "maxItems": 100,
               "items": _call(["identification"], identification=_USER)},
    ),
    "link": _call(["deviceId", "identification"], deviceId=_ID, identification=_USER, timestamp=_TIME),
}  # fmt: skip
_BATCHABLE = ("track", "upsertUser", "upsertAccount", "addUsers", "removeUsers", "link")
JOURNY_BODIES["batch"] = _call(
    ["calls"],
    calls={"type": "array", "maxItems": 1000, "items": {"anyOf": [
        {**JOURNY_BODIES[kind], "required": [*JOURNY_BODIES[kind].get("required", []), "type"],
         "properties": {**JOURNY_BODIES[kind]["properties"], "type": {"type": "string", "enum": [kind]}}}
        for kind in _BATCHABLE
    ]}},
)  # fmt: skip

_SEGMENT_COMMON: dict[str, Any] = {
    "userId": _ID, "anonymousId": _ID, "messageId": _ID, "timestamp": _TIME,
    "context": {"type": "object", "properties": {"groupId": _ID, "membership": _PROPERTIES}},
    "writeKey": {"type": "string", "description": "the write key, if not sent as HTTP Basic user name"},
}  # fmt: skip
_SEGMENT_PROPERTIES = {"type": "object", "description": "nested objects become dotted keys"}
_SOMEONE = {"anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}]}
SEGMENT_BODIES: dict[str, dict[str, Any]] = {
    "identify": {**_call([], traits={**_PROPERTIES, "description": "user properties; email is the user's email"},
                         **_SEGMENT_COMMON),
                 "anyOf": [{"required": ["userId"]},
                           {"required": ["traits"], "properties": {"traits": {"required": ["email"]}}}]},
    "group": _call(["groupId"], groupId=_ID, traits={**_PROPERTIES, "description": "account properties; name, and "
                   "domain or the host of website, name the account"}, **_SEGMENT_COMMON),
    "track": {**_call(["event"], event=_ID, properties=_SEGMENT_PROPERTIES, **_SEGMENT_COMMON), **_SOMEONE},
    "alias": _call(["previousId", "userId"], previousId=_ID, **_SEGMENT_COMMON),
    "page": {**_call([], name={"type": "string"}, category={"type": "string"}, properties=_SEGMENT_PROPERTIES,
                     **_SEGMENT_COMMON), **_SOMEONE},
    "screen": {**_call([], name={"type": "string"}, category={"type": "string"}, properties=_SEGMENT_PROPERTIES,
                       **_SEGMENT_COMMON), **_SOMEONE},
}  # fmt: skip
SEGMENT_BODIES["batch"] = _call(
    ["batch"],
    batch={"type": "array", "maxItems": 1000, "items": {"anyOf": [
        {**body, "required": [*body.get("required", []), "type"],
         "properties": {**body["properties"], "type": {"type": "string", "enum": [kind]}}}
        for kind, body in SEGMENT_BODIES.items()
    ]}},
    writeKey=_SEGMENT_COMMON["writeKey"],
)  # fmt: skip


# --- answers -------------------------------------------------------------------------------------------------


class JournyMetaSerializer(serializers.Serializer[Any]):
    status = serializers.IntegerField(help_text="The HTTP status, repeated")
    requestId = serializers.CharField()  # the journy.io wire name


class JournyErrorsSerializer(serializers.Serializer[Any]):
    # The metaclass moves declared fields off the class, so this does not shadow Serializer.fields at run time.
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.CharField(), help_text="What is wrong, by dotted path into the body"
    )


class JournyAnswerSerializer(serializers.Serializer[Any]):
    """Every answer of the journy.io-compatible API, errors included."""

    meta = JournyMetaSerializer()
    message = serializers.CharField()
    # Declared fields leave the class (see JournyErrorsSerializer.fields): these do not shadow .data / .errors.
    data = serializers.JSONField(required=False)  # type: ignore[assignment]
    errors = JournyErrorsSerializer(required=False)  # type: ignore[assignment]


class SegmentRejectedSerializer(serializers.Serializer[Any]):
    index = serializers.IntegerField()
    message = serializers.CharField()
    # See JournyErrorsSerializer.fields.
    fields = serializers.DictField(child=serializers.CharField())  # type: ignore[assignment]


class SegmentAnswerSerializer(serializers.Serializer[Any]):
    success = serializers.BooleanField()
    accepted = serializers.IntegerField()
    rejected = SegmentRejectedSerializer(many=True, help_text="The messages not stored, by index, and why")


class SegmentErrorSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    message = serializers.CharField()
    rejected = SegmentRejectedSerializer(many=True, required=False)


def _failures(error: Any, *, validation: str) -> dict[int, OpenApiResponse]:
    return {
        400: OpenApiResponse(error, description=validation),
        401: OpenApiResponse(error, description="Missing, wrong or revoked write key"),
        413: OpenApiResponse(error, description="Over 32 KB a call, 500 KB a batch, or 1,000 calls"),
        415: OpenApiResponse(error, description="A Content-Encoding other than gzip"),
        429: OpenApiResponse(error, description="Over the key's rate limit; see Retry-After"),
        503: OpenApiResponse(error, description="Database unavailable; nothing stored; see Retry-After"),
    }


def journy_schema(kind: str, summary: str, method: str = "post") -> Any:
    stored = 200 if kind == "batch" or method == "delete" else 201
    body = "" if method == "post" else f" The body (JSON): {json.dumps(JOURNY_EXAMPLES[kind])}."
    return extend_schema(
        tags=["ingestion (journy.io-compatible)"],
        summary=summary,
        description=f"{DESCRIPTIONS.get(kind, '')}{body}".strip() or None,
        request={"application/json": JOURNY_BODIES[kind]},
        responses={
            stored: OpenApiResponse(JournyAnswerSerializer, description="Stored"),
            **_failures(JournyAnswerSerializer, validation="Invalid: errors.fields says where"),
        },
        examples=[OpenApiExample(kind, value=JOURNY_EXAMPLES[kind], request_only=True)],
    )


def journy_validate_schema() -> Any:
    failures = _failures(JournyAnswerSerializer, validation="")
    return extend_schema(
        tags=["ingestion (journy.io-compatible)"],
        summary="Check a write key",
        responses={
            200: OpenApiResponse(JournyAnswerSerializer, description='data: {"permissions": [...], "tenant"}'),
            **{code: failures[code] for code in (401, 429, 503)},
        },
    )


def segment_schema(kind: str) -> Any:
    return extend_schema(
        tags=["ingestion (Segment-compatible)"],
        summary=f"Segment {kind}",
        request={"application/json": SEGMENT_BODIES[kind]},
        responses={
            200: OpenApiResponse(SegmentAnswerSerializer, description="Stored, except the messages listed"),
            **_failures(SegmentErrorSerializer, validation="Invalid: not one message could be stored"),
        },
        examples=[OpenApiExample(kind, value=SEGMENT_EXAMPLES[kind], request_only=True)],
    )


DESCRIPTIONS = {
    "batch": 'Our extension: {"calls": [{"type": "track"|…, …body}]}; good calls are stored, bad ones listed '
    "by index in data.rejected (400 when none could be stored).",
}


class SegmentWriteKeyScheme(OpenApiAuthenticationExtension):
    target_class = "signals.api_segment.SegmentWriteKeyAuthentication"
    name = "segmentWriteKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "basic",
            "description": "Write key as user name, empty password (or `writeKey` in the JSON body).",
        }
