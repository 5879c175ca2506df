"""Who is calling and for which tenant: one resolution for the API (keys, session) and the UI (session).

The tenant comes from the authenticated key, or from the `/t/<slug>/` URL checked against the session
user's memberships — never from a request body. A tenant the caller does not belong to is "not found",
exactly like a tenant that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from plgapp import rls
from plgapp.keys import KeyKind
from plgapp.models import ApiKey, Tenant
from plgapp.roles import SECRET_KEY_CAPABILITIES, WRITE_KEY_CAPABILITIES, Capability, Role, capabilities_for_role
from plgapp.selectors import tenant_member_find


@dataclass(frozen=True)
class TenantAccess:
    tenant: Tenant
    capabilities: frozenset[Capability]
    role: Role | None = None  # for people; keys have capabilities by kind
    user_id: int | None = None
    api_key: ApiKey | None = None

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    @property
    def actor(self) -> str:
        if self.api_key is not None:
            return f"{self.api_key.kind} key {self.api_key.prefix}…"
        return f"{self.role} user"


def access_for_api_key(api_key: ApiKey) -> TenantAccess:
    capabilities = SECRET_KEY_CAPABILITIES if api_key.kind == KeyKind.SECRET else WRITE_KEY_CAPABILITIES
    return TenantAccess(tenant=api_key.tenant, capabilities=capabilities, api_key=api_key)


def access_for_user(*, user: AbstractBaseUser | AnonymousUser, tenant_slug: str) -> TenantAccess | None:
    member = tenant_member_find(user=user, tenant_slug=tenant_slug)
    if member is None:
        return None
    rls.tenant_enter(member.tenant_id)  # the rest of the request sees this tenant's rows only
    role = Role(member.role)
    return TenantAccess(tenant=member.tenant, capabilities=capabilities_for_role(role), role=role, user_id=user.pk)
