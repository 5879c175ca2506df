"""Generate a realistic PLG tenant through the ingestion service layer, and write its hidden truth.

    manage.py generate_data --tenant acme --accounts 200 --seed 1 --days 120 [--end 2026-01-31T00:00:00Z]
                            [--truth PATH] [--create-tenant] [--events-per-user-day 4] [--users-scale 1]

The tenant must exist (`manage.py createtenant`) unless --create-tenant is given. History lies in the
D days before --end (default: now, UTC); the same seed and end give the same calls.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.models import Account
from plgapp.models import Tenant
from plgapp.rls import operator_command
from plgapp.services import tenant_create
from scoring.generator import EVENTS_PER_USER_DAY, USERS_SCALE, Counts, generate
from signals.calls import FUTURE_TOLERANCE, parse_datetime


def _end(raw: str | None) -> datetime:
    if raw is None:
        return timezone.now().astimezone(UTC).replace(microsecond=0)
    parsed = parse_datetime(raw)
    if parsed is None:
        raise CommandError(f"--end: {raw!r} is not an ISO-8601 date-time (e.g. 2026-01-31T12:00:00Z)")
    if parsed > timezone.now() + FUTURE_TOLERANCE:
        raise CommandError(f"--end: {raw} is more than a day in the future; the API would refuse such calls")
    return parsed.astimezone(UTC)


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="Slug of the tenant to fill")
        parser.add_argument("--accounts", type=int, default=200, help="Number of accounts (default 200)")
        parser.add_argument("--seed", type=int, default=1, help="Random seed: same seed and end, same data")
        parser.add_argument("--days", type=int, default=120, help="Days of history before --end (default 120)")
        parser.add_argument("--end", help="End of the history, ISO-8601 (default: now, UTC)")
        parser.add_argument(
            "--truth", help="Where to write the ground truth (default .local/generated/<slug>-truth.json)"
        )
        parser.add_argument("--create-tenant", action="store_true", help="Create the tenant if it does not exist")
        parser.add_argument(
            "--events-per-user-day", type=float, default=EVENTS_PER_USER_DAY,
            help=f"Mean events of an average user on an active weekday (default {EVENTS_PER_USER_DAY:g})",
        )  # fmt: skip
        parser.add_argument(
            "--users-scale", type=float, default=USERS_SCALE,
            help=f"Multiplies the users per account (default {USERS_SCALE:g})",
        )  # fmt: skip

    @operator_command
    def handle(self, *args: Any, **options: Any) -> None:
        slug: str = options["tenant"]
        if options["accounts"] < 1 or options["days"] < 1:
            raise CommandError("--accounts and --days must be at least 1")
        if options["events_per_user_day"] < 0 or options["users_scale"] <= 0:
            raise CommandError("--events-per-user-day must be >= 0 and --users-scale > 0")
        end = _end(options["end"])
        tenant = self._tenant(slug, create=options["create_tenant"])
        if Account.objects.for_tenant(tenant).exists():
            self.stderr.write(f"{slug} already has accounts: the generated ones are added (or updated) among them.")
        truth_path = Path(options["truth"] or settings.BASE_DIR / ".local" / "generated" / f"{slug}-truth.json")

        def progress(counts: Counts) -> None:
            if options["verbosity"] >= 2:
                self.stderr.write(f"  {counts.calls:,} calls, {counts.events:,} events", ending="\r")

        truth = generate(
            tenant, accounts=options["accounts"], seed=options["seed"], days=options["days"], end=end,
            events_per_user_day=options["events_per_user_day"], users_scale=options["users_scale"], progress=progress,
        )  # fmt: skip
        truth.write(truth_path)
        counts, seconds = truth.counts, max(truth.seconds, 1e-9)
        self.stdout.write(
            f"Generated {slug}: {counts.accounts:,} accounts, {counts.users:,} users, {counts.memberships:,} "
            f"memberships, {counts.events:,} events from {(end - timedelta(days=options['days'])):%Y-%m-%d} to "
            f"{end:%Y-%m-%d} in {seconds:.1f} s ({counts.events / seconds:,.0f} events/s); truth: {truth_path}"
        )

    def _tenant(self, slug: str, *, create: bool) -> Tenant:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is not None:
            return tenant
        if not create:
            raise CommandError(f"No tenant {slug!r}: create it with `manage.py createtenant`, or pass --create-tenant")
        try:
            tenant = tenant_create(name=f"{slug} (generated)", slug=slug)
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
            ) from exc
        self.stderr.write(
            f"Created tenant {slug} without logins or keys (for a tenant you can sign in to, run "
            "`manage.py createtenant` first)."
        )
        return tenant
