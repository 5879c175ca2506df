"""HubSpot actions (issue 6) driven by the engine against the fake HubSpot through `hubspot-api-client`: the
seed's Trial PQA list gets exactly the healthy Admin/Owner users of the account (created as contacts when
missing) and loses exactly them on conversion; a timed-out account gets one task for its owner, associated
with its company (created by domain) and the users involved — also when the first attempt's answer is lost;
a DYNAMIC list refuses with HubSpot's message."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings

from accounts.models import Account
from integrations.services import connection_create
from playbooks.models import ActionRun, RunStatus
from playbooks.services import deadlines_process, playbook_evaluate
from tests.conftest import TenantWorld
from tests.fakes.hubspot import FakeHubSpot
from tests.test_playbook_engine import T0, account_id, active_playbook, deliver, score, stage
from tests.test_playbook_engine import pqa_world as pqa_world

OWNER = "owner@vendor.test"


@pytest.fixture(autouse=True)
def no_leftover_limits() -> None:
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    for key in client.scan_iter("plg:limits:*"):
        client.delete(key)


@pytest.fixture
def hubspot(settings: Any, pqa_world: TenantWorld) -> Iterator[tuple[FakeHubSpot, int, str]]:
    """The fake HubSpot with a portal, an owner, a MANUAL list, and the tenant connected: (fake, portal, list)."""
    with FakeHubSpot() as fake:
        settings.HUBSPOT_API_URL = fake.url
        portal = fake.add_portal().portal_id
        fake.add_owner(portal, OWNER, "Olive", "Owner")
        pqls = fake.add_list(portal, "PQLs").list_id
        connection_create(tenant=pqa_world.tenant, provider="hubspot", name="CRM", mode="live", settings={}, now=T0,
                          credentials={"access_token": fake.issue_token(portal)})  # fmt: skip
        yield fake, portal, pqls


def playbook(list_id: str) -> dict[str, Any]:
    return {
        "object": "account",
        "entry": {"all": [{"field": "account.stage", "op": "eq", "value": "Trial"},
                          {"field": "account.score.conversion", "op": "gt", "value": 0.75}]},
        "actions": [{"id": "add-pqls", "type": "hubspot.add_to_list", "target": "users",
                     "users_where": {"all": [{"field": "user.score.health", "op": "gt", "value": 0.5},
                                             {"field": "membership.role", "op": "in", "value": ["Admin", "Owner"]}]},
                     "params": {"list_id": list_id}}],
        "goal": {"field": "account.stage", "op": "eq", "value": "Customer"},
        "timeout": {"days": 21},
        "on_goal": [{"id": "cleanup", "type": "hubspot.remove_from_list", "target": "users_from:add-pqls",
                     "params": {"list_id": list_id}}],
        "on_timeout": [{"id": "task", "type": "hubspot.create_task", "params": {
            "subject": "Call {{ account.name }}", "body": "Trial ended at {{ account.score.conversion | percent }}",
            "owner_email": OWNER, "due_in_days": 2, "priority": "HIGH"}}],
    }  # fmt: skip


def emails_in_list(fake: FakeHubSpot, portal: int, list_id: str) -> list[str]:
    by_id = {obj.id: obj.value("email") for obj in fake.objects(portal, "contacts")}
    return sorted(str(by_id[member]) for member in fake.list_members(portal, list_id))


@pytest.mark.django_db
def test_the_pqa_list_gets_exactly_the_right_users_and_loses_exactly_them_on_conversion(
    pqa_world: TenantWorld, hubspot: tuple[FakeHubSpot, int, str]
) -> None:
    fake, portal, pqls = hubspot
    fake.add_contact(portal, "carol@acme.test")  # known to HubSpot already, but unhealthy: not added
    playbook_id = active_playbook(pqa_world, playbook(pqls))
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=playbook_id, now=T0)

    assert deliver(pqa_world, T0) == [RunStatus.SUCCEEDED]
    # Owner or Admin *in acme* with health > 0.5: alice (created as a contact); not bob (Member here), not carol.
    assert emails_in_list(fake, portal, pqls) == ["alice@acme.test"]
    deliver(pqa_world, T0 + timedelta(minutes=5))  # nothing twice
    assert len(fake.requests(path=f"/crm/v3/lists/{pqls}/memberships/add")) == 1

    stage(pqa_world, "acme", "Customer", T0 + timedelta(days=2))
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=playbook_id, now=T0 + timedelta(days=2))
    assert deliver(pqa_world, T0 + timedelta(days=2)) == [RunStatus.SUCCEEDED]

    assert emails_in_list(fake, portal, pqls) == []
    assert [obj.value("email") for obj in fake.objects(portal, "contacts")].count("alice@acme.test") == 1


@pytest.mark.django_db
def test_a_timed_out_account_gets_one_task_for_its_owner_with_its_company_and_users_even_after_a_lost_answer(
    pqa_world: TenantWorld, hubspot: tuple[FakeHubSpot, int, str], settings: Any
) -> None:
    fake, portal, pqls = hubspot
    Account.objects.for_tenant(pqa_world.tenant).filter(external_id="beta").update(domain="beta.test")
    score(pqa_world, "conversion", "account", account_id(pqa_world, "beta"), 0.8)
    playbook_id = active_playbook(pqa_world, playbook(pqls))
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=playbook_id, now=T0)
    deliver(pqa_world, T0)  # alice into the list for acme, bob for beta (Owner there)
    stage(pqa_world, "acme", "Customer", T0 + timedelta(days=2))  # acme converts: no task for it

    at = T0 + timedelta(days=21, minutes=1)
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=playbook_id, now=T0 + timedelta(days=2))
    deadlines_process(tenant=pqa_world.tenant, now=at)
    settings.INTEGRATION_TIMEOUT_SECONDS = 1
    fake.fail_next("hang", path="/crm/v3/objects/tasks", seconds=2)  # created, but the answer never comes
    statuses = deliver(pqa_world, at)
    assert RunStatus.FAILED in statuses  # retried later, not dead: the next attempt checks first

    fake.wait_until_answered()  # HubSpot finished creating it meanwhile (a retry comes minutes later)
    deliver(pqa_world, at + timedelta(hours=1))

    (task,) = fake.objects(portal, "tasks")
    assert task.value("hs_task_subject") == "Call Beta"
    assert (task.value("hs_task_body") or "").startswith("Trial ended at 80%")
    assert task.value("hs_task_priority") == "HIGH"
    owner = next(iter(fake.portals[portal].owners.values()))
    assert task.value("hubspot_owner_id") == str(owner.id)
    (company,) = fake.objects(portal, "companies")
    assert company.value("domain") == "beta.test"
    bob = next(obj for obj in fake.objects(portal, "contacts") if obj.value("email") == "bob@acme.test")
    linked = {(link[1], link[2].label) for link in task.associations}
    assert linked == {(company.id, "task_to_company"), (bob.id, "task_to_contact")}
    run = ActionRun.objects.for_tenant(pqa_world.tenant).get(action_id="task")
    assert run.status == RunStatus.SUCCEEDED
    assert run.response.get("confirmed") is True


@pytest.mark.django_db
def test_a_dynamic_list_refuses_and_the_run_dies_with_hubspots_message(
    pqa_world: TenantWorld, hubspot: tuple[FakeHubSpot, int, str]
) -> None:
    fake, portal, _pqls = hubspot
    dynamic = fake.add_list(portal, "Everyone", processing_type="DYNAMIC").list_id
    playbook_id = active_playbook(pqa_world, playbook(dynamic))
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=playbook_id, now=T0)

    assert deliver(pqa_world, T0) == [RunStatus.DEAD]
    run = ActionRun.objects.for_tenant(pqa_world.tenant).get()
    assert "Permanent" in run.error
    assert "400" in run.error
