from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connections
from django.test import Client
from rest_framework.test import APIClient

from plgapp.keys import KeyKind
from plgapp.models import Tenant, User
from plgapp.roles import Role
from plgapp.services import api_key_create
from tests.factories import PASSWORD, TenantFactory, TenantMemberFactory, UserFactory


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
    stale = list(client.scan_iter("plg:login:*"))
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
