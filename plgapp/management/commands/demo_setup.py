"""Prepare the demo tenant and its admin login (idempotent) and print how to sign in.

The credentials live in a local, git-ignored file (.local/demo.json by default) so that every
`make demo` can print them again; the database itself only ever holds hashes.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from plgapp.keys import KeyKind
from plgapp.models import Tenant
from plgapp.rls import operator_command
from plgapp.roles import Role
from plgapp.selectors import api_key_find_active
from plgapp.services import api_key_create, tenant_create, tenant_member_set_role, user_get_or_create

DEMO_SLUG = "demo"
DEMO_EMAIL = "admin@demo.local"
# Same password for each, so a newcomer can try every role: marketers build playbooks, sales reps work the PQLs.
DEMO_TEAM = {"marketer@demo.local": Role.MARKETER, "sales@demo.local": Role.SALES}


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        default_file = Path(os.environ.get("PLG_LOCAL_DIR", settings.BASE_DIR / ".local")) / "demo.json"
        parser.add_argument("--credentials-file", type=Path, default=default_file)
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000", help="Where the demo is served (for the printout)"
        )

    @operator_command
    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["credentials_file"]
        saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        tenant = Tenant.objects.filter(slug=DEMO_SLUG).first() or tenant_create(name="Demo Inc.", slug=DEMO_SLUG)
        password = saved.get("password") or secrets.token_urlsafe(12)
        admin, _created = user_get_or_create(email=DEMO_EMAIL, password=password)
        if not admin.check_password(password):  # keep the login and the printed password in step
            admin.set_password(password)
            admin.save(update_fields=["password"])
        tenant_member_set_role(tenant=tenant, user=admin, role=Role.ADMIN)
        for email, role in DEMO_TEAM.items():
            member, _created = user_get_or_create(email=email, password=password)
            if not member.check_password(password):
                member.set_password(password)
                member.save(update_fields=["password"])
            tenant_member_set_role(tenant=tenant, user=member, role=role)
        keys = {}
        for kind in (KeyKind.WRITE, KeyKind.SECRET):
            raw = saved.get(f"{kind.value}_key")
            active = api_key_find_active(raw_key=raw) if raw else None
            if active is None or active.tenant_id != tenant.pk:
                raw = api_key_create(tenant=tenant, kind=kind, name=f"Demo {kind.value} key", created_by=admin).raw_key
            keys[f"{kind.value}_key"] = raw
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"email": DEMO_EMAIL, "password": password, **keys}, indent=2))
        path.chmod(0o600)
        url = options["url"].rstrip("/")
        team = ", ".join(f"{email} ({role.value})" for email, role in DEMO_TEAM.items())
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"  Demo is at   {url}/  (tenant {tenant.name}: {url}/t/{tenant.slug}/)",
                    f"  Sign in as   {DEMO_EMAIL} (admin), {team}",
                    f"  Password     {password} (all three)",
                    f"  Write key    {keys['write_key']}",
                    f"  Secret key   {keys['secret_key']}",
                    f"  API docs     {url}/api/docs/",
                    "",
                ]
            )
        )
