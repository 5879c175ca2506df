"""`migrate` as the schema's owner (DATABASE_OWNER_URL), then row-level security on every tenant table and the
application role's grants (plgapp/rls.py). The application itself never connects as the owner."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.management.commands import migrate
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from plgapp import rls

_CREDENTIALS = ("USER", "PASSWORD", "HOST", "PORT")


@contextmanager
def as_owner(db: BaseDatabaseWrapper) -> Iterator[None]:
    """Connect as the owner for the block (same database name: a test database stays the test database)."""
    saved = {key: db.settings_dict.get(key) for key in _CREDENTIALS}
    owner = {key: settings.DATABASE_OWNER.get(key) for key in _CREDENTIALS}
    if owner == saved:
        yield
        return
    db.close()
    db.settings_dict.update(owner)
    try:
        yield
    finally:
        db.close()
        db.settings_dict.update(saved)


class Command(migrate.Command):
    help = migrate.Command.help + " Connects as DATABASE_OWNER_URL; applies the row-level security policies."

    def handle(self, *args: Any, **options: Any) -> None:
        db = connections[options["database"]]
        with as_owner(db), rls.all_tenants():  # data migrations work across tenants
            super().handle(*args, **options)
            created = rls.policies_apply(db, app_role=settings.DATABASE_APP_ROLE)
        if created and options["verbosity"] >= 1:
            self.stdout.write(f"Row-level security: policy added on {len(created)} tenant tables.")
