"""Writes of the tenancy core: tenants, members, API keys, worker heartbeats."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from plgapp.keys import KeyKind, display_prefix, generate_raw_key, hash_key
from plgapp.models import SLUG_VALIDATOR, ApiKey, Tenant, TenantMember, User, WorkerHeartbeat
from plgapp.roles import Role

# last_used_at is informational: write it at most once a minute per key, so a busy ingestion key
# does not turn every request into a row update.
LAST_USED_RESOLUTION = timedelta(seconds=60)
_last_marked: dict[UUID, float] = {}


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    raw_key: str  # shown to the caller exactly once; only its hash is stored


@dataclass(frozen=True)
class TenantBootstrap:
    tenant: Tenant
    admin: User
    admin_created: bool
    write_key: CreatedApiKey
    secret_key: CreatedApiKey


def tenant_create(*, name: str, slug: str) -> Tenant:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "A tenant needs a name."})
    try:
        SLUG_VALIDATOR(slug)
    except ValidationError as exc:
        raise ValidationError({"slug": exc.messages}) from exc
    if Tenant.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": f"A tenant with slug '{slug}' already exists."})
    try:
        with transaction.atomic():
            return Tenant.objects.create(name=name, slug=slug)
    except IntegrityError as exc:  # lost a race with a concurrent create
        raise ValidationError({"slug": f"A tenant with slug '{slug}' already exists."}) from exc


def user_get_or_create(*, email: str, password: str | None) -> tuple[User, bool]:
    email = User.objects.normalize_email(email.strip()).lower()
    existing = User.objects.filter(email__iexact=email).first()
    if existing is not None:
        return existing, False
    return User.objects.create_user(email=email, password=password), True


def tenant_member_set_role(*, tenant: Tenant, user: User, role: Role | str) -> TenantMember:
    role = Role(role)
    member, _created = TenantMember.objects.for_tenant(tenant).update_or_create(user=user, defaults={"role": role})
    return member


def api_key_create(*, tenant: Tenant, kind: KeyKind | str, name: str, created_by: User | None = None) -> CreatedApiKey:
    kind = KeyKind(kind)
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the key a name that says where it is used."})
    raw_key = generate_raw_key(kind)
    api_key = ApiKey.objects.for_tenant(tenant).create(
        name=name[:100], kind=kind.value, prefix=display_prefix(raw_key), hash=hash_key(raw_key), created_by=created_by
    )
    return CreatedApiKey(api_key=api_key, raw_key=raw_key)


def api_key_revoke(*, tenant: Tenant, key_id: UUID | str, now: datetime | None = None) -> ApiKey:
    """Revoke a key of this tenant (idempotent). Raises ApiKey.DoesNotExist for keys of other tenants."""
    now = now or timezone.now()
    keys = ApiKey.objects.for_tenant(tenant)
    keys.filter(pk=key_id, revoked_at__isnull=True).update(revoked_at=now)
    return keys.select_related("created_by").get(pk=key_id)


def api_key_mark_used(*, api_key: ApiKey, now: datetime | None = None) -> None:
    clock = time.monotonic()
    previous = _last_marked.get(api_key.pk)
    if previous is not None and clock - previous < LAST_USED_RESOLUTION.total_seconds():
        return
    _last_marked[api_key.pk] = clock
    now = now or timezone.now()
    # System-level bookkeeping on a key already resolved from its hash, hence unscoped.
    ApiKey.objects.unscoped().filter(pk=api_key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)


@transaction.atomic
def tenant_bootstrap(*, name: str, slug: str, admin_email: str, admin_password: str | None) -> TenantBootstrap:
    """A new tenant with its first admin, one write key and one secret key, all or nothing."""
    tenant = tenant_create(name=name, slug=slug)
    admin, admin_created = user_get_or_create(email=admin_email, password=admin_password)
    tenant_member_set_role(tenant=tenant, user=admin, role=Role.ADMIN)
    write_key = api_key_create(tenant=tenant, kind=KeyKind.WRITE, name="Default write key", created_by=admin)
    secret_key = api_key_create(tenant=tenant, kind=KeyKind.SECRET, name="Default secret key", created_by=admin)
    return TenantBootstrap(
        tenant=tenant, admin=admin, admin_created=admin_created, write_key=write_key, secret_key=secret_key
    )


def heartbeat_record(*, queue: str, hostname: str, now: datetime | None = None) -> None:
    WorkerHeartbeat.objects.update_or_create(
        queue=queue, defaults={"hostname": hostname[:255], "seen_at": now or timezone.now()}
    )


# --- members ----------------------------------------------------------------------------------------------------------


class MemberChangeRefused(ValueError):
    pass


@dataclass(frozen=True)
class Invitation:
    member: TenantMember
    set_password_path: str | None  # for a new login: a one-time link to choose a password (shown once)


def _admins_left(tenant: Tenant, without: TenantMember) -> int:
    return TenantMember.objects.for_tenant(tenant).filter(role=Role.ADMIN).exclude(pk=without.pk).count()


def tenant_member_invite(*, tenant: Tenant, email: str, role: Role | str) -> Invitation:
    """Add a login to the tenant with a role. A new login gets no password: the admin hands over a one-time link
    where the person chooses one (nothing is emailed from a self-hosted install without mail settings)."""
    from django.contrib.auth.tokens import default_token_generator
    from django.urls import reverse
    from django.utils.encoding import force_bytes
    from django.utils.http import urlsafe_base64_encode

    with transaction.atomic():
        user, created = user_get_or_create(email=email, password=None)
        if TenantMember.objects.for_tenant(tenant).filter(user=user).exists():
            raise MemberChangeRefused(f"{user.email} is already a member; change their role instead")
        member = tenant_member_set_role(tenant=tenant, user=user, role=role)
    link = None
    if created or not user.has_usable_password():
        uid, token = urlsafe_base64_encode(force_bytes(user.pk)), default_token_generator.make_token(user)
        link = reverse("password_reset_confirm", kwargs={"uidb64": uid, "token": token})
    return Invitation(member=member, set_password_path=link)


def tenant_member_change_role(*, tenant: Tenant, member_id: int, role: Role | str) -> TenantMember:
    with transaction.atomic():
        member = TenantMember.objects.for_tenant(tenant).select_for_update().get(pk=member_id)
        if member.role == Role.ADMIN and Role(role) != Role.ADMIN and not _admins_left(tenant, member):
            raise MemberChangeRefused("the tenant needs at least one admin: make someone else admin first")
        member.role = Role(role)
        member.save(update_fields=["role"])
    return member


def tenant_member_remove(*, tenant: Tenant, member_id: int) -> TenantMember:
    with transaction.atomic():
        member = TenantMember.objects.for_tenant(tenant).select_for_update().select_related("user").get(pk=member_id)
        if member.role == Role.ADMIN and not _admins_left(tenant, member):
            raise MemberChangeRefused("the tenant needs at least one admin: make someone else admin first")
        member.delete()
    return member
