"""The web UI of the foundation: sign-in, tenant home and switcher, API keys page."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.test import Client

from plgapp.models import ApiKey, User
from plgapp.roles import Role
from tests.conftest import TenantWorld
from tests.factories import PASSWORD, TenantMemberFactory, UserFactory

MemberClient = Callable[..., Client]


def test_signing_in_with_email_and_password_lands_on_the_users_tenant(tenant_a: TenantWorld) -> None:
    client = Client()

    page = client.get("/login/")
    response = client.post("/login/", {"username": "ADMIN@tenant-a.test", "password": PASSWORD}, follow=True)

    assert page.status_code == 200
    assert response.redirect_chain[-1][0] == f"/t/{tenant_a.slug}/"
    assert b"Tenant-A Inc." in response.content


def test_a_wrong_password_is_refused_with_a_message(tenant_a: TenantWorld) -> None:
    response = Client().post("/login/", {"username": "admin@tenant-a.test", "password": "nope"})

    assert response.status_code == 200
    assert b"Please enter a correct email" in response.content


def test_pages_need_a_sign_in(tenant_a: TenantWorld) -> None:
    response = Client().get(f"/t/{tenant_a.slug}/")

    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_signing_out_ends_the_session(tenant_a: TenantWorld, member_client: MemberClient) -> None:
    client = member_client(tenant_a.tenant)

    client.post("/logout/")

    assert client.get(f"/t/{tenant_a.slug}/").status_code == 302


def test_another_tenants_pages_are_not_found(
    tenant_a: TenantWorld, tenant_b: TenantWorld, member_client: MemberClient
) -> None:
    client = member_client(tenant_b.tenant)

    assert client.get(f"/t/{tenant_a.slug}/").status_code == 404
    assert client.get(f"/t/{tenant_a.slug}/settings/api-keys/").status_code == 404
    key_of_a = ApiKey.objects.for_tenant(tenant_a.tenant).first()
    assert key_of_a is not None
    revoke = client.post(f"/t/{tenant_b.slug}/settings/api-keys/{key_of_a.pk}/revoke/")
    assert revoke.status_code == 404
    key_of_a.refresh_from_db()
    assert key_of_a.is_active


def test_the_tenant_switcher_lists_every_tenant_of_the_user(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    user = UserFactory.create()
    TenantMemberFactory.create(tenant=tenant_a.tenant, user=user, role=Role.VIEWER)
    TenantMemberFactory.create(tenant=tenant_b.tenant, user=user, role=Role.ADMIN)
    client = Client()
    client.force_login(user)

    page = client.get(f"/t/{tenant_b.slug}/").content.decode()
    home = client.get("/")

    assert f'href="/t/{tenant_a.slug}/"' in page
    assert f'href="/t/{tenant_b.slug}/" aria-current="true"' in page
    assert home["Location"] == f"/t/{tenant_b.slug}/"  # the last tenant used


@pytest.mark.parametrize(("role", "start"), [(Role.SALES, "pqls/"), (Role.MARKETER, "playbooks/"), (Role.VIEWER, "")])
def test_each_role_starts_where_its_work_is(tenant_a: TenantWorld, member_client: MemberClient, role: Role,
                                            start: str) -> None:  # fmt: skip
    assert member_client(tenant_a.tenant, role).get("/")["Location"] == f"/t/{tenant_a.slug}/{start}"


def test_a_user_without_tenants_is_told_how_to_get_one(db: None) -> None:
    client = Client()
    client.force_login(User.objects.create_user(email="lonely@example.test", password=PASSWORD))

    response = client.get("/")

    assert response.status_code == 200
    assert b"not a member of any tenant" in response.content


def test_the_overview_shows_people_and_role(tenant_a: TenantWorld, member_client: MemberClient) -> None:
    client = member_client(tenant_a.tenant, Role.SALES)

    page = client.get(f"/t/{tenant_a.slug}/").content.decode()

    assert "admin@tenant-a.test" in page
    assert "your role: <strong>sales</strong>" in page
    assert "API keys</a>" not in page  # the nav shows only pages the role may open


@pytest.mark.parametrize("role", [Role.VIEWER, Role.SALES, Role.MARKETER])
def test_the_api_keys_page_is_for_admins_only(tenant_a: TenantWorld, member_client: MemberClient, role: Role) -> None:
    client = member_client(tenant_a.tenant, role)

    assert client.get(f"/t/{tenant_a.slug}/settings/api-keys/").status_code == 403
    assert client.post(f"/t/{tenant_a.slug}/settings/api-keys/", {"name": "x", "kind": "secret"}).status_code == 403
    assert ApiKey.objects.for_tenant(tenant_a.tenant).count() == 2


def test_creating_a_key_on_the_page_shows_it_once(tenant_a: TenantWorld, member_client: MemberClient) -> None:
    client = member_client(tenant_a.tenant, Role.ADMIN)
    url = f"/t/{tenant_a.slug}/settings/api-keys/"

    created = client.post(url, {"name": "Mobile app", "kind": "write"})
    shown = re.search(r'data-testid="new-key">(plg_pk_[A-Za-z0-9_-]+)<', created.content.decode())
    later = client.get(url).content.decode()

    assert created.status_code == 201
    assert shown is not None
    raw_key = shown.group(1)
    assert raw_key not in later
    assert raw_key[:15] in later  # recognizable by its prefix
    assert "Mobile app" in later


def test_the_page_works_with_htmx_partials(tenant_a: TenantWorld, member_client: MemberClient) -> None:
    client = member_client(tenant_a.tenant, Role.ADMIN)
    url = f"/t/{tenant_a.slug}/settings/api-keys/"

    created = client.post(url, {"name": "Server", "kind": "secret"}, HTTP_HX_REQUEST="true")
    key = ApiKey.objects.for_tenant(tenant_a.tenant).get(name="Server")
    revoked = client.post(f"{url}{key.pk}/revoke/", HTTP_HX_REQUEST="true")

    assert created.status_code == 201
    assert created.content.decode().startswith('<div id="api-keys-panel">')
    assert "plg_sk_" in created.content.decode()
    assert revoked.status_code == 200
    assert "<html" not in revoked.content.decode()
    key.refresh_from_db()
    assert not key.is_active


def test_an_invalid_key_form_says_what_is_wrong_and_creates_nothing(
    tenant_a: TenantWorld, member_client: MemberClient
) -> None:
    client = member_client(tenant_a.tenant, Role.ADMIN)

    response = client.post(f"/t/{tenant_a.slug}/settings/api-keys/", {"name": "", "kind": "root"})

    assert response.status_code == 400
    assert b"This field is required." in response.content
    assert b"Select a valid choice." in response.content
    assert ApiKey.objects.for_tenant(tenant_a.tenant).count() == 2


def test_an_invalid_form_sent_by_htmx_comes_back_as_200_so_htmx_shows_it(
    tenant_a: TenantWorld, member_client: MemberClient
) -> None:
    client = member_client(tenant_a.tenant, Role.ADMIN)

    response = client.post(
        f"/t/{tenant_a.slug}/settings/api-keys/", {"name": "  ", "kind": "write"}, HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 200
    assert b"This field is required." in response.content


def test_the_page_showing_a_new_key_is_never_cached(tenant_a: TenantWorld, member_client: MemberClient) -> None:
    client = member_client(tenant_a.tenant, Role.ADMIN)

    response = client.post(f"/t/{tenant_a.slug}/settings/api-keys/", {"name": "k", "kind": "write"})

    assert "no-store" in response["Cache-Control"]


def test_revoking_without_htmx_redirects_with_a_message(tenant_a: TenantWorld, member_client: MemberClient) -> None:
    client = member_client(tenant_a.tenant, Role.ADMIN)
    key = ApiKey.objects.for_tenant(tenant_a.tenant).get(kind="write")

    response = client.post(f"/t/{tenant_a.slug}/settings/api-keys/{key.pk}/revoke/", follow=True)

    assert b"Revoked tenant-a write" in response.content
    assert b"revoked" in response.content


def test_pages_load_nothing_from_other_hosts(tenant_a: TenantWorld, member_client: MemberClient) -> None:
    client = member_client(tenant_a.tenant, Role.ADMIN)

    for url in ["/login/", f"/t/{tenant_a.slug}/", f"/t/{tenant_a.slug}/settings/api-keys/", "/api/docs/"]:
        html = client.get(url).content.decode()
        external = re.findall(r'(?:src|href)="(https?://[^"]+)"', html)
        assert external == [], f"{url} loads {external}"
