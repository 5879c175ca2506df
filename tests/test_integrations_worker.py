"""The seed's Trial PQA playbook on the real stack (issue 6): a real Celery worker drives the official SDKs
against the fake Slack and HubSpot — a coloured Slack message per PQA, the HubSpot list gets exactly the
healthy Admin/Owner users of that account, conversion removes exactly them and announces the new customer,
a timeout creates one task for the owner associated with the company — each exactly once."""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import Account, DirtyEntity
from integrations.models import Connection, ConnectionStatus
from integrations.services import connection_create
from playbooks.models import DUE_STATUSES, ActionRun, RunStatus
from playbooks.services import playbook_create, playbook_transition
from signals.calls import AccountRef, AddUsers, MemberChange, UpsertAccount, UserRef, parse_properties
from signals.services import calls_ingest
from signals.tasks import dirty_entities_sweep
from tests.conftest import TenantWorld
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.slack import FakeSlack
from tests.test_playbook_engine import account_id, score, stage
from tests.test_playbook_engine import pqa_world as pqa_world
from tests.test_playbook_worker import settle, start_worker, wait_for
from tests.workers import Worker

OWNER = "owner@vendor.test"


def seed(list_id: str) -> dict[str, Any]:
    return {
        "object": "account",
        "entry": {"all": [{"field": "account.stage", "op": "eq", "value": "Trial"},
                          {"field": "account.score.conversion", "op": "gt", "value": 0.75}]},
        "actions": [
            {"id": "notify", "type": "slack.send_message", "params": {
                "channel": "#sales", "color": "good",
                "text": "{{ account.name }} is a PQA ({{ account.score.conversion | percent }})"}},
            {"id": "add-pqls", "type": "hubspot.add_to_list", "target": "users",
             "users_where": {"all": [{"field": "user.score.health", "op": "gt", "value": 0.5},
                                     {"field": "membership.role", "op": "in", "value": ["Admin", "Owner"]}]},
             "params": {"list_id": list_id}},
        ],
        "goal": {"field": "account.stage", "op": "eq", "value": "Customer"},
        "timeout": {"days": 21},
        "on_goal": [
            {"id": "cleanup", "type": "hubspot.remove_from_list", "target": "users_from:add-pqls",
             "params": {"list_id": list_id}},
            {"id": "celebrate", "type": "slack.send_message", "params": {
                "channel": "#sales", "color": "#2EB67D", "text": "New customer: {{ account.name }}"}},
        ],
        "on_timeout": [{"id": "task", "type": "hubspot.create_task", "params": {
            "subject": "Call {{ account.name }}", "owner_email": OWNER}}],
    }  # fmt: skip


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSlack, FakeHubSpot]]:
    with FakeSlack() as slack, FakeHubSpot() as hubspot:
        yield slack, hubspot


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_seed_playbook_drives_slack_and_hubspot_exactly_once_through_a_real_worker(
    pqa_world: TenantWorld, fakes: tuple[FakeSlack, FakeHubSpot], settings: Any
) -> None:
    world, (slack, hubspot) = pqa_world, fakes
    settings.SLACK_API_URL, settings.HUBSPOT_API_URL = slack.url + "/api/", hubspot.url  # run_sweeps runs here
    team = slack.add_workspace("Acme Corp").team_id
    sales = slack.add_channel(team, "sales").id
    portal = hubspot.add_portal().portal_id
    hubspot.add_owner(portal, OWNER)
    pqls = hubspot.add_list(portal, "PQLs").list_id
    now = timezone.now()
    connection_create(tenant=world.tenant, provider="slack", name="Slack", mode="live", settings={}, now=now,
                      credentials={"bot_token": slack.issue_bot_token(team)})  # fmt: skip
    connection_create(tenant=world.tenant, provider="hubspot", name="CRM", mode="live", settings={}, now=now,
                      credentials={"access_token": hubspot.issue_token(portal)})  # fmt: skip
    Account.objects.for_tenant(world.tenant).filter(external_id="beta").update(domain="beta.test")
    worker = start_worker("integrations", SLACK_API_URL=slack.url + "/api/",
                                                   HUBSPOT_API_URL=hubspot.url)  # fmt: skip
    try:
        settle(world)
        playbook = playbook_create(tenant=world.tenant, name="Trial PQA", definition=seed(pqls), created_by=None,
                                   now=timezone.now())  # fmt: skip
        playbook_transition(tenant=world.tenant, playbook_id=playbook.pk, action="activate", now=timezone.now())

        def members() -> list[str]:
            emails = {obj.id: obj.value("email") for obj in hubspot.objects(portal, "contacts")}
            return sorted(str(emails[m]) for m in hubspot.list_members(portal, pqls))

        wait_for(lambda: len(slack.messages(sales)) == 1 and members() == ["alice@acme.test"])
        (message,) = slack.messages(sales)
        assert (message.text, message.colors) == ("Acme is a PQA (90%)", ["good"])

        stage(world, "acme", "Customer", timezone.now())
        wait_for(lambda: members() == [] and len(slack.messages(sales)) == 2)
        assert slack.messages(sales)[1].text == "New customer: Acme"
        assert slack.messages(sales)[1].colors == ["#2EB67D"]

        score(world, "conversion", "account", account_id(world, "beta"), 0.8)
        from playbooks.tasks import playbook_evaluate_task

        playbook_evaluate_task.apply_async(args=(world.tenant.pk, playbook.pk))
        wait_for(lambda: members() == ["bob@acme.test"] and len(slack.messages(sales)) == 3)
        later = timezone.now() + timedelta(days=21, minutes=5)
        for _ in range(2):  # replaying the same instant changes nothing the second time
            call_command("run_sweeps", "--now", later.isoformat(), "--tenant", world.tenant.slug, stdout=io.StringIO())
        runs = ActionRun.objects.for_tenant(world.tenant)
        wait_for(lambda: len(hubspot.objects(portal, "tasks")) == 1
                 and not runs.exclude(status=RunStatus.SUCCEEDED).exists())  # fmt: skip
    finally:
        print(worker.stop()[-5000:])

    (task,) = hubspot.objects(portal, "tasks")
    assert task.value("hs_task_subject") == "Call Beta"
    (company,) = hubspot.objects(portal, "companies")
    assert company.value("domain") == "beta.test"
    assert {(link[1], link[2].label) for link in task.associations} >= {(company.id, "task_to_company")}
    assert len(slack.messages(sales)) == 3  # acme PQA, acme customer, beta PQA: nothing twice
    slack.assert_retry_after_respected()


def trial_accounts(world: TenantWorld, count: int) -> None:
    """`count` trial accounts ("Trial 00"…), each with an Owner, scored as PQAs and settled."""
    at = timezone.now() - timedelta(days=2)
    calls: list[Any] = []
    for n in range(count):
        account = AccountRef(external_id=f"t{n}")
        properties = parse_properties({"stage": "Trial", "name": f"Trial {n:02d}"}, "p")
        calls.append(UpsertAccount(account=account, at=at, properties=properties))
        member = MemberChange(user=UserRef(email=f"o{n}@t.test"), properties=parse_properties({"role": "Owner"}, "p"))
        calls.append(AddUsers(account=account, at=at, users=(member,)))
    calls_ingest(tenant=world.tenant, calls=list(enumerate(calls)), now=timezone.now())
    dirty_entities_sweep.apply_async()
    wait_for(lambda: not DirtyEntity.objects.for_tenant(world.tenant).exists())
    for pk in Account.objects.for_tenant(world.tenant).values_list("pk", flat=True):
        score(world, "conversion", "account", pk, 0.9)


def notify_playbook(world: TenantWorld, channel: str) -> None:
    """Active: a Slack message to `channel` for every PQA."""
    notify = {"id": "notify", "type": "slack.send_message",
              "params": {"channel": channel, "text": "{{ account.name }} is a PQA"}}  # fmt: skip
    entry = {"field": "account.score.conversion", "op": "gt", "value": 0.75}
    definition = {"object": "account", "entry": entry, "actions": [notify]}
    playbook = playbook_create(tenant=world.tenant, name="PQA alert", definition=definition, created_by=None,
                               now=timezone.now())  # fmt: skip
    playbook_transition(tenant=world.tenant, playbook_id=playbook.pk, action="activate", now=timezone.now())


def slack_connection(world: TenantWorld, slack: FakeSlack, team: str) -> str:
    token = slack.issue_bot_token(team)
    connection_create(tenant=world.tenant, provider="slack", name="Slack", mode="live", settings={},
                      now=timezone.now(), credentials={"bot_token": token})  # fmt: skip
    return token


@pytest.fixture
def storm_slack(settings: Any) -> Iterator[FakeSlack]:
    with FakeSlack(seed=7) as slack:
        settings.SLACK_API_URL = slack.url + "/api/"
        yield slack


@pytest.fixture
def storm_worker(storm_slack: FakeSlack) -> Iterator[Worker]:
    worker = start_worker("storm", SLACK_API_URL=storm_slack.url + "/api/", PLAYBOOK_BACKOFF_BASE_SECONDS="0.5")
    yield worker
    print(worker.stop()[-3000:])


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_429_and_5xx_storm_loses_nothing_duplicates_nothing_and_keeps_slacks_limits(
    tenant_a: TenantWorld, storm_slack: FakeSlack, storm_worker: Worker
) -> None:
    world, slack, count = tenant_a, storm_slack, 8
    team = slack.add_workspace("Acme").team_id
    sales = slack.add_channel(team, "sales").id
    slack_connection(world, slack, team)
    trial_accounts(world, count)
    slack.set_faults(rate_limit_fraction=0.5, retry_after=1, server_error_fraction=0.2, path="/api/chat.postMessage")
    notify_playbook(world, "#sales")

    runs = ActionRun.objects.for_tenant(world.tenant)
    try:  # 70% of the calls fail, and the channel takes one a second: about 30 s
        wait_for(lambda: runs.count() == count and not runs.exclude(status=RunStatus.SUCCEEDED).exists(), 150)
    finally:
        print(list(runs.values_list("pk", "status", "attempts", "error")))
        print([(r.fault, round(r.monotonic, 2)) for r in slack.requests(path="/api/chat.postMessage")])
    posted = slack.messages(sales)
    assert sorted(str(m.text) for m in posted) == sorted(f"Trial {n:02d} is a PQA" for n in range(count))
    faults = [r.fault for r in slack.requests(path="/api/chat.postMessage")]
    assert faults.count("rate_limit") > 0
    assert faults.count("server_error") > 0
    slack.assert_retry_after_respected()  # no request before its Retry-After
    times = sorted(float(m.ts) for m in posted)
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.9  # ≤ 1 message/s in the channel


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_expired_token_marks_the_connection_broken_and_stops_the_retries(
    tenant_a: TenantWorld, storm_slack: FakeSlack, storm_worker: Worker
) -> None:
    world, slack = tenant_a, storm_slack
    team = slack.add_workspace("Acme").team_id
    sales = slack.add_channel(team, "sales").id
    token = slack_connection(world, slack, team)
    trial_accounts(world, 6)
    slack.set_faults(rate_limit_fraction=0.5, retry_after=1, path="/api/chat.postMessage")
    notify_playbook(world, "#sales")
    wait_for(lambda: len(slack.messages(sales)) >= 1)
    slack.expire_token(token)

    runs = ActionRun.objects.for_tenant(world.tenant)
    wait_for(lambda: runs.count() == 6 and not runs.filter(status__in=(*DUE_STATUSES, RunStatus.SENDING)).exists())
    connection = Connection.objects.for_tenant(world.tenant).get()
    assert connection.status == ConnectionStatus.BROKEN
    assert "token_expired" in connection.last_error
    dead = runs.filter(status=RunStatus.DEAD)
    assert dead.exists()
    assert all("Broken" in run.error for run in dead)
    assert runs.filter(status=RunStatus.SUCCEEDED).count() == len(slack.messages(sales))
    calls_after_expiry = len(slack.requests(path="/api/chat.postMessage"))
    time.sleep(3)  # backoffs of 0.5-2 s would have fired by now
    assert len(slack.requests(path="/api/chat.postMessage")) == calls_after_expiry  # no more calls: retries stopped


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_another_tenants_actions_are_not_delayed_by_the_first_tenants_backlog(
    tenant_a: TenantWorld, tenant_b: TenantWorld, storm_slack: FakeSlack, storm_worker: Worker
) -> None:
    slack, backlog = storm_slack, 150
    team_a, team_b = slack.add_workspace("Acme").team_id, slack.add_workspace("Beta").team_id
    slack.add_channel(team_a, "sales")
    news = slack.add_channel(team_b, "news").id
    slack_connection(tenant_a, slack, team_a)
    slack_connection(tenant_b, slack, team_b)
    trial_accounts(tenant_a, backlog)
    trial_accounts(tenant_b, 1)
    # Tenant A: a backlog of 150 messages for one channel (1/s) under a 429 storm.
    slack.set_faults(rate_limit_fraction=0.5, retry_after=1, path="/api/chat.postMessage", client_key=f"{team_a}/*")
    notify_playbook(tenant_a, "#sales")
    runs_a = ActionRun.objects.for_tenant(tenant_a.tenant)
    wait_for(lambda: runs_a.count() == backlog and runs_a.exclude(status=RunStatus.PENDING).count() > 20)

    started = time.monotonic()
    notify_playbook(tenant_b, "#news")
    wait_for(lambda: len(slack.messages(news)) == 1)
    waited = time.monotonic() - started
    pending_a = runs_a.exclude(status=RunStatus.SUCCEEDED).count()
    assert pending_a > backlog / 2, "tenant A's backlog was still there"
    assert waited < 5, f"tenant B's message waited {waited:.1f} s behind tenant A's backlog"
