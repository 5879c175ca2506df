"""Shared HTTP plumbing of both ingestion doors: bounded (gzip) bodies, JSON errors, rate limits, outages."""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from plgapp.models import ApiKey
from plgapp.roles import Capability
from plgapp.tenancy import access_for_api_key
from signals.calls import nul_fields
from signals.ratelimit import RateLimit, default_limit, rate_limit_hit

DATABASE_RETRY_AFTER = 5


class BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def read_body(request: HttpRequest, *, limit: int) -> bytes:
    """The request body, gunzipped if needed, refusing more than `limit` bytes before holding them."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise BodyError(415, f"Content-Encoding {encoding!r} is not supported; send plain or gzip JSON.")
    if declared.isdigit() and int(declared) > limit and encoding != "gzip":
        raise BodyError(413, f"The body is {int(declared):,} bytes; the limit is {limit:,} bytes.")
    raw = request.read(limit + 1)
    if encoding != "gzip":
        if len(raw) > limit:
            raise BodyError(413, f"The body is over the limit of {limit:,} bytes.")
        return raw
    if len(raw) > limit:
        raise BodyError(413, f"The compressed body is over the limit of {limit:,} bytes.")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        # max_length stops a gzip bomb after limit+1 bytes instead of inflating all of it.
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BodyError(400, f"The body is not valid gzip: {exc}.") from exc
    if len(body) > limit or inflater.unconsumed_tail:
        raise BodyError(413, f"The body is over the limit of {limit:,} bytes after decompression.")
    return body


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise BodyError(400, "The body is empty; send a JSON object.")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno} (char {exc.pos})"
        raise BodyError(400, f"Malformed JSON: {exc.msg} at {where}.") from None
    if json_deeper_than(raw, parsed, MAX_JSON_DEPTH):
        raise BodyError(400, f"The JSON is nested deeper than {MAX_JSON_DEPTH} levels; send flatter properties.")
    return parsed


MAX_JSON_DEPTH = 32  # calls are a few levels deep; deeper is a mistake or an attack (and beyond what we can store)


_CONTAINERS = (dict, list)
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'"[]{}')  # every byte but quotes and brackets


def json_deeper_than(raw: bytes, parsed: Any, limit: int) -> bool:
    """`_deeper_than(parsed, limit)`, decided from the JSON text at C speed when it can be (a third of the time).

    With no backslash in the text, every quote opens or closes a string. Keeping only quotes and brackets and
    dropping the empty strings leaves the containers' skeleton, unless a string held a bracket (a quote is left:
    walk instead). Each round of deleting `{}` then `[]` pairs removes the innermost level and at most one more,
    so a skeleton gone within `limit // 2` rounds nests at most `limit` deep; anything else is walked exactly.
    """
    if b"\\" not in raw:
        skeleton = raw.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
        if b'"' not in skeleton:
            for _round in range(limit // 2):
                skeleton = skeleton.replace(b"{}", b"").replace(b"[]", b"")
                if not skeleton:
                    return False
    return _deeper_than(parsed, limit)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit`: level by level, looking only at containers (no recursion for
    an attacker to exhaust; a third of the time of a walk over every value)."""
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        nested: list[Any] = []
        for node in level:
            nested += [child for child in (node.values() if isinstance(node, dict) else node)
                       if isinstance(child, _CONTAINERS)]  # fmt: skip
        level = nested
    return False


def json_response(body: Any, *, status: int, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def raw_call_problems(call: Any, *, what: str) -> dict[str, str] | None:
    """What makes one call of a request unstorable before it is even parsed: its size, NUL characters."""
    dumped = orjson.dumps(call)
    if len(dumped) > MAX_CALL_BYTES:
        return {what: f"is over the limit of {MAX_CALL_BYTES:,} bytes"}
    if b"\\u0000" in dumped:  # cheap test first; the walk finds where (or that it was an escaped backslash)
        return nul_fields(call) or None
    return None


class RateLimitedIngestMixin:
    """Both doors: count the request against the key's rate limit once authenticated."""

    rate: RateLimit | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        self.rate = rate_limit_for(request)
        if self.rate.exceeded:
            raise exceptions.Throttled(wait=self.rate.retry_after)


class CanIngest(BasePermission):
    message = "This key cannot send data."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, ApiKey) and access_for_api_key(request.auth).can(Capability.INGEST)


def rate_limit_for(request: Request) -> RateLimit:
    api_key = request.auth
    assert isinstance(api_key, ApiKey)
    limit = api_key.tenant.ingest_rate_limit or default_limit()
    return rate_limit_hit(key_id=str(api_key.pk), limit=limit)


def rate_limit_headers(limit: RateLimit | None) -> dict[str, str]:
    if limit is None:  # no key yet (e.g. 401): the default, untouched
        return {"X-RateLimit-Limit": str(default_limit()), "X-RateLimit-Remaining": str(default_limit())}
    return {"X-RateLimit-Limit": str(limit.limit), "X-RateLimit-Remaining": str(max(limit.remaining, 0))}


def classify(exc: Exception) -> tuple[int, str, dict[str, str]]:
    """Map an exception of the ingestion path to (status, message, extra headers)."""
    if isinstance(exc, BodyError):
        return exc.status, exc.message, {}
    if isinstance(exc, OperationalError | InterfaceError):
        return (
            503,
            "The database is unavailable; nothing was stored. Retry shortly.",
            {"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    if isinstance(exc, IntegrityError):  # concurrent requests created the same users or accounts on every retry
        return (
            503,
            "Concurrent requests are creating the same records; nothing was stored. Retry shortly.",
            {"Retry-After": "1"},
        )
    if isinstance(exc, exceptions.Throttled):
        wait = int(getattr(exc, "wait", None) or 1)
        return 429, f"Rate limit exceeded; retry in {wait} s.", {"Retry-After": str(wait)}
    if isinstance(exc, exceptions.APIException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return exc.status_code, str(detail), {}
    raise exc


MAX_CALL_BYTES = settings.INGEST_MAX_CALL_BYTES
MAX_BATCH_BYTES = settings.INGEST_MAX_BATCH_BYTES
MAX_BATCH_CALLS = settings.INGEST_MAX_BATCH_CALLS
