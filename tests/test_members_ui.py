"""Settings → Members: admins invite (a one-time set-password link for a new login), change roles and remove
members; the tenant always keeps an admin; nobody else manages members."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.test import Client

from plgapp.models import TenantMember, User
from plgapp.roles import Role
from tests.conftest import TenantWorld


def members_url(world: TenantWorld) -> str:
    return f"/t/{world.slug}/settings/members/"


@pytest.mark.django_db
def test_an_admin_invites_a_new_rep_who_sets_a_password_with_the_one_time_link_and_signs_in(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    admin = member_client(tenant_a.tenant, Role.ADMIN)

    invited = admin.post(members_url(tenant_a), {"email": "New.Rep@Example.com", "role": "sales"})

    assert invited.status_code == 201
    link = re.search(r'data-testid="invite-link">([^<]+)<', invited.content.decode())
    assert link
    member = TenantMember.objects.for_tenant(tenant_a.tenant).get(user__email="new.rep@example.com")
    assert member.role == "sales"
    assert not member.user.has_usable_password()
    browser = Client()
    form = browser.get(link.group(1).replace("http://testserver", ""), follow=True)
    set_url = form.redirect_chain[-1][0]
    done = browser.post(set_url, {"new_password1": "a-long-Pass-phrase-42", "new_password2": "a-long-Pass-phrase-42"})
    assert done.status_code == 302
    assert browser.login(username="new.rep@example.com", password="a-long-Pass-phrase-42")
    assert browser.get(f"/t/{tenant_a.slug}/pqls/").status_code == 200
    assert browser.get(link.group(1).replace("http://testserver", ""), follow=True).context["validlink"] is False


@pytest.mark.django_db
def test_roles_change_and_members_leave_but_the_last_admin_stays(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    admin = member_client(tenant_a.tenant, Role.ADMIN)
    me = TenantMember.objects.for_tenant(tenant_a.tenant).get(user=admin.user)  # type: ignore[attr-defined]
    others = TenantMember.objects.for_tenant(tenant_a.tenant).exclude(pk=me.pk).filter(role=Role.ADMIN)
    others.update(role=Role.VIEWER)  # the fixture's own admin: now `me` is the only admin
    rep = TenantMember.objects.for_tenant(tenant_a.tenant).create(user=User.objects.create_user(email="r@x.test"),
                                                                   role=Role.SALES)  # fmt: skip

    admin.post(f"{members_url(tenant_a)}{rep.pk}/", {"role": "marketer"})
    refused = admin.post(f"{members_url(tenant_a)}{me.pk}/", {"role": "viewer"}, follow=True)
    admin.post(f"{members_url(tenant_a)}{rep.pk}/", {"remove": "1"})

    assert "needs at least one admin" in refused.content.decode()
    me.refresh_from_db()
    assert me.role == "admin"
    assert not TenantMember.objects.for_tenant(tenant_a.tenant).filter(pk=rep.pk).exists()


@pytest.mark.django_db
def test_only_admins_manage_members_and_other_tenants_members_are_404(
    tenant_a: TenantWorld, tenant_b: TenantWorld, member_client: Callable[..., Client]
) -> None:
    marketer = member_client(tenant_a.tenant, Role.MARKETER)
    other_admin = member_client(tenant_b.tenant, Role.ADMIN)
    victim = TenantMember.objects.for_tenant(tenant_a.tenant).first()
    assert victim is not None

    assert marketer.get(members_url(tenant_a)).status_code == 403
    assert marketer.post(members_url(tenant_a), {"email": "x@y.test", "role": "admin"}).status_code == 403
    assert other_admin.post(f"{members_url(tenant_b)}{victim.pk}/", {"remove": "1"}).status_code == 404
    assert other_admin.post(f"{members_url(tenant_b)}{victim.pk}/", {"role": "viewer"}).status_code == 404
    assert TenantMember.objects.for_tenant(tenant_a.tenant).filter(pk=victim.pk, role=victim.role).exists()
    assert not User.objects.filter(email="x@y.test").exists()


@pytest.mark.django_db
def test_inviting_an_existing_member_or_nonsense_is_a_clear_error(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    admin = member_client(tenant_a.tenant, Role.ADMIN)
    email = admin.user.email  # type: ignore[attr-defined]

    assert "already a member" in admin.post(members_url(tenant_a), {"email": email, "role": "sales"}).content.decode()
    assert admin.post(members_url(tenant_a), {"email": "not-an-email", "role": "sales"}).status_code == 400
    assert admin.post(members_url(tenant_a), {"email": "a@b.test", "role": "owner"}).status_code == 400
