"""`manage.py check --deploy`: the database role the application connects as must be subject to row-level
security (docs/adr/0013-row-level-security.md)."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Warning, register
from django.db import DatabaseError, connection


@register(deploy=True)
def database_role_is_subject_to_row_level_security(**_: Any) -> list[CheckMessage]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            row = cursor.fetchone()
    except DatabaseError:
        return []  # the database check is another check's business
    return role_warnings(*row) if row else []


def role_warnings(role: str, superuser: bool, bypasses_rls: bool) -> list[CheckMessage]:
    if not (superuser or bypasses_rls):
        return []
    return [
        Warning(
            f"The application connects to PostgreSQL as {role!r}, which bypasses row-level security: the second "
            "wall between tenants is down.",
            hint="Connect as a role without SUPERUSER / BYPASSRLS that does not own the tables (DATABASE_URL), and "
            "run migrations as the owner (DATABASE_OWNER_URL).",
            id="plgapp.W001",
        )
    ]
