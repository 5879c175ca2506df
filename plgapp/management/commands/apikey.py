"""Manage a tenant's API keys: create (prints the key once), revoke, list."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from plgapp.keys import KeyKind
from plgapp.models import ApiKey, Tenant
from plgapp.rls import operator_command
from plgapp.selectors import api_keys_list
from plgapp.serializers import ApiKeyOutputSerializer
from plgapp.services import api_key_create, api_key_revoke


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Create a key and print it once")
        create.add_argument("--tenant", required=True, help="Tenant slug")
        create.add_argument("--kind", required=True, choices=[kind.value for kind in KeyKind])
        create.add_argument("--name", required=True, help="Where the key is used")
        create.add_argument("--json", action="store_true", help="Print the key record (with the key) as JSON")
        revoke = actions.add_parser("revoke", help="Revoke a key by id or by its shown prefix")
        revoke.add_argument("--tenant", required=True, help="Tenant slug")
        revoke.add_argument("key", help="Key id (uuid) or prefix such as plg_sk_AbCd1234")
        listing = actions.add_parser("list", help="List keys (prefixes only)")
        listing.add_argument("--tenant", required=True, help="Tenant slug")
        listing.add_argument("--json", action="store_true")

    @operator_command
    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant with slug {options['tenant']!r}.")
        getattr(self, f"_{options['action']}")(tenant, options)

    def _create(self, tenant: Tenant, options: dict[str, Any]) -> None:
        try:
            created = api_key_create(tenant=tenant, kind=options["kind"], name=options["name"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(ApiKeyOutputSerializer(created.api_key).data | {"key": created.raw_key}))
            return
        self.stderr.write(f"Created {created.api_key.kind} key {created.api_key.name!r} (id {created.api_key.pk}).")
        self.stderr.write("It is shown once and stored only as a hash:")
        self.stdout.write(created.raw_key)

    def _revoke(self, tenant: Tenant, options: dict[str, Any]) -> None:
        reference = options["key"].rstrip("…").rstrip(".")
        keys = ApiKey.objects.for_tenant(tenant)
        try:
            matches = list(keys.filter(pk=uuid.UUID(reference)))
        except ValueError:
            matches = list(keys.filter(prefix__startswith=reference)) if len(reference) >= 8 else []
        if not matches:
            raise CommandError(f"No key {reference!r} in tenant {tenant.slug}.")
        if len(matches) > 1:
            raise CommandError(f"{reference!r} matches {len(matches)} keys; use the key id.")
        revoked = api_key_revoke(tenant=tenant, key_id=matches[0].pk)
        self.stdout.write(
            f"Revoked {revoked.name!r} ({revoked.prefix}…) at {revoked.revoked_at:%Y-%m-%d %H:%M:%S} UTC."
        )

    def _list(self, tenant: Tenant, options: dict[str, Any]) -> None:
        keys = list(api_keys_list(tenant=tenant))
        if options["json"]:
            self.stdout.write(json.dumps(ApiKeyOutputSerializer(keys, many=True).data))
            return
        for key in keys:
            status = "active" if key.is_active else f"revoked {key.revoked_at:%Y-%m-%d}"
            used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
            self.stdout.write(f"{key.pk}  {key.kind:<6}  {key.prefix}…  {status:<18}  last used {used:<16}  {key.name}")
