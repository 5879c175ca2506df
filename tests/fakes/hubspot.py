"""A fake HubSpot CRM API for driving ``hubspot-api-client`` 12 in tests.

Pointing the official client at it — the recipe product code should copy::

    import hubspot
    from urllib3.util.retry import Retry

    client = hubspot.Client.create(
        access_token=token,
        host=fake.url,        # every generated API (crm.contacts.basic_api, crm.lists..., oauth...) uses
                              # Configuration.host; Client.create copies each keyword onto the per-API
                              # Configuration with setattr, and the host setter drops the default server
        base_url=fake.url,    # only client.api_request(...) (the hand-written generic helper) reads base_url
        retry=Retry(total=False),  # urllib3 retries otherwise: see below
    )
    contacts = client.crm.contacts.basic_api   # each attribute access builds a new ApiClient: keep it
    contacts.get_by_id("a@b.test", id_property="email", _request_timeout=5)

Why ``retry=Retry(total=False)``: otherwise urllib3's default ``Retry(3)`` applies. On idempotent methods
(GET, PUT — list memberships are PUT) it obeys a 429's ``Retry-After`` by *sleeping in the calling thread*
and re-sending, up to three times, before the last 429 surfaces as ``ApiException``; after a read timeout it
re-sends too and finally raises ``urllib3.exceptions.MaxRetryError`` (a POST is not re-sent: 429 is an
``ApiException`` and a timeout ``ReadTimeoutError`` at once). With ``Retry(total=False)`` every non-2xx is
an ``ApiException`` (``.status``, ``.body`` as bytes, ``.headers``) on the first answer and a timeout raises
``urllib3.exceptions.ReadTimeoutError`` (not the builtin ``TimeoutError``) at once. Each sub-package has
its own ``ApiException`` class (``hubspot.crm.contacts.ApiException``, ``hubspot.crm.lists.ApiException``,
…) with no common base beyond ``Exception``, so catch per sub-package and classify by ``.status`` and the
JSON ``.body``. Pass ``_request_timeout`` on every call (the SDK has no default).

Emulated endpoints (bearer-token auth on all but ``/oauth/v1/token``):

* ``GET /crm/v3/objects/{contacts|companies|tasks}/{id}`` — ``idProperty=email`` for contacts,
  ``properties``, ``associations``; 404 ``OBJECT_NOT_FOUND``.
* ``POST /crm/v3/objects/{contacts|companies|tasks}`` — ``properties`` and inline ``associations``
  (HUBSPOT_DEFINED 204 task→contact, 192 task→company, 1/279 contact→company, 2/280 company→contact);
  a contact with an existing email answers 409 ``CONFLICT`` "Contact already exists. Existing ID: N";
  a task without ``hs_timestamp`` answers 400 ``VALIDATION_ERROR``; unknown properties answer 400
  ``PROPERTY_DOESNT_EXIST`` (see :meth:`FakeHubSpot.define_property`; any ``hs_`` name is accepted).
* ``POST /crm/v3/objects/contacts/batch/upsert`` — by ``idProperty=email``; ``results[].new``.
* ``POST /crm/v3/objects/{type}/search`` — ``filterGroups`` (OR of ANDed filters; EQ/NEQ case-insensitive,
  IN, NOT_IN, HAS_PROPERTY, NOT_HAS_PROPERTY, LT/LTE/GT/GTE/BETWEEN numeric or date-aware,
  CONTAINS_TOKEN with ``*``), ``query``, ``sorts``, ``properties``, ``limit`` (≤ 200), ``after``. Objects
  appear in search ``search_lag`` seconds after creation (0 by default; real HubSpot takes a few seconds,
  so a client checking "did my earlier attempt create it?" must not rely on search alone).
* ``GET /crm/v3/lists/{listId}``, ``POST /crm/v3/lists/search``, ``GET /crm/v3/lists/{listId}/memberships``,
  ``PUT /crm/v3/lists/{listId}/memberships/add`` and ``/remove`` with a JSON array of record ids, answering
  ``{"recordsIdsAdded", "recordIdsRemoved", "recordIdsMissing"}`` (spelled as the SDK's
  ``MembershipsUpdateResponse`` requires). Only MANUAL and SNAPSHOT lists accept changes; DYNAMIC ones
  answer 400 ``VALIDATION_ERROR``.
* ``GET /crm/v3/owners/?email=`` and ``GET /crm/v3/owners/{ownerId}``.
* ``POST /oauth/v1/token`` — ``authorization_code`` and ``refresh_token`` grants (form body), answering
  ``access_token``, ``refresh_token``, ``expires_in`` (``access_token_lifetime``, 1800 s), ``token_type``;
  errors as HubSpot's OAuth server: 400 ``{"status": "BAD_AUTH_CODE" | "BAD_REFRESH_TOKEN" |
  "BAD_CLIENT_ID" | "BAD_CLIENT_SECRET" | "BAD_REDIRECT_URI" | "BAD_GRANT_TYPE", "message": ...}``.
  As in HubSpot the refresh token stays the same and earlier access tokens live until they expire.
* Errors: 401 ``INVALID_AUTHENTICATION`` (missing/unknown token), 401 ``EXPIRED_AUTHENTICATION`` (expired
  by the injected clock), 403 ``MISSING_SCOPES`` (tokens issued with explicit scopes), 429 with
  ``Retry-After`` and ``{"errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}``
  (``"SECONDLY"`` for search endpoints), 5xx ``{"status": "error", ...}``.

Client keys: ``portal:<id>`` (HubSpot limits per account) and ``portal:<id>:search`` for search endpoints
(their own per-second policy).

Simplifications: every account (portal) is isolated state keyed by its tokens; no archiving, merging,
PATCH, property history or list filters (``filterBranch`` is never returned); error messages follow
HubSpot's shapes but their wording is approximate for the validation cases.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from tests.fakes.server import FakeServer, RecordedRequest, Response, RouteHandler, retry_after_header

OBJECT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "tasks": "0-27"}
OBJECT_TYPES_BY_ID = {type_id: name for name, type_id in OBJECT_TYPE_IDS.items()}

STANDARD_PROPERTIES: dict[str, frozenset[str]] = {
    "contacts": frozenset(
        {
            *("email", "firstname", "lastname", "phone", "mobilephone", "company", "website", "jobtitle"),
            *("lifecyclestage", "hubspot_owner_id", "address", "city", "state", "zip", "country"),
            *("createdate", "lastmodifieddate"),
        }
    ),
    "companies": frozenset(
        {
            *("name", "domain", "website", "phone", "industry", "city", "state", "country", "numberofemployees"),
            *("annualrevenue", "lifecyclestage", "hubspot_owner_id", "description", "createdate"),
        }
    ),
    "tasks": frozenset(["hubspot_owner_id"]),
}
DEFAULT_PROPERTIES = {
    "contacts": ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"),
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    "tasks": ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
}
TIMESTAMP_PROPERTIES = {
    "contacts": ("createdate", "lastmodifieddate"),
    "companies": ("createdate", "hs_lastmodifieddate"),
    "tasks": ("hs_createdate", "hs_lastmodifieddate"),
}
QUERY_PROPERTIES = {
    "contacts": ("firstname", "lastname", "email", "phone", "company"),
    "companies": ("name", "domain", "website", "phone"),
    "tasks": ("hs_task_subject", "hs_task_body"),
}


@dataclass(frozen=True)
class AssociationType:
    type_id: int
    from_type: str
    to_type: str
    label: str
    inverse_id: int


ASSOCIATION_TYPES = {
    a.type_id: a
    for a in (
        AssociationType(204, "tasks", "contacts", "task_to_contact", 205),
        AssociationType(205, "contacts", "tasks", "contact_to_task", 204),
        AssociationType(192, "tasks", "companies", "task_to_company", 193),
        AssociationType(193, "companies", "tasks", "company_to_task", 192),
        AssociationType(279, "contacts", "companies", "contact_to_company_unlabeled", 280),
        AssociationType(280, "companies", "contacts", "company_to_contact_unlabeled", 279),
        AssociationType(1, "contacts", "companies", "contact_to_company", 2),
        AssociationType(2, "companies", "contacts", "company_to_contact", 1),
    )
}

SCOPES = {
    ("contacts", "read"): "crm.objects.contacts.read",
    ("contacts", "write"): "crm.objects.contacts.write",
    ("companies", "read"): "crm.objects.companies.read",
    ("companies", "write"): "crm.objects.companies.write",
    ("lists", "read"): "crm.lists.read",
    ("lists", "write"): "crm.lists.write",
    ("owners", "read"): "crm.objects.owners.read",
}

MANUAL_PROCESSING_TYPES = frozenset({"MANUAL", "SNAPSHOT"})
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SEARCH_MAX_LIMIT = 200
BATCH_MAX_INPUTS = 100


class HubSpotError(Exception):
    """An error HubSpot answers as ``{"status": "error", "message", "correlationId", "category", ...}``."""

    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.extra = extra

    def response(self) -> Response:
        body = {"status": "error", "message": self.message, "correlationId": str(uuid.uuid4())}
        body.update(self.extra)
        body["category"] = self.category
        return Response(self.status, body)


class OAuthError(Exception):
    """An error of HubSpot's OAuth server: 400 ``{"status": "BAD_…", "message", "correlationId"}``."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        correlation = str(uuid.uuid4())
        return Response(
            400,
            {"status": self.status, "message": self.message, "correlationId": correlation, "requestId": correlation},
        )


@dataclass
class CrmObject:
    id: str
    object_type: str
    properties: dict[str, str | None]
    created_at: float
    updated_at: float
    searchable_from: float
    associations: list[tuple[str, str, AssociationType]] = field(default_factory=list)

    def value(self, name: str) -> str | None:
        if name == "hs_object_id":
            return self.id
        return self.properties.get(name)


@dataclass
class HubSpotList:
    list_id: str
    name: str
    processing_type: str
    object_type_id: str
    created_at: float
    updated_at: float
    list_version: int = 1
    members: dict[str, float] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        return {
            "listId": self.list_id,
            "name": self.name,
            "processingType": self.processing_type,
            "objectTypeId": self.object_type_id,
            "processingStatus": "COMPLETE",
            "listVersion": self.list_version,
            "size": len(self.members),
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.updated_at),
            "filtersUpdatedAt": _iso(self.created_at),
            "createdById": "1",
            "updatedById": "1",
        }


@dataclass
class HubSpotOwner:
    id: str
    email: str
    first_name: str
    last_name: str
    user_id: int
    created_at: float
    archived: bool = False

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "userId": self.user_id,
            "userIdIncludingInactive": self.user_id,
            "type": "PERSON",
            "archived": self.archived,
            "teams": [],
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.created_at),
        }


@dataclass
class HubSpotPortal:
    portal_id: int
    objects: dict[str, dict[str, CrmObject]] = field(default_factory=lambda: {t: {} for t in OBJECT_TYPE_IDS})
    lists: dict[str, HubSpotList] = field(default_factory=dict)
    owners: dict[str, HubSpotOwner] = field(default_factory=dict)
    custom_properties: dict[str, set[str]] = field(default_factory=lambda: {t: set() for t in OBJECT_TYPE_IDS})


@dataclass
class HubSpotToken:
    token: str
    portal_id: int
    expires_at: float | None = None
    scopes: frozenset[str] | None = None


@dataclass
class HubSpotApp:
    client_id: str
    client_secret: str
    redirect_uri: str | None = None


@dataclass
class HubSpotAuthCode:
    code: str
    client_id: str
    portal_id: int
    redirect_uri: str | None
    scopes: frozenset[str] | None
    is_used: bool = False


@dataclass
class HubSpotRefreshToken:
    token: str
    client_id: str
    portal_id: int
    scopes: frozenset[str] | None


@dataclass
class Call:
    """What a CRM route gets: the authenticated token, its portal, the request and the path parameters."""

    token: HubSpotToken
    portal: HubSpotPortal
    request: RecordedRequest
    params: dict[str, str]

    def json(self) -> Any:
        body = self.request.body
        if self.request.raw_body and not isinstance(body, dict | list):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON on line 1, column 1")
        return body


CrmHandler = Callable[[Call], Response]


class FakeHubSpot(FakeServer):
    """The fake HubSpot API; see the module docstring. Seed with ``add_portal``/``issue_token``/``add_*``."""

    name = "hubspot"

    def __init__(self, *, search_lag: float = 0.0, access_token_lifetime: int = 1800, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.search_lag = search_lag
        self.access_token_lifetime = access_token_lifetime
        self.portals: dict[int, HubSpotPortal] = {}
        self.tokens: dict[str, HubSpotToken] = {}
        self.apps: dict[str, HubSpotApp] = {}
        self.codes: dict[str, HubSpotAuthCode] = {}
        self.refresh_tokens: dict[str, HubSpotRefreshToken] = {}
        self._ids = itertools.count(101)
        self._portal_ids = itertools.count(20000001)
        objects = r"(?P<object_type>contacts|companies|tasks|0-1|0-2|0-27)"
        self.route("POST", r"/oauth/v1/token", self._oauth_token)
        self.route("POST", r"/crm/v3/objects/contacts/batch/upsert", self._crm(self._batch_upsert))
        self.route("POST", rf"/crm/v3/objects/{objects}/search", self._crm(self._search))
        self.route("POST", rf"/crm/v3/objects/{objects}", self._crm(self._create))
        self.route("GET", rf"/crm/v3/objects/{objects}/(?P<object_id>[^/]+)", self._crm(self._get))
        self.route("POST", r"/crm/v3/lists/search", self._crm(self._list_search))
        self.route("GET", r"/crm/v3/lists/(?P<list_id>\d+)", self._crm(self._list_get))
        self.route("GET", r"/crm/v3/lists/(?P<list_id>\d+)/memberships", self._crm(self._list_members))
        self.route(
            "PUT", r"/crm/v3/lists/(?P<list_id>\d+)/memberships/(?P<change>add|remove)", self._crm(self._list_change)
        )
        self.route("GET", r"/crm/v3/owners/?", self._crm(self._owners))
        self.route("GET", r"/account-info/v3/details", self._crm(self._account_details))
        self.route("GET", r"/crm/v3/owners/(?P<owner_id>\d+)", self._crm(self._owner))

    # ----------------------------------------------------------------- seeding and inspection

    def _next_id(self) -> str:
        return str(next(self._ids))

    def add_portal(self, portal_id: int | None = None) -> HubSpotPortal:
        with self.lock:
            portal = HubSpotPortal(portal_id or next(self._portal_ids))
            self.portals[portal.portal_id] = portal
            return portal

    def issue_token(
        self, portal_id: int, *, scopes: Iterable[str] | None = None, expires_in: float | None = None
    ) -> str:
        """A private-app style token for ``portal_id`` (all scopes unless given; no expiry unless given)."""
        with self.lock:
            token = f"pat-na1-{uuid.uuid4()}"
            expires_at = None if expires_in is None else self.clock() + expires_in
            self.tokens[token] = HubSpotToken(token, portal_id, expires_at, _scopes(scopes))
            return token

    def expire_token(self, token: str) -> None:
        with self.lock:
            self.tokens[token].expires_at = self.clock()

    def add_app(
        self, *, client_id: str | None = None, client_secret: str | None = None, redirect_uri: str | None = None
    ) -> HubSpotApp:
        with self.lock:
            app = HubSpotApp(client_id or str(uuid.uuid4()), client_secret or str(uuid.uuid4()), redirect_uri)
            self.apps[app.client_id] = app
            return app

    def issue_oauth_code(
        self, client_id: str, portal_id: int, *, redirect_uri: str | None = None, scopes: Iterable[str] | None = None
    ) -> str:
        """The ``code`` HubSpot appends to the redirect once a user installs the app in ``portal_id``."""
        with self.lock:
            code = str(uuid.uuid4())
            self.codes[code] = HubSpotAuthCode(code, client_id, portal_id, redirect_uri, _scopes(scopes))
            return code

    def define_property(self, portal_id: int, object_type: str, name: str) -> None:
        """Create a custom property (HubSpot rejects writes to properties that do not exist)."""
        with self.lock:
            self.portals[portal_id].custom_properties[object_type].add(name)

    def add_object(
        self,
        portal_id: int,
        object_type: str,
        properties: dict[str, str],
        *,
        associations: Iterable[tuple[str, int]] = (),
    ) -> CrmObject:
        """Store a record directly (no validation); ``associations`` are ``(target id, association type id)``."""
        with self.lock:
            portal = self.portals[portal_id]
            links = [(to_id, ASSOCIATION_TYPES[type_id]) for to_id, type_id in associations]
            return self._store(portal, object_type, {k: str(v) for k, v in properties.items()}, links)

    def add_contact(self, portal_id: int, email: str, **properties: str) -> CrmObject:
        return self.add_object(portal_id, "contacts", {"email": email.lower(), **properties})

    def add_company(self, portal_id: int, name: str, domain: str, **properties: str) -> CrmObject:
        return self.add_object(portal_id, "companies", {"name": name, "domain": domain, **properties})

    def add_list(
        self,
        portal_id: int,
        name: str,
        *,
        processing_type: str = "MANUAL",
        object_type_id: str = "0-1",
        members: Iterable[str] = (),
    ) -> HubSpotList:
        with self.lock:
            now = time.time()
            hs_list = HubSpotList(self._next_id(), name, processing_type, object_type_id, now, now)
            hs_list.members = dict.fromkeys(members, now)
            self.portals[portal_id].lists[hs_list.list_id] = hs_list
            return hs_list

    def add_owner(self, portal_id: int, email: str, first_name: str = "", last_name: str = "") -> HubSpotOwner:
        with self.lock:
            owner = HubSpotOwner(self._next_id(), email, first_name, last_name, next(self._ids), time.time())
            self.portals[portal_id].owners[owner.id] = owner
            return owner

    def objects(self, portal_id: int, object_type: str) -> list[CrmObject]:
        with self.lock:
            return list(self.portals[portal_id].objects[object_type].values())

    def list_members(self, portal_id: int, list_id: str) -> list[str]:
        with self.lock:
            return list(self.portals[portal_id].lists[list_id].members)

    def state(self) -> dict[str, Any]:
        return {
            str(portal_id): {
                "objects": {
                    object_type: {obj.id: obj.properties for obj in objects.values()}
                    for object_type, objects in portal.objects.items()
                },
                "lists": {
                    list_id: {**hs_list.to_api(), "members": list(hs_list.members)}
                    for list_id, hs_list in portal.lists.items()
                },
                "owners": [o.to_api() for o in portal.owners.values()],
            }
            for portal_id, portal in self.portals.items()
        }

    def seed_demo(self) -> dict[str, Any]:
        """An account with a token, an OAuth app, a contact, a company, lists and an owner, for manual use."""
        portal = self.add_portal()
        app = self.add_app(redirect_uri="http://127.0.0.1:8000/integrations/hubspot/callback")
        contact = self.add_contact(portal.portal_id, "ada@example.com", firstname="Ada", lastname="Lovelace")
        self.add_company(portal.portal_id, "Example Inc.", "example.com")
        manual = self.add_list(portal.portal_id, "PQLs", members=[contact.id])
        dynamic = self.add_list(portal.portal_id, "All customers", processing_type="DYNAMIC")
        owner = self.add_owner(portal.portal_id, "rep@example.com", "Rita", "Rep")
        return {
            "portal_id": portal.portal_id,
            "access_token": self.issue_token(portal.portal_id),
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "redirect_uri": app.redirect_uri,
            "oauth_code": self.issue_oauth_code(app.client_id, portal.portal_id, redirect_uri=app.redirect_uri),
            "lists": {"manual": manual.list_id, "dynamic": dynamic.list_id},
            "owner_id": owner.id,
        }

    # ----------------------------------------------------------------- provider hooks

    def client_key(self, request: RecordedRequest) -> str:
        if request.path.startswith("/oauth/"):
            return "oauth"
        raw = _bearer(request)
        token = self.tokens.get(raw or "")
        key = f"portal:{token.portal_id}" if token else f"token:{(raw or 'none')[:16]}"
        return f"{key}:search" if request.path.endswith("/search") else key

    def rate_limited_response(self, request: RecordedRequest, retry_after: float) -> Response:
        is_search = request.path.endswith("/search")
        policy = "SECONDLY" if is_search else "TEN_SECONDLY_ROLLING"
        body = {
            "status": "error",
            "message": f"You have reached your {policy.lower()} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "groupName": f"publicapi:{request.client_key}",
        }
        headers = {
            "Retry-After": retry_after_header(retry_after),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "1000" if is_search else "10000",
            "X-HubSpot-RateLimit-Max": "5" if is_search else "110",
            "X-HubSpot-RateLimit-Remaining": "0",
        }
        return Response(429, body, headers)

    def server_error_response(self, request: RecordedRequest, status: int) -> Response:
        return HubSpotError(status, "INTERNAL_ERROR", "internal error").response()

    def route_not_found(self, request: RecordedRequest) -> Response:
        return HubSpotError(404, "OBJECT_NOT_FOUND", f"Unable to route {request.method} {request.path}").response()

    def method_not_allowed(self, request: RecordedRequest) -> Response:
        return HubSpotError(405, "METHOD_NOT_ALLOWED", f"{request.method} is not supported here").response()

    # ----------------------------------------------------------------- auth

    def _crm(self, handler: CrmHandler) -> RouteHandler:
        """Authenticate the bearer token, then run ``handler``; ``HubSpotError`` becomes its JSON answer."""

        def handle(request: RecordedRequest, params: dict[str, str]) -> Response:
            try:
                token = self._authenticate(request)
                call = Call(token, self.portals[token.portal_id], request, {k: unquote(v) for k, v in params.items()})
                return handler(call)
            except HubSpotError as error:
                return error.response()

        return handle

    def _authenticate(self, request: RecordedRequest) -> HubSpotToken:
        token = self.tokens.get(_bearer(request) or "")
        if token is None or token.portal_id not in self.portals:
            raise HubSpotError(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            )
        now = self.clock()
        if token.expires_at is not None and now >= token.expires_at:
            minutes = int((now - token.expires_at) // 60)
            raise HubSpotError(
                401,
                "EXPIRED_AUTHENTICATION",
                f"The OAuth token used to make this call expired {minutes} minute(s) ago.",
                context={},
            )
        return token

    @staticmethod
    def _require_scope(call: Call, area: str, access: str) -> None:
        scope = SCOPES.get((area, access))
        if scope is None or call.token.scopes is None or scope in call.token.scopes:
            return
        raise HubSpotError(
            403,
            "MISSING_SCOPES",
            "This app hasn't been granted all required scopes to make this call. Read more about required "
            "scopes here: https://developers.hubspot.com/scopes.",
            errors=[
                {
                    "message": "One or more of the following scopes are required.",
                    "context": {"requiredGranularScopes": [scope]},
                }
            ],
            links={"scopes": "https://developers.hubspot.com/scopes"},
        )

    def _oauth_token(self, request: RecordedRequest, params: dict[str, str]) -> Response:
        form = request.body if isinstance(request.body, dict) else {}
        try:
            app = self.apps.get(str(form.get("client_id") or ""))
            if app is None:
                raise OAuthError("BAD_CLIENT_ID", "missing or invalid client_id")
            if form.get("client_secret") != app.client_secret:
                raise OAuthError("BAD_CLIENT_SECRET", "missing or invalid client_secret")
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                portal_id, scopes, refresh = self._redeem_code(app, form)
            elif grant_type == "refresh_token":
                stored = self.refresh_tokens.get(str(form.get("refresh_token") or ""))
                if stored is None or stored.client_id != app.client_id:
                    raise OAuthError("BAD_REFRESH_TOKEN", "missing or invalid refresh token")
                portal_id, scopes, refresh = stored.portal_id, stored.scopes, stored.token
            else:
                raise OAuthError("BAD_GRANT_TYPE", f"unsupported grant_type: {grant_type}")
        except OAuthError as error:
            return error.response()
        access = "CO" + secrets.token_urlsafe(48)
        expires_at = self.clock() + self.access_token_lifetime
        self.tokens[access] = HubSpotToken(access, portal_id, expires_at, scopes)
        body = {
            "token_type": "bearer",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": self.access_token_lifetime,
        }
        return Response(200, body)

    def _redeem_code(self, app: HubSpotApp, form: dict[str, Any]) -> tuple[int, frozenset[str] | None, str]:
        code = self.codes.get(str(form.get("code") or ""))
        if code is None or code.is_used or code.client_id != app.client_id:
            raise OAuthError("BAD_AUTH_CODE", "missing or unknown auth code")
        if code.redirect_uri is not None and form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError("BAD_REDIRECT_URI", "redirect_uri does not match the one used to authorize")
        code.is_used = True
        refresh = str(uuid.uuid4())
        self.refresh_tokens[refresh] = HubSpotRefreshToken(refresh, app.client_id, code.portal_id, code.scopes)
        return code.portal_id, code.scopes, refresh

    # ----------------------------------------------------------------- objects

    def _store(
        self,
        portal: HubSpotPortal,
        object_type: str,
        properties: dict[str, str | None],
        associations: list[tuple[str, AssociationType]],
    ) -> CrmObject:
        now, now_clock = time.time(), self.clock()
        obj = CrmObject(self._next_id(), object_type, dict(properties), now, now, now_clock + self.search_lag)
        for name in TIMESTAMP_PROPERTIES[object_type]:
            obj.properties[name] = _iso(now)
        obj.properties["hs_object_id"] = obj.id
        portal.objects[object_type][obj.id] = obj
        for to_id, association in associations:
            obj.associations.append((association.to_type, to_id, association))
            target = portal.objects[association.to_type].get(to_id)
            if target is not None:
                target.associations.append((object_type, obj.id, ASSOCIATION_TYPES[association.inverse_id]))
        return obj

    def _get(self, call: Call) -> Response:
        object_type = _object_type(call.params["object_type"])
        self._require_scope(call, object_type, "read")
        object_id = call.params["object_id"]
        id_property = call.request.param("idProperty")
        obj = self._find(call.portal, object_type, object_id, id_property)
        if obj is None:
            raise HubSpotError(
                404,
                "OBJECT_NOT_FOUND",
                "Object not found.  objectId are usually numeric.",
                context={"id": [object_id]},
            )
        properties = _multi(call.request.query.get("properties", []))
        body = _object_json(obj, properties or DEFAULT_PROPERTIES[object_type], include_requested=bool(properties))
        associations = _multi(call.request.query.get("associations", []))
        if associations:
            body["associations"] = _associations_json(obj, associations)
        return Response(200, body)

    @staticmethod
    def _find(portal: HubSpotPortal, object_type: str, object_id: str, id_property: str | None) -> CrmObject | None:
        objects = portal.objects[object_type]
        if id_property in (None, "", "hs_object_id"):
            return objects.get(object_id)
        wanted = object_id.lower() if id_property == "email" else object_id
        return next((o for o in objects.values() if (o.value(id_property or "") or "").lower() == wanted), None)

    def _create(self, call: Call) -> Response:
        object_type = _object_type(call.params["object_type"])
        self._require_scope(call, object_type, "write")
        body = call.json() or {}
        properties = self._validated_properties(call.portal, object_type, body.get("properties"))
        associations = self._validated_associations(call.portal, object_type, body.get("associations") or [])
        obj = self._store(call.portal, object_type, properties, associations)
        return Response(201, _object_json(obj, list(obj.properties), include_requested=False))

    def _validated_properties(self, portal: HubSpotPortal, object_type: str, raw: Any) -> dict[str, str | None]:
        """Properties as strings; unknown names, bad emails, duplicate contacts and task timestamps rejected."""
        if not isinstance(raw, dict):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: properties must be an object")
        properties = {name: None if value is None else str(value) for name, value in raw.items()}
        known = STANDARD_PROPERTIES[object_type] | portal.custom_properties[object_type]
        problems = [
            (name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
            for name in properties
            if name not in known and not name.startswith("hs_")
        ]
        if object_type == "contacts" and properties.get("email") is not None:
            email = str(properties["email"]).strip().lower()
            properties["email"] = email
            if not EMAIL_RE.match(email):
                problems.append(("email", "INVALID_EMAIL", f"Email address {email} is invalid"))
        if object_type == "tasks":
            timestamp = properties.get("hs_timestamp")
            if not timestamp:
                problems.append(("hs_timestamp", "REQUIRED_PROPERTY", "hs_timestamp is required"))
            elif (normalized := _normalize_datetime(timestamp)) is None:
                problems.append(("hs_timestamp", "INVALID_DATE", f"{timestamp} is not a valid datetime"))
            else:
                properties["hs_timestamp"] = normalized
            properties.setdefault("hs_task_status", "NOT_STARTED")
        if problems:
            raise _property_error(problems)
        if object_type == "contacts" and properties.get("email"):
            existing = self._find(portal, "contacts", str(properties["email"]), "email")
            if existing is not None:
                raise HubSpotError(409, "CONFLICT", f"Contact already exists. Existing ID: {existing.id}")
        return properties

    @staticmethod
    def _validated_associations(portal: HubSpotPortal, object_type: str, raw: Any) -> list[tuple[str, AssociationType]]:
        if not isinstance(raw, list):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: associations must be an array")
        links: list[tuple[str, AssociationType]] = []
        for item in raw:
            to_id = str(((item or {}).get("to") or {}).get("id") or "")
            for spec in (item or {}).get("types") or []:
                association = ASSOCIATION_TYPES.get(int(spec.get("associationTypeId") or 0))
                if (
                    spec.get("associationCategory") != "HUBSPOT_DEFINED"
                    or association is None
                    or association.from_type != object_type
                ):
                    raise HubSpotError(
                        400,
                        "VALIDATION_ERROR",
                        f"{spec.get('associationCategory')} {spec.get('associationTypeId')} is not a valid "
                        f"association type from {object_type}",
                    )
                if to_id not in portal.objects[association.to_type]:
                    raise HubSpotError(
                        400,
                        "VALIDATION_ERROR",
                        f"One or more associations are invalid: {association.to_type} {to_id} does not exist",
                        context={"ids": [to_id]},
                    )
                links.append((to_id, association))
        return links

    def _batch_upsert(self, call: Call) -> Response:
        self._require_scope(call, "contacts", "write")
        inputs = (call.json() or {}).get("inputs")
        if not isinstance(inputs, list) or not inputs or len(inputs) > BATCH_MAX_INPUTS:
            raise HubSpotError(400, "VALIDATION_ERROR", f"inputs must hold 1 to {BATCH_MAX_INPUTS} items")
        emails = [str((item or {}).get("id") or "").strip().lower() for item in inputs]
        if any(item.get("idProperty") != "email" for item in inputs):
            raise HubSpotError(400, "VALIDATION_ERROR", "This fake supports contact upserts by idProperty=email")
        if len(set(emails)) != len(emails):
            raise HubSpotError(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input")
        started = time.time()
        results = []
        for email, item in zip(emails, inputs, strict=True):
            raw = {**(item.get("properties") or {}), "email": email}
            existing = self._find(call.portal, "contacts", email, "email")
            if existing is None:
                obj = self._store(call.portal, "contacts", self._validated_properties(call.portal, "contacts", raw), [])
            else:
                raw.pop("email")
                update = self._validated_properties(call.portal, "contacts", raw)
                existing.properties.update(update)
                existing.updated_at = time.time()
                existing.properties["lastmodifieddate"] = _iso(existing.updated_at)
                obj = existing
            body = _object_json(obj, list(obj.properties), include_requested=False)
            results.append({**body, "new": existing is None})
        return Response(
            200,
            {"status": "COMPLETE", "results": results, "startedAt": _iso(started), "completedAt": _iso(time.time())},
        )

    def _search(self, call: Call) -> Response:
        object_type = _object_type(call.params["object_type"])
        self._require_scope(call, object_type, "read")
        body = call.json() or {}
        limit = int(body.get("limit") or 10)
        if not 1 <= limit <= SEARCH_MAX_LIMIT:
            raise HubSpotError(400, "VALIDATION_ERROR", f"limit must be between 1 and {SEARCH_MAX_LIMIT}")
        groups = body.get("filterGroups") or []
        if len(groups) > 5 or sum(len(g.get("filters") or []) for g in groups) > 18:
            raise HubSpotError(400, "VALIDATION_ERROR", "Too many filter groups or filters")
        now = self.clock()
        matches = [
            obj
            for obj in call.portal.objects[object_type].values()
            if obj.searchable_from <= now
            and _matches_groups(obj, groups)
            and _matches_query(obj, body.get("query"), QUERY_PROPERTIES[object_type])
        ]
        matches = _sorted(matches, body.get("sorts") or [])
        offset = int(body.get("after") or 0)
        page = matches[offset : offset + limit]
        properties = body.get("properties") or list(DEFAULT_PROPERTIES[object_type])
        answer: dict[str, Any] = {
            "total": len(matches),
            "results": [_object_json(obj, properties, include_requested=True) for obj in page],
        }
        if offset + limit < len(matches):
            answer["paging"] = {"next": {"after": str(offset + limit)}}
        return Response(200, answer)

    # ----------------------------------------------------------------- lists

    def _list(self, call: Call) -> HubSpotList:
        hs_list = call.portal.lists.get(call.params["list_id"])
        if hs_list is None:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", f"List does not exist with id {call.params['list_id']}.")
        return hs_list

    def _list_get(self, call: Call) -> Response:
        self._require_scope(call, "lists", "read")
        return Response(200, {"list": self._list(call).to_api()})

    def _list_search(self, call: Call) -> Response:
        self._require_scope(call, "lists", "read")
        body = call.json() or {}
        query = str(body.get("query") or "").lower()
        processing_types = set(body.get("processingTypes") or [])
        list_ids = {str(i) for i in body.get("listIds") or []}
        offset, count = int(body.get("offset") or 0), int(body.get("count") or 20)
        found = [
            hs_list
            for hs_list in call.portal.lists.values()
            if query in hs_list.name.lower()
            and (not processing_types or hs_list.processing_type in processing_types)
            and (not list_ids or hs_list.list_id in list_ids)
        ]
        page = found[offset : offset + count]
        results = []
        for hs_list in page:
            item = hs_list.to_api()
            item.pop("size")
            item["additionalProperties"] = {"hs_list_size": str(len(hs_list.members))}
            results.append(item)
        return Response(
            200,
            {
                "lists": results,
                "total": len(found),
                "offset": offset + len(page),
                "hasMore": offset + count < len(found),
            },
        )

    def _list_members(self, call: Call) -> Response:
        self._require_scope(call, "lists", "read")
        members = list(self._list(call).members.items())
        limit = int(call.request.param("limit") or 100)
        offset = int(call.request.param("after") or 0)
        page = members[offset : offset + limit]
        body: dict[str, Any] = {
            "results": [{"recordId": record_id, "membershipTimestamp": _iso(at)} for record_id, at in page],
            "total": len(members),
        }
        if offset + limit < len(members):
            body["paging"] = {"next": {"after": str(offset + limit)}}
        return Response(200, body)

    def _list_change(self, call: Call) -> Response:
        self._require_scope(call, "lists", "write")
        hs_list = self._list(call)
        record_ids = call.json()
        if not isinstance(record_ids, list):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an array of record ids")
        if hs_list.processing_type not in MANUAL_PROCESSING_TYPES:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"List {hs_list.list_id} has processingType {hs_list.processing_type}; memberships can only be "
                "changed on MANUAL or SNAPSHOT lists.",
            )
        records = call.portal.objects[OBJECT_TYPES_BY_ID.get(hs_list.object_type_id, "contacts")]
        wanted = [str(record_id) for record_id in record_ids]
        missing = [record_id for record_id in wanted if record_id not in records]
        added: list[str] = []
        removed: list[str] = []
        now = time.time()
        for record_id in wanted:
            if record_id in records and call.params["change"] == "add" and record_id not in hs_list.members:
                hs_list.members[record_id] = now
                added.append(record_id)
            elif call.params["change"] == "remove" and record_id in hs_list.members:
                del hs_list.members[record_id]
                removed.append(record_id)
        if added or removed:
            hs_list.updated_at = now
        return Response(200, {"recordsIdsAdded": added, "recordIdsRemoved": removed, "recordIdsMissing": missing})

    # ----------------------------------------------------------------- owners

    def _account_details(self, call: Call) -> Response:
        return Response(200, {"portalId": int(call.portal.portal_id), "accountType": "STANDARD",
                              "timeZone": "US/Eastern", "companyCurrency": "USD", "utcOffset": "-05:00",
                              "uiDomain": "app.hubspot.com", "dataHostingLocation": "na1"})  # fmt: skip

    def _owners(self, call: Call) -> Response:
        self._require_scope(call, "owners", "read")
        email = (call.request.param("email") or "").lower()
        archived = (call.request.param("archived") or "false").lower() == "true"
        limit = int(call.request.param("limit") or 100)
        offset = int(call.request.param("after") or 0)
        owners = [
            owner
            for owner in call.portal.owners.values()
            if owner.archived == archived and (not email or owner.email.lower() == email)
        ]
        body: dict[str, Any] = {"results": [owner.to_api() for owner in owners[offset : offset + limit]]}
        if offset + limit < len(owners):
            body["paging"] = {"next": {"after": str(offset + limit)}}
        return Response(200, body)

    def _owner(self, call: Call) -> Response:
        self._require_scope(call, "owners", "read")
        owner = call.portal.owners.get(call.params["owner_id"])
        if owner is None:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Owner {call.params['owner_id']} not found")
        return Response(200, owner.to_api())


# --------------------------------------------------------------------- helpers


def _bearer(request: RecordedRequest) -> str | None:
    authorization = request.header("authorization") or ""
    return authorization[7:].strip() if authorization.startswith("Bearer ") else None


def _scopes(scopes: Iterable[str] | None) -> frozenset[str] | None:
    return None if scopes is None else frozenset(scopes)


def _object_type(raw: str) -> str:
    return OBJECT_TYPES_BY_ID.get(raw, raw)


def _iso(timestamp: float) -> str:
    """HubSpot's timestamp format: ``2024-05-06T10:00:00.123Z``."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _normalize_datetime(value: str) -> str | None:
    """ISO 8601 or epoch milliseconds (both accepted by HubSpot) to HubSpot's ISO form; ``None`` if neither."""
    moment = _as_datetime(value)
    return None if moment is None else _iso(moment.timestamp())


def _as_datetime(value: str) -> datetime | None:
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _multi(values: list[str]) -> list[str]:
    """Query parameters the SDK repeats (``properties=a&properties=b``) or joins with commas."""
    return [part for value in values for part in value.split(",") if part]


def _object_json(obj: CrmObject, properties: Iterable[str], *, include_requested: bool) -> dict[str, Any]:
    """``SimplePublicObject``: requested properties (``None`` when unset, as HubSpot) or the set ones."""
    names = list(properties)
    if include_requested:
        values = {name: obj.value(name) for name in names}
    else:
        values = {name: obj.value(name) for name in names if obj.value(name) is not None}
    return {
        "id": obj.id,
        "properties": values,
        "createdAt": _iso(obj.created_at),
        "updatedAt": _iso(obj.updated_at),
        "archived": False,
    }


def _associations_json(obj: CrmObject, wanted: list[str]) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    for to_type in (_object_type(name) for name in wanted):
        results = [
            {"id": to_id, "type": association.label}
            for linked_type, to_id, association in obj.associations
            if linked_type == to_type
        ]
        if results:
            answer[to_type] = {"results": results}
    return answer


def _property_error(problems: list[tuple[str, str, str]]) -> HubSpotError:
    details = [
        {"isValid": False, "message": message, "error": code, "name": name, "localizedErrorMessage": message}
        for name, code, message in problems
    ]
    return HubSpotError(400, "VALIDATION_ERROR", f"Property values were not valid: {json.dumps(details)}")


def _matches_groups(obj: CrmObject, groups: list[dict[str, Any]]) -> bool:
    if not groups:
        return True
    return any(all(_matches_filter(obj, f) for f in group.get("filters") or []) for group in groups)


def _matches_filter(obj: CrmObject, spec: dict[str, Any]) -> bool:
    value = obj.value(str(spec.get("propertyName")))
    operator = spec.get("operator", "EQ")
    wanted = spec.get("value")
    if operator == "HAS_PROPERTY":
        return value not in (None, "")
    if operator == "NOT_HAS_PROPERTY":
        return value in (None, "")
    if value is None:
        return operator in ("NEQ", "NOT_IN")
    if operator in ("EQ", "NEQ"):
        return (value.lower() == str(wanted).lower()) == (operator == "EQ")
    if operator in ("IN", "NOT_IN"):
        inside = value.lower() in {str(v).lower() for v in spec.get("values") or []}
        return inside == (operator == "IN")
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        pattern = str(wanted).lower()
        found = any(fnmatch.fnmatchcase(token, pattern) for token in re.split(r"[\s@.,;]+", value.lower()))
        return found == (operator == "CONTAINS_TOKEN")
    ordering = {
        "LT": lambda c: c < 0,
        "LTE": lambda c: c <= 0,
        "GT": lambda c: c > 0,
        "GTE": lambda c: c >= 0,
    }
    if operator in ordering:
        return ordering[operator](_compare(value, str(wanted)))
    if operator == "BETWEEN":
        return _compare(value, str(wanted)) >= 0 and _compare(value, str(spec.get("highValue"))) <= 0
    raise HubSpotError(400, "VALIDATION_ERROR", f"Unsupported filter operator {operator}")


def _compare(left: str, right: str) -> int:
    """Numbers as numbers, datetimes (ISO or epoch ms) as instants, anything else as text."""
    keys: list[tuple[Any, Any]] = []
    with contextlib.suppress(ValueError):
        keys.append((float(left), float(right)))
    left_at, right_at = _as_datetime(left), _as_datetime(right)
    if left_at is not None and right_at is not None:
        keys.append((left_at, right_at))
    a, b = keys[0] if keys else (left.lower(), right.lower())
    return (a > b) - (a < b)


def _matches_query(obj: CrmObject, query: Any, fields: tuple[str, ...]) -> bool:
    if not query:
        return True
    needle = str(query).lower()
    return any(needle in (obj.value(name) or "").lower() for name in fields)


def _sorted(objects: list[CrmObject], sorts: list[Any]) -> list[CrmObject]:
    """``sorts`` as ``["-createdate"]`` or ``[{"propertyName", "direction"}]``; default: by id."""
    result = sorted(objects, key=lambda o: int(o.id))
    for spec in reversed(sorts):
        if isinstance(spec, str):
            name, descending = spec.lstrip("-"), spec.startswith("-")
        else:
            name, descending = str(spec.get("propertyName")), spec.get("direction") == "DESCENDING"
        result.sort(key=lambda o: (o.value(name) is None, o.value(name) or ""), reverse=descending)
    return result
