"""Reads of the tenancy core."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import Model, QuerySet

from plgapp import rls
from plgapp.keys import hash_key, kind_of
from plgapp.models import ApiKey, Tenant, TenantMember, WorkerHeartbeat


def api_keys_list(*, tenant: Tenant, include_revoked: bool = True) -> QuerySet[ApiKey]:
    queryset = ApiKey.objects.for_tenant(tenant).select_related("created_by")
    if not include_revoked:
        queryset = queryset.filter(revoked_at__isnull=True)
    return queryset.order_by("-created_at")


def api_key_find_active(*, raw_key: str) -> ApiKey | None:
    """The active key for a presented key string, with its tenant. Cross-tenant by nature: the key names it."""
    with rls.all_tenants():
        return _api_key_lookup(raw_key, _API_KEY_SQL)


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """`api_key_find_active` for a request: in the same round trip the connection enters the key's tenant, for the
    rest of the request (row-level security, plgapp/rls.py) — or no tenant at all when there is no active key."""
    api_key = _api_key_lookup(raw_key, _API_KEY_ENTER_SQL)
    if api_key is None:
        rls.reset()
    else:
        rls.mark(rls.tenant_context(api_key.tenant_id))
    return api_key


def _api_key_lookup(raw_key: str, statement: str) -> ApiKey | None:
    if kind_of(raw_key) is None:
        return None
    # Every ingestion request comes through here: plain SQL, as the ORM's query building costs more
    # than the indexed lookup itself. Not cached, so that a revoked key stops working at once.
    with connection.cursor() as cursor:
        cursor.execute(statement, [hash_key(raw_key)])
        row = cursor.fetchone()
    if row is None:
        return None
    key_width, tenant_width = len(_API_KEY_FIELDS), len(_TENANT_FIELDS)
    api_key = ApiKey.from_db("default", _API_KEY_FIELDS, row[:key_width])
    if api_key.revoked_at is not None:
        return None
    api_key.tenant = Tenant.from_db("default", _TENANT_FIELDS, row[key_width : key_width + tenant_width])
    return api_key


def _columns(model: type[Model]) -> tuple[list[str], str]:
    fields = list(model._meta.concrete_fields)
    return [field.attname for field in fields], ", ".join(f"{{alias}}.{field.column}" for field in fields)


_API_KEY_FIELDS, _api_key_columns = _columns(ApiKey)
_TENANT_FIELDS, _tenant_columns = _columns(Tenant)
_API_KEY_SQL = (
    f"SELECT {_api_key_columns.format(alias='k')}, {_tenant_columns.format(alias='t')} "  # noqa: S608 - model columns
    f"FROM {ApiKey._meta.db_table} AS k JOIN {Tenant._meta.db_table} AS t ON t.id = k.tenant_id WHERE k.hash = %s"
)
# Two statements, one round trip: look across tenants, and on the row found switch to its tenant.
_API_KEY_ENTER_SQL = f"{rls.ALL_TENANTS_SQL}; " + _API_KEY_SQL.replace(
    " FROM ", f", {rls.enter_tenant_of_row_sql('k.tenant_id')} FROM ", 1
)


def tenant_member_find(*, user: AbstractBaseUser | AnonymousUser, tenant_slug: str) -> TenantMember | None:
    """The user's membership of the tenant with this slug; None when the tenant is missing or not theirs."""
    if not user.is_authenticated:
        return None
    with rls.all_tenants():  # which tenant is the question
        return (
            TenantMember.objects.unscoped()
            .select_related("tenant")
            .filter(user_id=user.pk, tenant__slug=tenant_slug)
            .first()
        )


def tenant_memberships_for_user(*, user: AbstractBaseUser | AnonymousUser) -> list[TenantMember]:
    if not user.is_authenticated:
        return []
    with rls.all_tenants():  # a person's memberships span tenants
        return list(
            TenantMember.objects.unscoped().select_related("tenant").filter(user_id=user.pk).order_by("tenant__name")
        )


def tenant_members_list(*, tenant: Tenant) -> QuerySet[TenantMember]:
    return TenantMember.objects.for_tenant(tenant).select_related("user").order_by("user__email")


def worker_heartbeats() -> dict[str, WorkerHeartbeat]:
    return {beat.queue: beat for beat in WorkerHeartbeat.objects.all()}
