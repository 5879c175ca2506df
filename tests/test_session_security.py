"""Sessions of people in the web UI: fixation, sign-out, password changes, removed members, cookie flags, headers."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from plgapp.models import TenantMember
from tests.conftest import TenantWorld
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

SESSION = settings.SESSION_COOKIE_NAME


def signed_in(world: TenantWorld) -> Client:
    browser = Client()
    response = browser.post("/login/", {"username": world.admin.email, "password": PASSWORD})
    assert response.status_code == 302, response.content
    return browser


def can_open_tenant(browser: Client, world: TenantWorld) -> bool:
    response = browser.get(f"/t/{world.slug}/playbooks/")
    return response.status_code == 200


def test_signing_in_issues_a_new_session_id_so_a_planted_one_is_worthless(tenant_a: TenantWorld) -> None:
    attacker = Client()
    attacker.get("/login/")
    session = attacker.session  # the attacker's session id, as if fixed in the victim's browser
    session["planted"] = True
    session.save()
    planted = session.session_key
    assert planted is not None

    victim = Client()
    victim.cookies[SESSION] = planted
    victim.post("/login/", {"username": tenant_a.admin.email, "password": PASSWORD})

    assert victim.cookies[SESSION].value != planted
    assert can_open_tenant(victim, tenant_a)
    replay = Client()
    replay.cookies[SESSION] = planted
    assert not can_open_tenant(replay, tenant_a)


def test_signing_out_ends_the_session_on_the_server_not_only_in_the_browser(tenant_a: TenantWorld) -> None:
    browser = signed_in(tenant_a)
    stolen = browser.cookies[SESSION].value
    assert browser.post("/logout/").status_code in (200, 302)

    replay = Client()
    replay.cookies[SESSION] = stolen
    assert not can_open_tenant(replay, tenant_a)
    assert replay.get(f"/t/{tenant_a.slug}/playbooks/").status_code == 302  # to the sign-in page


def test_a_password_change_signs_out_every_other_session(tenant_a: TenantWorld) -> None:
    laptop, phone = signed_in(tenant_a), signed_in(tenant_a)
    assert can_open_tenant(phone, tenant_a)

    tenant_a.admin.set_password("a completely new passphrase 42")
    tenant_a.admin.save()

    assert not can_open_tenant(phone, tenant_a)
    assert not can_open_tenant(laptop, tenant_a)


def test_a_removed_member_loses_the_tenant_at_once_with_their_session_still_open(tenant_a: TenantWorld) -> None:
    browser = signed_in(tenant_a)
    assert can_open_tenant(browser, tenant_a)

    TenantMember.objects.for_tenant(tenant_a.tenant).filter(user=tenant_a.admin).delete()

    assert browser.get(f"/t/{tenant_a.slug}/playbooks/").status_code == 404


def test_session_and_csrf_cookies_are_secure_httponly_and_same_site(tenant_a: TenantWorld) -> None:
    browser = Client()
    login_page = browser.get("/login/")
    signed = browser.post("/login/", {"username": tenant_a.admin.email, "password": PASSWORD})

    csrf: Any = login_page.cookies[settings.CSRF_COOKIE_NAME]
    session: Any = signed.cookies[SESSION]
    assert session["secure"]
    assert session["httponly"]
    assert session["samesite"] == "Lax"
    assert int(session["max-age"]) == settings.SESSION_COOKIE_AGE <= 14 * 24 * 3600
    assert csrf["secure"]
    assert csrf["samesite"] == "Lax"


def test_pages_forbid_framing_and_sniffing_and_keep_referrers_on_site(tenant_a: TenantWorld) -> None:
    response = signed_in(tenant_a).get(f"/t/{tenant_a.slug}/playbooks/")

    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
