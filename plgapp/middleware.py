from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import structlog
from django.http import HttpRequest, HttpResponse, JsonResponse

_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,100}")


class RequestIdMiddleware:
    """Give every request an id (or keep a sane incoming X-Request-ID), log with it, and return it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else str(uuid.uuid4())
        request.request_id = request_id  # type: ignore[attr-defined]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


class ReleaseRenderedResponseMiddleware:
    """Let reference counting free an API answer, and the data it was rendered from, as soon as it is sent.

    DRF links each response to itself and to its view (`renderer_context["response"]`, `renderer_context["view"]`,
    `view.response`), the view to its request and back (`view.request`, `request.parser_context`), and a
    serializer's fields to the serializer, whose output points back at it (`ReturnList.serializer`). The answer's
    data, the view's paginator page and the serializer's instances are then cyclic garbage that only the collector
    frees — thousands of objects per page, all at once, in whichever later request crosses the collector's
    threshold: 20-40 ms, and the PQL list's p95 doubled (docs/benchmarks.md, ADR 0027). Once the response is
    rendered these links serve nothing. Django's own request objects still point at each other (sessions,
    messages), but hold no answer.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)  # rendered by now: Django renders before the middleware unwinds
        context = getattr(response, "renderer_context", None)
        if context:
            context.pop("response", None)
            view = context.pop("view", None)
            if view is not None:
                view.__dict__.clear()  # its response, request, paginator and page: the view is done with them
            drf_request = context.get("request")
            parser_context = getattr(drf_request, "parser_context", None)
            if parser_context:
                parser_context.clear()  # {"request": itself, "view": ...}: DRF reads it only while parsing
            for serializer in _serializers_of(getattr(response, "data", None)):
                # Its instances and its output (its fields point back at it); a list's child was made with the
                # same arguments, the instances among them.
                for done in (getattr(serializer, "child", None), serializer):
                    if done is not None:
                        done.__dict__.clear()
        return response


def _serializers_of(data: object) -> Iterator[object]:
    """The serializers whose output an answer holds, at its top or one level down (a page's `results`): DRF's
    ReturnList / ReturnDict keep a reference to the serializer that made them."""
    from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

    for value in (data, *(data.values() if isinstance(data, dict) else ())):
        if isinstance(value, ReturnDict | ReturnList) and value.serializer is not None:
            yield value.serializer


DATABASE_RETRY_AFTER_SECONDS = 5


class DatabaseUnavailableMiddleware:
    """PostgreSQL unreachable (restarting, failing over): answer 503 with Retry-After, never a 500 — JSON in the
    API's error shape under /api/, a page elsewhere. Nothing was written: requests are atomic."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from django.db import InterfaceError, OperationalError

        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        structlog.get_logger(__name__).warning("database unavailable", error=str(exception).splitlines()[0][:200])
        message = "The database is unavailable; nothing was changed. Retry in a few seconds."
        response: HttpResponse
        if request.path.startswith("/api/") or "/api/v1/" in request.path:
            response = JsonResponse({"error": {"code": "unavailable", "message": message}}, status=503)
        else:
            response = HttpResponse(
                f"<!doctype html><title>Unavailable</title><h1>Back in a moment</h1><p>{message}</p>",
                status=503, content_type="text/html; charset=utf-8",
            )  # fmt: skip
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response


class DatabaseContextMiddleware:
    """Each request starts with no tenant on its database connection and leaves none behind (plgapp/rls.py).

    In production a connection starts every request clear — each request and task clears what it set — so this
    costs a query only for requests that resolved a tenant. A caller that wraps requests in a transaction of its
    own (the test suite, whose test bodies see every tenant) gets its setting back afterwards."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from django.db import DatabaseError, connection

        from plgapp import rls

        outer: rls.Context | None = None
        if connection.in_atomic_block or rls.current() != rls.NO_TENANT:
            try:
                outer = rls.swap(rls.NO_TENANT)
            except DatabaseError:  # the view will meet the same outage and answer 503
                outer = None
        try:
            return self.get_response(request)
        finally:
            try:
                if outer is not None:
                    rls.restore(outer)
                elif rls.current() != rls.NO_TENANT:
                    rls.reset()
            except DatabaseError:
                connection.close()  # a connection we could not clear is not reused
