"""Create a tenant with its first admin login, a write key and a secret key; print the keys once."""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from plgapp.rls import operator_command
from plgapp.services import tenant_bootstrap


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help='Display name, e.g. "Acme Inc."')
        parser.add_argument("slug", help="URL name: lowercase letters, digits and hyphens, e.g. acme")
        parser.add_argument("--admin-email", required=True, help="Login of the tenant's first admin")
        parser.add_argument(
            "--admin-password",
            help="Password for a new admin login (default: $PLG_ADMIN_PASSWORD, else asked on a terminal; "
            "without either the login gets no password until `manage.py changepassword`)",
        )
        parser.add_argument("--json", action="store_true", help='Print only {"tenant", "write_key", "secret_key"}')

    @operator_command
    def handle(self, *args: Any, **options: Any) -> None:
        password = options["admin_password"] or os.environ.get("PLG_ADMIN_PASSWORD") or self._ask_password(options)
        try:
            result = tenant_bootstrap(
                name=options["name"],
                slug=options["slug"],
                admin_email=options["admin_email"],
                admin_password=password,
            )
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
            ) from exc
        if not result.admin_created:
            self.stderr.write(f"{result.admin.email} already had a login; it is now an admin of {result.tenant.slug}.")
        elif not password:
            self.stderr.write(
                f"{result.admin.email} has no password yet: run `manage.py changepassword {result.admin.email}`."
            )
        if options["json"]:
            payload = {
                "tenant": result.tenant.slug,
                "write_key": result.write_key.raw_key,
                "secret_key": result.secret_key.raw_key,
            }
            self.stdout.write(json.dumps(payload))
            return
        self.stdout.write(f"Created tenant {result.tenant.name!r} ({result.tenant.slug}); admin: {result.admin.email}")
        self.stdout.write("These keys are shown once and stored only as hashes; copy them now:")
        self.stdout.write(f"  write key  (ingestion)      : {result.write_key.raw_key}")
        self.stdout.write(f"  secret key (management API) : {result.secret_key.raw_key}")

    def _ask_password(self, options: dict[str, Any]) -> str | None:
        if options["json"] or not sys.stdin.isatty() or os.environ.get("CI"):
            return None
        while True:
            first = getpass.getpass(f"Password for {options['admin_email']}: ")
            if not first:
                return None
            if getpass.getpass("Again: ") == first:
                return first
            self.stderr.write("The passwords differ; try again (or press Enter to skip).")
