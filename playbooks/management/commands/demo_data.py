"""Fill the demo tenant for `make demo` (idempotent: each step is skipped when already done).

    manage.py demo_data [--tenant demo] [--accounts 2000] [--days 90] [--seed 7]

1. generate accounts, users (with roles), 90 days of events through the ingestion service layer, and give each
   account an owner (one of the demo's sales reps);
2. process them (rollups, rule-based scores), train the conversion, churn and health models, rescore everything;
3. connect sandbox Slack and HubSpot and activate the seed's Trial PQA playbook on them, so a worker enrolls the
   qualifying trials and the sandbox outbox fills.
"""

from __future__ import annotations

import time
from datetime import UTC
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.models import Account
from integrations.models import Connection, ConnectionMode, Provider
from integrations.pickers import SANDBOX
from integrations.services import connection_create, connection_test
from playbooks.models import Playbook, PlaybookStatus
from playbooks.services import playbook_create, playbook_transition
from plgapp.models import Tenant
from plgapp.rls import operator_command
from scoring.models import ModelStatus, ModelVersion
from scoring.services import LEARNED_KINDS, model_train, model_version_start, scores_refresh_all
from signals.calls import AccountRef, UpsertAccount, parse_properties
from signals.processing import dirty_entities_process
from signals.services import calls_ingest

DEMO_OWNERS = ("sales@demo.local", "riley@demo.local", "sam@demo.local")
PLAYBOOK_NAME = "Trial PQA"


def trial_pqa(channel: str, list_id: str) -> dict[str, Any]:
    """The canonical playbook of DESIGN §1 on the sandbox connections."""
    return {
        "object": "account",
        "entry": {"all": [{"field": "account.stage", "op": "eq", "value": "Trial"},
                          {"field": "account.score.conversion", "op": "gt", "value": 0.75}]},
        "actions": [
            {"id": "notify", "type": "slack.send_message", "params": {
                "channel": channel, "color": "good",
                "text": "Promising trial: {{ account.name }} converts at {{ account.score.conversion | percent }} "
                        "({{ account.reasons.conversion | reasons }})"}},
            {"id": "add-pqls", "type": "hubspot.add_to_list", "target": "users",
             "users_where": {"all": [{"field": "user.score.health", "op": "gt", "value": 0.5},
                                     {"field": "membership.role", "op": "in", "value": ["Admin", "Owner"]}]},
             "params": {"list_id": list_id}},
        ],
        "goal": {"field": "account.stage", "op": "in", "value": ["Customer", "Standard", "Pro", "Enterprise"]},
        "timeout": {"days": 21},
        "on_goal": [
            {"id": "cleanup", "type": "hubspot.remove_from_list", "target": "users_from:add-pqls",
             "params": {"list_id": list_id}},
            {"id": "celebrate", "type": "slack.send_message",
             "params": {"channel": channel, "color": "#2EB67D", "text": "New customer: {{ account.name }}"}},
        ],
        "on_timeout": [{"id": "follow-up", "type": "hubspot.create_task", "params": {
            "subject": "Follow up on {{ account.name }}", "owner_email": "{{ account.properties.owner_email }}",
            "body": "Trial PQA did not convert within 21 days. Conversion {{ account.score.conversion | percent }}."}}],
    }  # fmt: skip


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", default="demo")
        parser.add_argument("--accounts", type=int, default=2000)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--users-scale", type=float, default=1.6, help="~5 users per account at 1.6")
        parser.add_argument("--events-per-user-day", type=float, default=2.0,
                            help="half the generator default: ~0.6 M events, about a minute")  # fmt: skip

    @operator_command
    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {options['tenant']!r}: run `manage.py demo_setup` first")
        began = time.monotonic()
        if not Account.objects.for_tenant(tenant).exists():
            self._generate(tenant, options)
        self._process(tenant)
        self._train(tenant)
        self._playbook(tenant)
        self.stdout.write(f"  Demo data ready in {time.monotonic() - began:.0f} s")

    def _step(self, message: str) -> None:
        self.stdout.write(f"  {message}…")
        self.stdout.flush()

    def _generate(self, tenant: Tenant, options: dict[str, Any]) -> None:
        self._step(f"generating {options['accounts']:,} accounts and {options['days']} days of product usage")
        call_command("generate_data", tenant=tenant.slug, accounts=options["accounts"], days=options["days"],
                     seed=options["seed"], users_scale=options["users_scale"],
                     events_per_user_day=options["events_per_user_day"], stdout=self.stdout)  # fmt: skip
        now = timezone.now()
        ids = Account.objects.for_tenant(tenant).order_by("pk").values_list("external_id", flat=True)
        calls = [
            (n, UpsertAccount(account=AccountRef(external_id=external_id), at=now.astimezone(UTC),
                              properties=parse_properties({"owner_email": DEMO_OWNERS[n % len(DEMO_OWNERS)]}, "p")))
            for n, external_id in enumerate(ids)
        ]  # fmt: skip
        for start in range(0, len(calls), 500):
            calls_ingest(tenant=tenant, calls=calls[start : start + 500], now=now)

    def _process(self, tenant: Tenant) -> None:
        self._step("processing: daily rollups and first (rule-based) scores")
        while dirty_entities_process(tenant_id=tenant.pk):
            pass

    def _train(self, tenant: Tenant) -> None:
        versions = ModelVersion.objects.for_tenant(tenant)
        for kind in LEARNED_KINDS:
            if versions.filter(kind=kind, status__in=[ModelStatus.ACTIVE, ModelStatus.REJECTED]).exists():
                continue  # trained before (a rejected model leaves the rule-based scores in charge)
            self._step(f"training the {kind} model")
            version = model_version_start(tenant=tenant, kind=kind, now=timezone.now())
            trained = model_train(tenant=tenant, version_id=version.pk, now=timezone.now())
            auc = (trained.metrics or {}).get("auc")
            self.stdout.write(f"    {kind}: {trained.status}" + (f", AUC {auc:.3f}" if auc is not None else ""))
        self._step("scoring every account, user and membership")
        scores_refresh_all(tenant=tenant, now=timezone.now())

    def _playbook(self, tenant: Tenant) -> None:
        connections = Connection.objects.for_tenant(tenant).filter(mode=ConnectionMode.SANDBOX)
        for provider, name in ((Provider.SLACK, "Sandbox Slack"), (Provider.HUBSPOT, "Sandbox HubSpot")):
            if not connections.filter(provider=provider).exists():
                made = connection_create(tenant=tenant, provider=provider, name=name, mode=ConnectionMode.SANDBOX,
                                         credentials={}, settings={}, now=timezone.now())  # fmt: skip
                connection_test(tenant=tenant, connection_id=made.pk, now=timezone.now())
        if Playbook.objects.for_tenant(tenant).filter(name=PLAYBOOK_NAME).exists():
            return
        self._step("activating the Trial PQA playbook on the sandbox connections")
        channel = "#" + SANDBOX["channels"][0]["name"]
        definition = trial_pqa(channel, SANDBOX["lists"][0]["id"])
        playbook = playbook_create(tenant=tenant, name=PLAYBOOK_NAME, definition=definition, created_by=None,
                                   now=timezone.now())  # fmt: skip
        playbook_transition(tenant=tenant, playbook_id=playbook.pk, action="activate", now=timezone.now())
        active = Playbook.objects.for_tenant(tenant).filter(status=PlaybookStatus.ACTIVE).count()
        self.stdout.write(f"    {active} active playbook(s); the worker enrolls the qualifying trials")
