"""The machinery every fake provider shares: a threaded loopback HTTP server, a request record, faults.

A fake is a subclass of :class:`FakeServer` that registers routes (``self.route("GET", r"/path/(?P<id>\\w+)",
handler)``) and answers provider-shaped errors through a few hooks (:meth:`FakeServer.rate_limited_response`,
:meth:`FakeServer.server_error_response`, :meth:`FakeServer.route_not_found`). The base class does the rest:

* **Server.** ``ThreadingHTTPServer`` on 127.0.0.1 with an ephemeral port (or a given one), HTTP/1.1 with
  keep-alive, started and stopped as a context manager; ``.url`` is ``http://127.0.0.1:<port>``.
  Stopping wakes hanging requests and closes open connections, so no test waits on a client.
* **Record.** Every request (except the ``/_fake/`` control API) is recorded before it is answered, with
  method, path, query, headers (lower-cased names), parsed body (JSON, form, or text), the wall and
  monotonic time it arrived, the *client key* the fake assigns to it (the unit a provider rate-limits:
  a Slack workspace+channel, a HubSpot account), and after answering the status and response body.
* **Faults**, settable at runtime and reproducible (one seeded ``random.Random``): a fraction of requests
  answered 429 with ``Retry-After``, a fraction answered 5xx, a fraction that hang for N seconds before
  being answered normally (to exercise client timeouts), optionally limited to paths matching an
  ``fnmatch`` pattern; scripted faults for the next N matching requests; and real sliding-window rate
  limits per client key (``set_rate_limit(limit=1, window=1.0, path="/api/chat.postMessage")``).
* **Time.** ``clock`` (``time.monotonic`` unless injected) stamps each request and drives rate-limit
  windows, the Retry-After check and the providers' token expiry and search lag; tests inject a manual
  clock, or ``time.time`` to follow ``time-machine`` travel.
* **Retry-After check.** Each 429 records the earliest time a retry is allowed (``retry_not_before``);
  :meth:`FakeServer.retry_after_violations` lists requests of the same client key that arrived earlier.

Deliberate simplifications: no TLS, no chunked request bodies (both official SDKs send ``Content-Length``),
a hang ends with the normal answer, written to a socket the client has usually abandoned — so the
side effect (a created task, a posted message) happens although the client saw a timeout, as it can for real.

A small control API lets another process (the chaos suite, ``python -m tests.fakes``) steer a standalone
fake: ``GET /_fake/requests``, ``POST /_fake/faults`` (JSON with :class:`Faults` fields),
``DELETE /_fake/faults``, ``POST /_fake/rate-limits`` (``{"limit", "window", "path"}``),
``GET /_fake/retry-after-violations`` and ``GET /_fake/state``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import math
import random
import re
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

FaultKind = Literal["rate_limit", "server_error", "hang"]
Clock = Callable[[], float]

CONTROL_PREFIX = "/_fake/"


@dataclass
class RecordedRequest:
    """One request as the fake received it, completed with the answer once sent.

    ``monotonic`` comes from the fake's clock (``time.monotonic`` unless injected) and is what ordering and
    the Retry-After check use; ``received_at`` is wall-clock time for humans.
    """

    index: int
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    raw_body: bytes
    received_at: float
    monotonic: float
    client_key: str = ""
    fault: FaultKind | None = None
    status: int | None = None
    response_body: Any = None
    retry_after: float | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def param(self, name: str) -> str | None:
        """First value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def retry_not_before(self) -> float | None:
        """For a 429: the earliest (fake clock) time the client may send the next request with the same key."""
        if self.status != 429 or self.retry_after is None:
            return None
        return self.monotonic + self.retry_after

    @property
    def retry_allowed_at(self) -> float | None:
        """The same moment as wall-clock time (``time.time()``), for humans and logs."""
        if self.retry_not_before is None or self.retry_after is None:
            return None
        return self.received_at + self.retry_after

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("raw_body")
        data["retry_not_before"] = self.retry_not_before
        data["retry_allowed_at"] = self.retry_allowed_at
        return data


@dataclass
class Response:
    """What a route answers. ``body`` is JSON-encoded unless it is ``bytes``/``str`` (sent as is)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        if self.body is None:
            return b"", "application/json; charset=utf-8"
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json; charset=utf-8"


@dataclass
class Faults:
    """Random faults, drawn per matching request in this order: 429, then 5xx, then hang.

    Fractions are probabilities in [0, 1] and together at most 1. ``path`` is an ``fnmatch`` pattern
    (``"/api/chat.postMessage"``, ``"/crm/v3/lists/*"``); ``None`` means every path.
    """

    rate_limit_fraction: float = 0.0
    retry_after: float = 1
    server_error_fraction: float = 0.0
    server_error_status: int = 503
    hang_fraction: float = 0.0
    hang_seconds: float = 5.0
    path: str | None = None
    client_key: str | None = None  # e.g. one Slack workspace ("T0001/*") or one HubSpot portal

    def __post_init__(self) -> None:
        fractions = (self.rate_limit_fraction, self.server_error_fraction, self.hang_fraction)
        if any(not 0 <= f <= 1 for f in fractions) or sum(fractions) > 1:
            raise ValueError(f"fault fractions must be in [0, 1] and sum to at most 1, got {fractions}")
        if self.retry_after < 0 or self.hang_seconds < 0:
            raise ValueError("retry_after and hang_seconds must not be negative")

    def matches(self, path: str, client_key: str) -> bool:
        return (self.path is None or fnmatch.fnmatchcase(path, self.path)) and (
            self.client_key is None or fnmatch.fnmatchcase(client_key, self.client_key)
        )


@dataclass
class InjectedFault:
    kind: FaultKind
    retry_after: float = 1
    status: int = 503
    seconds: float = 0.0


@dataclass
class _ScriptedFault:
    fault: InjectedFault
    remaining: int
    path: str | None

    def matches(self, path: str) -> bool:
        return self.path is None or fnmatch.fnmatchcase(path, self.path)


@dataclass
class RateLimit:
    """A real sliding-window limit: at most ``limit`` accepted requests per ``window`` seconds per client key."""

    limit: int
    window: float
    path: str | None = None
    hits: dict[str, deque[float]] = field(default_factory=dict, repr=False)

    def matches(self, path: str) -> bool:
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def check(self, key: str, now: float) -> float | None:
        """Count the request, or return the seconds until the window has room (without counting it)."""
        hits = self.hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return hits[0] + self.window - now
        hits.append(now)
        return None


@dataclass(frozen=True)
class RetryAfterViolation:
    """A request that arrived before the Retry-After of an earlier 429 with the same client key had passed."""

    client_key: str
    rate_limited: RecordedRequest
    early: RecordedRequest

    @property
    def early_by(self) -> float:
        not_before = self.rate_limited.retry_not_before
        assert not_before is not None
        return not_before - self.early.monotonic

    def __str__(self) -> str:
        return (
            f"{self.early.method} {self.early.path} (#{self.early.index}, key {self.client_key!r}) arrived "
            f"{self.early_by:.3f}s before the Retry-After {self.rate_limited.retry_after:g}s of the 429 to "
            f"#{self.rate_limited.index} {self.rate_limited.path}"
        )


RouteHandler = Callable[[RecordedRequest, dict[str, str]], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: RouteHandler


class FakeServer:
    """Base class of the fake providers; see the module docstring. Subclasses register routes in ``__init__``.

    Provider state lives on the subclass and is guarded by ``self.lock`` (held while a route runs), so tests
    may seed and inspect it from their own thread.
    """

    name = "fake"

    def __init__(self, *, seed: int = 0, host: str = "127.0.0.1", port: int = 0, clock: Clock = time.monotonic):
        self.host = host
        self.port = port
        self.clock = clock
        self.lock = threading.RLock()
        self.routes: list[Route] = []
        self._seed = seed
        self._rng = random.Random(seed)
        self._record_lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._answered = threading.Condition(self._record_lock)
        self._faults_lock = threading.Lock()
        self._faults = Faults()
        self._scripted: list[_ScriptedFault] = []
        self._rate_limits: list[RateLimit] = []
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        handler = type(f"{type(self).__name__}Handler", (_Handler,), {"fake": self})
        self._stopping.clear()
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{self.name}-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._record_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"{self.name} fake is not running")
        return f"http://{self.host}:{self.port}"

    # ----------------------------------------------------------------- routes and provider hooks

    def route(self, method: str, pattern: str, handler: RouteHandler) -> None:
        """Register ``handler`` for ``method`` and a full-path regex; named groups become its second argument."""
        self.routes.append(Route(method, re.compile(pattern), handler))

    def client_key(self, request: RecordedRequest) -> str:
        """The unit the provider rate-limits this request under (grouping for faults and the Retry-After check)."""
        return ""

    def rate_limited_response(self, request: RecordedRequest, retry_after: float) -> Response:
        return Response(429, {"error": "rate limited"}, {"Retry-After": retry_after_header(retry_after)})

    def server_error_response(self, request: RecordedRequest, status: int) -> Response:
        return Response(status, {"error": "server error"})

    def route_not_found(self, request: RecordedRequest) -> Response:
        return Response(404, {"error": f"no route for {request.method} {request.path}"})

    def method_not_allowed(self, request: RecordedRequest) -> Response:
        return Response(405, {"error": f"{request.method} not allowed on {request.path}"})

    def state(self) -> dict[str, Any]:
        """A JSON snapshot of the provider state for ``GET /_fake/state``."""
        return {}

    # ----------------------------------------------------------------- record

    def requests(
        self, *, path: str | None = None, method: str | None = None, client_key: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests in arrival order, optionally filtered (``path`` is an fnmatch pattern)."""
        with self._record_lock:
            records = list(self._records)
        return [
            r
            for r in records
            if (path is None or fnmatch.fnmatchcase(r.path, path))
            and (method is None or r.method == method.upper())
            and (client_key is None or r.client_key == client_key)
        ]

    def wait_until_answered(self, timeout: float = 5.0) -> bool:
        """Wait until every recorded request has been answered (e.g. a hang that outlived its client)."""
        with self._answered:
            return self._answered.wait_for(lambda: all(r.status is not None for r in self._records), timeout)

    def clear_requests(self) -> None:
        with self._record_lock:
            self._records.clear()

    # ----------------------------------------------------------------- faults

    @property
    def faults(self) -> Faults:
        with self._faults_lock:
            return dataclasses.replace(self._faults)

    def set_faults(self, **changes: Any) -> Faults:
        """Change some :class:`Faults` fields (validated together); returns the new settings."""
        with self._faults_lock:
            self._faults = dataclasses.replace(self._faults, **changes)
            return dataclasses.replace(self._faults)

    def clear_faults(self) -> None:
        """No random or scripted faults and no rate limits; the random sequence restarts from the seed."""
        with self._faults_lock:
            self._faults = Faults()
            self._scripted.clear()
            self._rate_limits.clear()
            self._rng.seed(self._seed)

    def reseed(self, seed: int) -> None:
        with self._faults_lock:
            self._seed = seed
            self._rng.seed(seed)

    def fail_next(
        self,
        kind: FaultKind,
        *,
        times: int = 1,
        path: str | None = None,
        retry_after: float = 1,
        status: int = 503,
        seconds: float = 5.0,
    ) -> None:
        """Answer the next ``times`` requests matching ``path`` with the given fault (before any random draw)."""
        fault = InjectedFault(kind, retry_after=retry_after, status=status, seconds=seconds)
        with self._faults_lock:
            self._scripted.append(_ScriptedFault(fault, times, path))

    def set_rate_limit(self, *, limit: int, window: float, path: str | None = None) -> RateLimit:
        """Enforce at most ``limit`` requests per ``window`` seconds per client key on matching paths."""
        rule = RateLimit(limit=limit, window=window, path=path)
        with self._faults_lock:
            self._rate_limits.append(rule)
        return rule

    def _draw_fault(self, request: RecordedRequest) -> InjectedFault | None:
        with self._faults_lock:
            for scripted in self._scripted:
                if scripted.remaining > 0 and scripted.matches(request.path):
                    scripted.remaining -= 1
                    return scripted.fault
            faults = self._faults
            if faults.matches(request.path, request.client_key):
                roll = self._rng.random()
                if roll < faults.rate_limit_fraction:
                    return InjectedFault("rate_limit", retry_after=faults.retry_after)
                roll -= faults.rate_limit_fraction
                if roll < faults.server_error_fraction:
                    return InjectedFault("server_error", status=faults.server_error_status)
                roll -= faults.server_error_fraction
                if roll < faults.hang_fraction:
                    return InjectedFault("hang", seconds=faults.hang_seconds)
            for rule in self._rate_limits:
                if rule.matches(request.path):
                    wait = rule.check(request.client_key, request.monotonic)
                    if wait is not None:
                        return InjectedFault("rate_limit", retry_after=max(1, math.ceil(wait)))
        return None

    # ----------------------------------------------------------------- Retry-After check

    def retry_after_violations(
        self, *, client_key: str | None = None, tolerance: float = 0.0
    ) -> list[RetryAfterViolation]:
        """Requests sent before the Retry-After of an earlier 429 to the same client key had elapsed.

        The window starts when the fake *received* the rate-limited request, which is earlier than when the
        client saw the answer, so a client that waits Retry-After seconds after the answer always passes.
        ``tolerance`` forgives that many seconds (for clients across processes with coarse clocks).
        """
        violations: list[RetryAfterViolation] = []
        open_windows: dict[str, list[RecordedRequest]] = {}
        for record in sorted(self.requests(client_key=client_key), key=lambda r: (r.monotonic, r.index)):
            for limited in open_windows.get(record.client_key, []):
                not_before = limited.retry_not_before
                if not_before is not None and record.monotonic < not_before - tolerance:
                    violations.append(RetryAfterViolation(record.client_key, limited, record))
                    break
            if record.retry_not_before is not None:
                open_windows.setdefault(record.client_key, []).append(record)
        return violations

    def assert_retry_after_respected(self, *, client_key: str | None = None, tolerance: float = 0.0) -> None:
        violations = self.retry_after_violations(client_key=client_key, tolerance=tolerance)
        if violations:
            lines = "\n  ".join(str(v) for v in violations)
            raise AssertionError(f"{len(violations)} request(s) ignored Retry-After:\n  {lines}")

    # ----------------------------------------------------------------- request handling

    def _handle(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw_body = handler.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in handler.headers.items()}
        if split.path.startswith(CONTROL_PREFIX):
            self._send(handler, self._control(handler.command, split.path, raw_body))
            return
        record = RecordedRequest(
            index=-1,
            method=handler.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=headers,
            body=_parse_body(headers.get("content-type", ""), raw_body),
            raw_body=raw_body,
            received_at=time.time(),
            monotonic=self.clock(),
        )
        with self.lock:
            record.client_key = self.client_key(record)
        with self._record_lock:
            record.index = len(self._records)
            self._records.append(record)
        response = self._answer(record)
        if response is None:  # stopped while hanging
            handler.close_connection = True
            return
        with self._answered:
            record.response_body = response.body
            if response.status == 429:
                record.retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            record.status = response.status
            self._answered.notify_all()
        self._send(handler, response)

    def _answer(self, record: RecordedRequest) -> Response | None:
        fault = self._draw_fault(record)
        if fault is not None:
            record.fault = fault.kind
            if fault.kind == "rate_limit":
                with self.lock:
                    return self.rate_limited_response(record, fault.retry_after)
            if fault.kind == "server_error":
                with self.lock:
                    return self.server_error_response(record, fault.status)
            if self._stopping.wait(fault.seconds):
                return None
        try:
            return self._dispatch(record)
        except Exception:  # a bug in the fake: answer it visibly instead of dropping the connection
            return Response(500, {"error": "the fake crashed", "traceback": traceback.format_exc()})

    def _dispatch(self, record: RecordedRequest) -> Response:
        path_matched = False
        for route in self.routes:
            match = route.pattern.fullmatch(record.path)
            if match is None:
                continue
            path_matched = True
            if route.method == record.method:
                with self.lock:
                    return route.handler(record, match.groupdict())
        with self.lock:
            return self.method_not_allowed(record) if path_matched else self.route_not_found(record)

    def _send(self, handler: _Handler, response: Response) -> None:
        payload, content_type = response.encode()
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
            handler.wfile.flush()
        except OSError:  # the client gave up (timeout) and closed the connection
            handler.close_connection = True

    def _control(self, method: str, path: str, raw_body: bytes) -> Response:
        """The ``/_fake/`` control API for a fake running in another process."""
        try:
            return self._control_action(method, path, json.loads(raw_body) if raw_body else {})
        except (KeyError, TypeError, ValueError) as exc:
            return Response(400, {"error": f"{type(exc).__name__}: {exc}"})

    def _control_action(self, method: str, path: str, body: Any) -> Response:
        action = path.removeprefix(CONTROL_PREFIX).rstrip("/")
        if (method, action) == ("GET", "requests"):
            return Response(200, [r.to_dict() for r in self.requests()])
        if (method, action) == ("POST", "faults"):
            return Response(200, dataclasses.asdict(self.set_faults(**body)))
        if (method, action) == ("DELETE", "faults"):
            self.clear_faults()
            return Response(200, dataclasses.asdict(self.faults))
        if (method, action) == ("POST", "rate-limits"):
            rule = self.set_rate_limit(limit=int(body["limit"]), window=float(body["window"]), path=body.get("path"))
            return Response(200, {"limit": rule.limit, "window": rule.window, "path": rule.path})
        if (method, action) == ("GET", "retry-after-violations"):
            return Response(200, [str(v) for v in self.retry_after_violations()])
        if (method, action) == ("GET", "state"):
            with self.lock:
                return Response(200, self.state())
        return Response(404, {"error": f"unknown control {method} {path}"})


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the owning fake; keeps the set of open connections so ``stop()`` can close them."""

    fake: FakeServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections are closed after this many seconds

    def setup(self) -> None:
        super().setup()
        with self.fake._record_lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._record_lock:
            self.fake._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def _serve(self) -> None:
        self.fake._handle(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request record is the log."""


def _parse_body(content_type: str, raw: bytes) -> Any:
    """JSON as objects, form bodies as ``{name: value}`` (last value wins), anything else as text."""
    if not raw:
        return None
    media_type = content_type.split(";")[0].strip().lower()
    text = raw.decode("utf-8", errors="replace")
    if media_type == "application/x-www-form-urlencoded":
        return {name: values[-1] for name, values in parse_qs(text, keep_blank_values=True).items()}
    if media_type.endswith("json") or text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` carries whole seconds; round up so a client that obeys it is never early."""
    return str(max(0, math.ceil(seconds)))


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
