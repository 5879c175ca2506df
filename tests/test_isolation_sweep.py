"""Tenant isolation, swept over every route of the URLconf (issue 8; DESIGN §4).

Tenant A gets one of everything. Then every route — management API (tenant B's secret key), the same API under
`/t/<slug>/api/v1/` and every UI page (tenant B's admin session) — is called with every method, with A's ids where
the route takes ids, and with B's own slug or A's. The proof:

- nothing of A appears in any answer (A's rows carry marker strings);
- A's data is unchanged afterwards, row for row;
- where the call names one of A's objects, the answer is the one a made-up id gets (404 / 405 / the same 400):
  another tenant's object is indistinguishable from a missing one.

A route whose parameter the sweep does not know fails the test: new routes cannot skip the sweep.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import Resolver404, URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Account, EndUser, Membership, PropertyDefinition, StageChange
from integrations.models import Connection, SandboxCall
from integrations.services import connection_create
from playbooks.models import ActionRun, Enrollment, Playbook, PlaybookVersion
from plgapp.models import ApiKey, TenantMember
from scoring.models import LeadDisposition, ModelVersion, Score
from signals.models import Event, Signal
from tests.conftest import TenantWorld

MARK = "alphasecret"  # in every name, email and key of tenant A's rows
METHODS = ("get", "post", "put", "patch", "delete")
# Routes with no tenant data to protect, or which are the way in.
PUBLIC = {"healthz", "readyz", "login", "logout", "password_reset_confirm", "home", "schema", "api-docs",
          "oauth-callback"}  # fmt: skip
MISSING = 987654321


def routes(resolver: Any = None, prefix: str = "") -> Iterator[tuple[str, str]]:
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            yield from routes(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.name or ""


def concrete(route: str, values: dict[str, str]) -> str:
    """A route with its parameters filled in: `<int:account_id>`, `(?P<pk>…)`; regex anchors removed."""

    def value(name: str) -> str:
        if name not in values:
            raise AssertionError(f"the isolation sweep does not know the route parameter {name!r} in {route!r}")
        return values[name]

    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: value(m.group(1)), route)  # regex groups first
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: value(m.group(1)), path)
    path = "/" + path.replace("^", "").replace("$", "").replace("/?", "/")
    try:
        resolve(path)
    except Resolver404 as exc:  # a URL that resolves nowhere would pass the sweep by answering 404
        raise AssertionError(f"the sweep built {path!r} for {route!r}, which resolves to no route") from exc
    return path


PK_BY_PREFIX = {"api-keys": "api_key", "accounts": "account", "users": "user", "events": "event",
                "signals": "signal", "playbooks/runs": "run", "playbooks": "playbook", "connections": "connection",
                "scoring/models": "model_version"}  # fmt: skip


def pk_object(route: str) -> str:
    api = route.split("api/v1/", 1)[1].lstrip("^")
    for prefix in sorted(PK_BY_PREFIX, key=len, reverse=True):
        if api.startswith(prefix + "/"):
            return PK_BY_PREFIX[prefix]
    raise AssertionError(f"the isolation sweep does not know which object {route!r} names by pk")


@pytest.fixture
def world_a(tenant_a: TenantWorld) -> dict[str, Any]:
    """One of everything in tenant A, every text carrying the marker."""
    tenant, now = tenant_a.tenant, timezone.now()
    account = Account.objects.for_tenant(tenant).create(external_id=f"{MARK}-acct", name=f"{MARK} Corp",
                                                        domain=f"{MARK}.test", stage="Trial",
                                                        properties={"plan": MARK})  # fmt: skip
    user = EndUser.objects.for_tenant(tenant).create(external_id=f"{MARK}-user", email=f"{MARK}@a.test")
    membership = Membership.objects.for_tenant(tenant).create(
        account=account, end_user=user, joined_at=now, state_changed_at=now, properties={"role": MARK}
    )
    event = Event.objects.for_tenant(tenant).create(name=f"{MARK}_event", account=account, end_user=user,
                                                    occurred_at=now, properties={"x": MARK})  # fmt: skip
    StageChange.objects.for_tenant(tenant).create(entity_type="account", entity_id=account.pk, to_stage="Trial",
                                                  changed_at=now)  # fmt: skip
    PropertyDefinition.objects.for_tenant(tenant).create(entity_type="account", key=f"{MARK}_prop", type="text",
                                                         first_seen_at=now)  # fmt: skip
    reasons = [{"feature": MARK, "text": MARK, "direction": "+", "weight": 1}]
    Score.objects.for_tenant(tenant).create(kind="conversion", entity_type="account", entity_id=account.pk, value=0.9,
                                            percentile=90, grade=5, computed_at=now, reasons=reasons)  # fmt: skip
    signal = Signal.objects.for_tenant(tenant).create(key=f"{MARK}_signal", name=MARK, kind="event_count",
                                                      event=f"{MARK}_event", window_days=7)  # fmt: skip
    model_version = ModelVersion.objects.for_tenant(tenant).create(
        kind="conversion", version=1, status="active", metrics={"auc": 0.8}, report={"note": MARK}
    )
    playbook = Playbook.objects.for_tenant(tenant).create(name=f"{MARK} playbook", object="account", status="active")
    version = PlaybookVersion.objects.for_tenant(tenant).create(
        playbook=playbook, number=1,
        definition={"object": "account", "entry": {"field": "account.stage", "op": "eq", "value": "Trial"},
                    "actions": [{"id": "log", "type": "log", "params": {"message": MARK}}]},
    )  # fmt: skip
    Playbook.objects.for_tenant(tenant).filter(pk=playbook.pk).update(current_version=version)
    enrollment = Enrollment.objects.for_tenant(tenant).create(playbook=playbook, version=version, entity_id=account.pk,
                                                              group="treatment", entered_at=now)  # fmt: skip
    run = ActionRun.objects.for_tenant(tenant).create(enrollment=enrollment, playbook=playbook, phase="main",
                                                      action_id="log", action_type="log", idempotency_key=MARK,
                                                      status="dead", error=MARK)  # fmt: skip
    connection = connection_create(tenant=tenant, provider="slack", name=f"{MARK} connection", mode="sandbox",
                                   credentials={}, settings={}, now=now)  # fmt: skip
    SandboxCall.objects.for_tenant(tenant).create(connection=connection, operation="chat.postMessage",
                                                  request={"text": MARK})  # fmt: skip
    LeadDisposition.objects.for_tenant(tenant).create(account=account, outcome="disqualified", reason=MARK,
                                                      hidden_until=now - timedelta(days=1))  # fmt: skip
    return {
        "account_id": str(account.pk), "user_id": str(user.pk), "membership": membership, "event": str(event.pk),
        "signal_id": str(signal.pk), "model_version": str(model_version.pk), "playbook_id": str(playbook.pk),
        "run_id": str(run.pk), "connection_id": str(connection.pk),
        "member_id": str(TenantMember.objects.for_tenant(tenant).get(user=tenant_a.admin).pk),
        "key_id": str(ApiKey.objects.for_tenant(tenant).first().pk),  # type: ignore[union-attr]
    }  # fmt: skip


SNAPSHOT_MODELS = (Account, EndUser, Membership, Event, StageChange, PropertyDefinition, Score, Signal, ModelVersion,
                   Playbook, PlaybookVersion, Enrollment, ActionRun, Connection, SandboxCall, LeadDisposition,
                   TenantMember, ApiKey)  # fmt: skip


def snapshot(world: TenantWorld) -> dict[str, list[Any]]:
    snap: dict[str, list[Any]] = {}
    for model in SNAPSHOT_MODELS:
        manager: Any = model.objects
        snap[model.__name__] = list(manager.for_tenant(world.tenant).order_by("pk").values())
    return snap


def values_for(route: str, ids: dict[str, Any], slug: str, *, missing: bool) -> dict[str, str]:
    def pick(name: str) -> str:
        return str(MISSING) if missing else str(ids[name])

    values = {name: pick(name) for name in ("account_id", "user_id", "playbook_id", "run_id", "connection_id",
                                            "member_id", "signal_id")}  # fmt: skip
    values["key_id"] = "00000000-0000-4000-8000-000000000000" if missing else str(ids["key_id"])
    values["tenant_slug"], values["provider"] = slug, "slack"
    if "(?P<pk>" in route:
        obj = pk_object(route)
        key = {"account": "account_id", "user": "user_id", "event": "event", "signal": "signal_id", "run": "run_id",
               "playbook": "playbook_id", "connection": "connection_id", "model_version": "model_version",
               "api_key": "key_id"}[obj]  # fmt: skip
        values["pk"] = values["key_id"] if key == "key_id" else pick(key)
    return values


def call(client: Client | APIClient, method: str, url: str) -> tuple[int, str]:
    kwargs: dict[str, Any] = {"data": {}, "content_type": "application/json"} if method != "get" else {}
    response = getattr(client, method)(url, **kwargs)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, body.decode(errors="replace")


@pytest.mark.django_db
def test_no_route_shows_or_changes_another_tenants_data(
    tenant_a: TenantWorld, tenant_b: TenantWorld, world_a: dict[str, Any]
) -> None:
    before = snapshot(tenant_a)
    as_b_key = APIClient()
    as_b_key.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_b.secret_key}")
    as_b_session = Client(raise_request_exception=False)
    as_b_session.force_login(tenant_b.admin)
    failures: list[str] = []
    swept = 0
    for route, name in routes():
        if name in PUBLIC or route.startswith(("api/journy", "api/segment", "admin")):
            continue
        tenant_route = "<slug:tenant_slug>" in route
        contexts = [(as_b_session, tenant_b.slug), (as_b_session, tenant_a.slug)] if tenant_route else [(as_b_key, "")]
        for client, slug in contexts:
            for method in METHODS:
                url = concrete(route, values_for(route, world_a, slug, missing=False))
                status, body = call(client, method, url)
                swept += 1
                if MARK in body:
                    failures.append(f"{method.upper()} {url} ({name}) shows tenant A's data ({status})")
                    continue
                if status >= 500:
                    failures.append(f"{method.upper()} {url} ({name}) answered {status}")
                    continue
                names_a = slug == tenant_a.slug or re.search(r"<\w+:\w+_id>|<uuid:|\(\?P<pk>", route)
                if names_a and status != 404:
                    made_up = concrete(route, values_for(route, world_a, "no-such-tenant" if slug == tenant_a.slug
                                                         else slug, missing=True))  # fmt: skip
                    expected, _ = call(client, method, made_up)
                    if status != expected:
                        failures.append(f"{method.upper()} {url} ({name}) answered {status}; a made-up id gets "
                                        f"{expected}")  # fmt: skip
    assert swept > 300, f"only {swept} calls: did the URLconf change shape?"
    assert not failures, "\n".join(failures)
    assert snapshot(tenant_a) == before, "tenant A's data changed"


@pytest.mark.django_db
def test_every_ui_form_refuses_a_post_without_a_csrf_token(tenant_a: TenantWorld, world_a: dict[str, Any]) -> None:
    """A signed-in admin's browser tricked into posting from another site: every UI route that takes a POST
    answers 403 without the CSRF token, and nothing changes. (The API under /t/<slug>/api/v1/ uses DRF's
    session authentication, which enforces CSRF too; key-authenticated API calls carry no cookies.)"""
    before = snapshot(tenant_a)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(tenant_a.admin)
    refused, accepted = 0, []
    for route, name in routes():
        if name in PUBLIC - {"login", "logout", "password_reset_confirm"} or route.startswith(("api/", "admin")):
            continue
        if "uidb64" in route:
            continue  # the set-password link is covered by Django's own tests (token + CSRF)
        url = concrete(route, values_for(route, world_a, tenant_a.slug, missing=False))
        status = browser.post(url, {"name": "x", "outcome": "done", "action": "pause"}).status_code
        if status == 403:
            refused += 1
        elif status != 405:  # a GET-only page: nothing to forge
            accepted.append(f"POST {url} ({name}) answered {status} without a CSRF token")
    assert not accepted, "\n".join(accepted)
    assert refused > 20
    assert snapshot(tenant_a) == before
