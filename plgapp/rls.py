"""PostgreSQL row-level security: the second wall behind the tenant-scoping door (docs/adr/0013-row-level-security.md).

Every table with a `tenant_id` column has a policy that shows and accepts only the rows of the tenant named by
the connection's `app.tenant_id` setting — or every row while `app.all_tenants` is `on` (system work: sweeps,
the key and membership lookups that find the tenant in the first place). The application connects as a role
that does not own the tables and cannot bypass row-level security; the tables force it even for their owner.

Who sets what:
- a request: nothing until the caller is resolved; then the tenant of the key or of the membership
  (`tenant_enter`), for the rest of the request; `DatabaseContextMiddleware` clears it when the request ends;
- a Celery task: its `tenant_id` argument, or all tenants for the system tasks that take none (plgapp/celery.py);
- management commands: all tenants (`operator_command`), they are the operator's tools.

With no setting at all a query sees no tenant row, so a path that forgets to say whose data it works on fails
closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.dispatch import receiver

TENANT_SETTING = "app.tenant_id"
ALL_TENANTS_SETTING = "app.all_tenants"
POLICY_PREFIX = "plg_tenant_isolation_v"
POLICY_NAME = f"{POLICY_PREFIX}2"  # a changed condition gets a new version; migrate replaces the older ones
# current_setting(..., true): NULL when never set in this session, '' after a reset; NULLIF maps both to "no
# tenant", which matches no row. The tenant comparison is a plain equality, so it can use the tenant indexes.
# Each setting is read in a sub-select: PostgreSQL reads it once per query (an InitPlan) instead of once per row
# scanned (v1 did), which took a quarter off scans of millions of rows (docs/adr/0013-row-level-security.md).
POLICY_CONDITION = (
    f"tenant_id = (SELECT NULLIF(current_setting('{TENANT_SETTING}', true), '')::bigint)"
    f" OR (SELECT current_setting('{ALL_TENANTS_SETTING}', true) = 'on')"
)

_SET = f"set_config('{TENANT_SETTING}', %s, false), set_config('{ALL_TENANTS_SETTING}', %s, false)"

type Context = tuple[str, str]  # (tenant id or '', 'on' / 'off')
NO_TENANT: Context = ("", "off")
ALL_TENANTS: Context = ("", "on")


# What this thread's work wants. Celery closes database connections around every task and Django replaces broken
# ones, so the wish is kept here and applied to every new connection as it opens (`_apply_on_connect`).
_wanted: ContextVar[Context] = ContextVar("plg_db_context", default=NO_TENANT)


def current() -> Context:
    return _wanted.get()


def swap(context: Context) -> Context:
    """Set this thread's context (now on an open connection, else when one opens); return the one it replaces."""
    previous = _wanted.get()
    _set(context)
    return previous


def _set(context: Context) -> None:
    _wanted.set(context)
    if connection.connection is not None:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {_SET}", list(context))


@receiver(connection_created)
def _apply_on_connect(sender: object, connection: BaseDatabaseWrapper, **_: object) -> None:
    context = _wanted.get()
    if connection.alias == DEFAULT_DB_ALIAS and context != NO_TENANT:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {_SET}", list(context))


ALL_TENANTS_SQL = f"SELECT set_config('{TENANT_SETTING}', '', false), set_config('{ALL_TENANTS_SETTING}', 'on', false)"


def enter_tenant_of_row_sql(column: str) -> str:
    """Select-list items that switch the connection to the tenant of the row being returned (for lookups that find
    the tenant: one round trip instead of three). The caller then records it with `mark`."""
    return f"set_config('{TENANT_SETTING}', {column}::text, false), set_config('{ALL_TENANTS_SETTING}', 'off', false)"


def mark(context: Context) -> None:
    """Record a context that a statement of the caller's already set on the connection."""
    _wanted.set(context)


def tenant_context(tenant_id: int) -> Context:
    return (str(int(tenant_id)), "off")


def tenant_enter(tenant_id: int) -> None:
    """From now on this connection's queries see only this tenant's rows (until another enter or a reset)."""
    _set(tenant_context(tenant_id))


def reset() -> None:
    _set(NO_TENANT)


def restore(context: Context) -> None:
    _set(context)


@contextmanager
def all_tenants() -> Iterator[None]:
    """Cross-tenant work inside a tenant's request or task (a user's memberships, a key lookup): every row is
    visible inside the block, and the caller's setting comes back after it."""
    previous = swap(ALL_TENANTS)
    try:
        yield
    finally:
        restore(previous)


@contextmanager
def tenant(tenant_id: int) -> Iterator[None]:
    """Work for one tenant, restoring the caller's setting afterwards."""
    previous = swap(tenant_context(tenant_id))
    try:
        yield
    finally:
        restore(previous)


def operator_command[F: Callable[..., Any]](handle: F) -> F:
    """For a management command's `handle`: the operator works across tenants."""

    @wraps(handle)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with all_tenants():
            return handle(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --- schema: the policies, and what the application role may do (applied after every migrate, as the owner) ---


def tenant_tables(db: BaseDatabaseWrapper) -> list[str]:
    """Every table of the schema with a tenant_id column: the tenant-owned tables, whoever declared them."""
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT c.table_name FROM information_schema.columns c JOIN information_schema.tables t"
            " USING (table_schema, table_name) WHERE c.table_schema = current_schema() AND c.column_name = 'tenant_id'"
            " AND t.table_type = 'BASE TABLE' ORDER BY 1"
        )
        return [row[0] for row in cursor.fetchall()]


def policies_apply(db: BaseDatabaseWrapper, *, app_role: str | None) -> list[str]:
    """Row-level security on every tenant table (idempotent), and the application role's grants. Returns the
    tables that got a policy just now."""
    quote = db.ops.quote_name
    created = []
    with db.cursor() as cursor:
        for table in tenant_tables(db):
            cursor.execute(
                "SELECT policyname FROM pg_policies WHERE schemaname = current_schema() AND tablename = %s "
                "AND policyname LIKE %s",
                [table, f"{POLICY_PREFIX}%"],
            )
            present = {row[0] for row in cursor.fetchall()}
            if POLICY_NAME not in present:
                # The new version first, then the older ones go: in between both apply (permissive policies are
                # OR'ed; they show the same rows), and at no moment has the table none.
                cursor.execute(
                    f"CREATE POLICY {POLICY_NAME} ON {quote(table)} USING ({POLICY_CONDITION})"
                    f" WITH CHECK ({POLICY_CONDITION})"
                )
                created.append(table)
            for older in sorted(present - {POLICY_NAME}):
                cursor.execute(f"DROP POLICY {quote(older)} ON {quote(table)}")
            cursor.execute(
                "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = %s::regclass", [table]
            )
            if not cursor.fetchone()[0]:  # ALTER TABLE locks the table: only when needed
                cursor.execute(f"ALTER TABLE {quote(table)} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY")
        if app_role:
            cursor.execute("SELECT current_user")
            if cursor.fetchone()[0] != app_role:
                role = quote(app_role)
                cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
                cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    return created
