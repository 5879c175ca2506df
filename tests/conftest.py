from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dj_database_url
import pytest
from django.db import connections
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Account, EndUser
from plgapp.keys import KeyKind
from plgapp.models import Tenant, User
from plgapp.roles import Role
from plgapp.services import api_key_create
from tests.factories import PASSWORD, TenantFactory, TenantMemberFactory, UserFactory

_CREDENTIALS = ("USER", "PASSWORD", "HOST", "PORT")


def _use_credentials(of: Mapping[str, Any]) -> None:
    db = connections["default"]
    db.close()
    db.settings_dict.update({key: of.get(key) for key in _CREDENTIALS})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each of schemathesis' tests (one per API operation) its operation as its parameter in its id.

    pytest 9.2 builds an item's id from its `originalname` and its parametrization, and schemathesis 4.32's items
    share both: all 119 had one id. pytest-xdist hands tests out by id, so it ran one of them (ADR 0029)."""
    for item in items:
        label = getattr(item, "operation_label", None)
        if label is not None and isinstance(item, pytest.Function) and item.id.params is None:
            item._id = item.id.with_params(label)  # the id pytest would build from a parametrization of that name
    repeated = [nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1]
    if repeated:
        raise pytest.UsageError(f"tests that share an id, of which pytest-xdist would run one: {repeated[:5]}")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """The test database is created, migrated and dropped by the schema's owner, like production's; the tests
    then connect as the application's role, which row-level security applies to (plgapp/rls.py)."""
    from django.conf import settings

    _use_credentials(settings.DATABASE_OWNER)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    from django.conf import settings

    app = {key: connections["default"].settings_dict.get(key) for key in _CREDENTIALS}
    app["USER"] = settings.DATABASE_APP_ROLE
    app_password = dj_database_url.parse(os.environ["DATABASE_URL"]).get("PASSWORD")
    app["PASSWORD"] = app_password
    with django_db_blocker.unblock():
        if settings.DATABASE_OWNER["USER"] != settings.DATABASE_APP_ROLE:
            with connections["default"].cursor() as cursor:  # flushing between transactional tests truncates
                cursor.execute(f'GRANT TRUNCATE ON ALL TABLES IN SCHEMA public TO "{settings.DATABASE_APP_ROLE}"')
        _use_credentials(app)
    yield
    with django_db_blocker.unblock():
        _use_credentials(settings.DATABASE_OWNER)


@pytest.fixture(autouse=True, scope="session")
def test_session_sees_every_tenant() -> None:
    from plgapp import rls

    rls.mark(rls.ALL_TENANTS)  # no connection is open yet: each one applies it as it opens


@pytest.fixture(autouse=True)
def test_bodies_see_every_tenant(test_session_sees_every_tenant: None, django_db_blocker: Any) -> Iterator[None]:
    """Test code seeds and inspects several tenants. Requests and tasks it runs set their own tenant (the request
    middleware restores this afterwards); other threads (live servers) start with none, as in production. Set
    before and after every test: a test that authenticates or resolves a tenant outside a request leaves that
    tenant behind, and module fixtures run between tests."""
    from plgapp import rls

    with django_db_blocker.unblock():
        rls.swap(rls.ALL_TENANTS)
    yield
    with django_db_blocker.unblock():
        rls.swap(rls.ALL_TENANTS)


@pytest.fixture(autouse=True)
def no_hint_pause_left_by_an_earlier_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that made a processing hint fail (Redis away) pauses this process's hints for a few seconds
    (signals.services); the next test, ingesting within them, would send none and wait for marks nobody processes."""
    from signals import services as signals_services

    monkeypatch.setattr(signals_services, "_hints_paused_until", 0.0)


@pytest.fixture(autouse=True, scope="session")
def short_lived_connections() -> None:
    # Live-server threads must not keep connections open past a test, or the test database cannot
    # be dropped at the end of the run.
    connections["default"].settings_dict["CONN_MAX_AGE"] = 0


@pytest.fixture(autouse=True)
def test_settings(settings: Any) -> None:
    # Real hashing costs ~0.5 s a password by design; tests need logins, not brute-force resistance.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Serve static files from the apps (no collectstatic manifest in a fresh checkout).
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.WHITENOISE_USE_FINDERS = True
    # Sign-in throttling counts failures in Redis for 15 minutes: every test starts with a clean slate.
    from plgapp.redis_client import redis_for

    client = redis_for(settings.REDIS_URL)
    # Likewise the "a processing task is queued" flags (signals/services.py), which no worker clears here.
    stale = list(client.scan_iter("plg:login:*")) + list(client.scan_iter("plg:processing:hinted:*"))
    if stale:
        client.delete(*stale)


@dataclass
class TenantWorld:
    """A tenant with an admin login, a write key and a secret key."""

    tenant: Tenant
    admin: User
    write_key: str
    secret_key: str

    @property
    def slug(self) -> str:
        return self.tenant.slug


def pk_of(world: TenantWorld, model: type[Account] | type[EndUser], external_id: str) -> int:
    """The id of the world's account or user with this external id."""
    return model.objects.for_tenant(world.tenant).get(external_id=external_id).pk


def make_world(slug: str) -> TenantWorld:
    tenant = TenantFactory.create(name=f"{slug.title()} Inc.", slug=slug)
    admin = UserFactory.create(email=f"admin@{slug}.test")
    TenantMemberFactory.create(tenant=tenant, user=admin, role=Role.ADMIN)
    write = api_key_create(tenant=tenant, kind=KeyKind.WRITE, name=f"{slug} write", created_by=admin)
    secret = api_key_create(tenant=tenant, kind=KeyKind.SECRET, name=f"{slug} secret", created_by=admin)
    return TenantWorld(tenant=tenant, admin=admin, write_key=write.raw_key, secret_key=secret.raw_key)


@pytest.fixture
def tenant_a(db: None) -> TenantWorld:
    return make_world("tenant-a")


@pytest.fixture
def tenant_b(db: None) -> TenantWorld:
    return make_world("tenant-b")


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def secret_client() -> Callable[[TenantWorld], APIClient]:
    def make(world: TenantWorld) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {world.secret_key}")
        return client

    return make


@pytest.fixture
def member_client(db: None) -> Callable[..., Client]:
    """A browser-like client signed in as a new member of `tenant` with `role`."""

    def make(tenant: Tenant, role: Role = Role.ADMIN, *, enforce_csrf: bool = False) -> Client:
        user = UserFactory.create()
        TenantMemberFactory.create(tenant=tenant, user=user, role=role)
        client = Client(enforce_csrf_checks=enforce_csrf)
        assert client.login(username=user.email, password=PASSWORD)
        client.user = user  # type: ignore[attr-defined]
        return client

    return make
