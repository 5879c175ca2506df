"""Run the periodic playbook passes once (deadlines, entry and goal sweeps, waiting runs, expired leases,
due action runs), optionally as of a given instant — for operators replaying a period and for tests."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from playbooks.services import due_runs, run_execute, sweep
from plgapp.models import Tenant
from plgapp.rls import operator_command


class Command(BaseCommand):
    help = "Run the playbook sweeps once for every tenant (or --tenant), as of now or --now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--now", help="ISO-8601 instant to run as of (default: now)")
        parser.add_argument("--tenant", help="Only this tenant (slug)")
        parser.add_argument("--no-send", action="store_true", help="Do not execute due action runs")

    @operator_command
    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        if options["now"]:
            try:
                now = datetime.fromisoformat(options["now"].replace("Z", "+00:00"))
            except ValueError:
                raise CommandError(f"--now is an ISO-8601 instant, not {options['now']!r}") from None
            if now.tzinfo is None:
                raise CommandError("--now needs a time zone (e.g. 2026-12-01T09:00:00Z)")
        tenants = Tenant.objects.order_by("pk")
        if options["tenant"]:
            tenants = tenants.filter(slug=options["tenant"])
            if not tenants.exists():
                raise CommandError(f"no tenant {options['tenant']!r}")
        for tenant in tenants:
            figures: dict[str, Any] = sweep(tenant=tenant, now=now)
            if not options["no_send"]:
                outcomes: dict[str, int] = {}
                for run_id in due_runs(tenant=tenant, now=now):
                    outcome = run_execute(tenant=tenant, run_id=run_id, now=now) or "not due"
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                figures["runs"] = outcomes
            self.stdout.write(json.dumps({"tenant": tenant.slug, "now": now.isoformat(), **figures}))
