"""The visual playbook builder, driven as the browser does: each click or change posts the form, the server applies
it to the definition, validates against the catalogue, counts the matches and draws the builder again."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from integrations.services import connection_create
from playbooks import builder
from playbooks.models import Playbook
from plgapp.roles import Role
from tests.conftest import TenantWorld
from tests.test_playbook_engine import pqa_world as pqa_world


class Builder:
    """The builder form in a test: its hidden definition, and posts of values and structural edits."""

    def __init__(self, client: Client, world: TenantWorld) -> None:
        self.client, self.url = client, f"/t/{world.slug}/playbooks/builder/"
        self.definition: dict[str, Any] = builder.skeleton()
        self.html, self.name, self.playbook = "", "", ""

    def post(self, values: dict[str, str] | None = None, *, op: str | None = None, save: str | None = None,
             status: int = 200) -> str:  # fmt: skip
        data = {"definition": json.dumps(self.definition), "name": self.name, "playbook": self.playbook,
                **(values or {})}  # fmt: skip
        if op:
            data["op"] = op
        if save:
            data["save"] = save
        answer = self.client.post(self.url, data, headers={"HX-Request": "true"})
        assert answer.status_code == status, answer.content.decode()[:2000]
        if answer.status_code in (200, 400):
            self.html = answer.content.decode()
            found = re.search(r'name="definition" value="([^"]*)"', self.html)
            assert found
            self.definition = json.loads(html.unescape(found.group(1)))
        return self.html


def test_edits_apply_values_then_structure() -> None:
    definition = builder.edit(json.dumps(builder.skeleton()), [], "add-rule:entry/all")
    values = [("v:str:entry/all/0/field", "account.score.conversion"), ("v:str:entry/all/0/op", "gt"),
              ("v:num:entry/all/0/value", "0.75")]  # fmt: skip
    definition = builder.edit(json.dumps(definition), values, "add-group:entry/all")

    assert definition["entry"] == {"all": [{"field": "account.score.conversion", "op": "gt", "value": 0.75},
                                           {"any": []}]}  # fmt: skip
    definition = builder.edit(json.dumps(definition), [], "switch:entry")
    assert "any" in definition["entry"]
    definition = builder.edit(json.dumps(definition), [], "remove:entry/any/1")
    assert definition["entry"] == {"any": [{"field": "account.score.conversion", "op": "gt", "value": 0.75}]}
    assert builder.convert("list", "Admin, Owner ,") == ["Admin", "Owner"]
    assert builder.convert("num", "abc") == "abc"  # kept as typed: validation names it
    with pytest.raises(builder.EditInvalid):
        builder.edit(json.dumps(definition), [("v:str:entry/any/7/field", "x")], None)
    with pytest.raises(builder.EditInvalid):
        builder.edit(json.dumps(definition), [], "drop-table:entry")


@pytest.mark.django_db
def test_a_marketer_builds_the_trial_pqa_playbook_and_activates_it(
    pqa_world: TenantWorld, member_client: Callable[..., Client]
) -> None:
    world = pqa_world
    for provider in ("slack", "hubspot"):
        connection_create(tenant=world.tenant, provider=provider, name=provider, mode="sandbox", credentials={},
                          settings={}, now=timezone.now())  # fmt: skip
    marketer = member_client(world.tenant, Role.MARKETER)
    page = marketer.get(f"/t/{world.slug}/playbooks/new/")
    assert page.status_code == 200
    form = Builder(marketer, world)

    form.post(op="add-rule:entry/all")
    stage = {"v:str:entry/all/0/field": "account.stage", "v:str:entry/all/0/value": "Trial"}
    form.post(stage, op="add-rule:entry/all")
    text = form.post({"v:str:entry/all/1/field": "account.score.conversion", "v:str:entry/all/1/op": "gt",
                      "v:num:entry/all/1/value": "0.75"})  # fmt: skip
    assert re.search(r'data-testid="match-count"[^>]*>\s*<strong>1</strong> account match now: Acme', text)

    form.post(op="add-action:actions:slack.send_message")
    text = form.post({"v:optstr:actions/0/params/channel": "#sales",
                      "v:optstr:actions/0/params/text": "{{ account.name }} is a PQA"})  # fmt: skip
    assert "#sales" in text  # the sandbox's channels in the picker
    form.post(op="add-action:actions:hubspot.add_to_list")
    form.post({"v:optstr:actions/1/params/list_id": "9001"}, op="add-rule:actions/1/users_where/all")
    where = "actions/1/users_where/all"
    form.post({f"v:str:{where}/0/field": "user.score.health", f"v:str:{where}/0/op": "gt",
               f"v:num:{where}/0/value": "0.5"}, op=f"add-rule:{where}")  # fmt: skip
    form.post({f"v:str:{where}/1/field": "membership.role", f"v:str:{where}/1/op": "in",
               f"v:list:{where}/1/value": "Admin, Owner"})  # fmt: skip
    form.post(op="goal:on")
    form.post(op="add-rule:goal/all")
    form.post({"v:str:goal/all/0/field": "account.stage", "v:str:goal/all/0/value": "Customer"},
              op="add-action:on_goal:hubspot.remove_from_list")  # fmt: skip
    assert form.definition["on_goal"][0]["target"] == "users_from:add-to-list"
    form.post({"v:optstr:on_goal/0/params/list_id": "9001"}, op="add-action:on_timeout:hubspot.create_task")
    form.name = "Trial PQA"

    form.post(save="activate", status=204)

    playbook = Playbook.objects.for_tenant(world.tenant).get(name="Trial PQA")
    assert playbook.status == "active"
    stored = playbook.current_version.definition  # type: ignore[union-attr]
    assert stored["entry"]["all"][1] == {"field": "account.score.conversion", "op": "gt", "value": 0.75}
    assert stored["actions"][1]["users_where"]["all"][1] == {"field": "membership.role", "op": "in",
                                                            "value": ["Admin", "Owner"]}  # fmt: skip
    assert stored["timeout"] == {"days": 21}
    assert stored["on_timeout"][0]["type"] == "hubspot.create_task"


@pytest.mark.django_db
def test_invalid_conditions_and_unknown_template_names_are_shown_inline_and_nothing_is_saved(
    pqa_world: TenantWorld, member_client: Callable[..., Client]
) -> None:
    form = Builder(member_client(pqa_world.tenant, Role.MARKETER), pqa_world)
    form.post(op="add-rule:entry/all")
    text = form.post({"v:str:entry/all/0/field": "account.score.conversion", "v:str:entry/all/0/op": "gt",
                      "v:num:entry/all/0/value": "lots"})  # fmt: skip
    assert 'data-testid="condition-error"' in text
    assert "number" in text.split('data-testid="condition-error"')[1][:300]

    form.post({"v:num:entry/all/0/value": "0.5"}, op="add-action:actions:slack.send_message")
    text = form.post(
        {"v:optstr:actions/0/params/channel": "#sales", "v:optstr:actions/0/params/text": "Hi {{ account.plann }}"}
    )
    assert 'data-testid="param-error"' in text
    assert "plann" in text.split('data-testid="param-error"')[1][:300]

    form.name = "Broken"
    form.post(save="draft", status=400)
    assert not Playbook.objects.for_tenant(pqa_world.tenant).exists()


@pytest.mark.django_db
def test_the_live_preview_renders_a_template_for_the_chosen_account(
    pqa_world: TenantWorld, member_client: Callable[..., Client]
) -> None:
    from accounts.models import Account

    acme = Account.objects.for_tenant(pqa_world.tenant).get(external_id="acme")
    marketer = member_client(pqa_world.tenant, Role.MARKETER)
    url = f"/t/{pqa_world.slug}/playbooks/builder/text-preview/"
    field = "v:optstr:actions/0/params/text"

    good = marketer.post(
        url, {"template_field": field, field: "{{ account.name }} converts", "preview_account": acme.pk}
    )
    bad = marketer.post(url, {"template_field": field, field: "{{ account.nope }}", "preview_account": acme.pk})

    assert "Acme converts" in good.content.decode()
    assert "unknown name" in bad.content.decode()


@pytest.mark.django_db
def test_sales_reps_cannot_open_the_builder_and_other_tenants_playbooks_are_404(
    pqa_world: TenantWorld, tenant_b: TenantWorld, member_client: Callable[..., Client]
) -> None:
    form = Builder(member_client(pqa_world.tenant, Role.ADMIN), pqa_world)
    form.post(op="add-rule:entry/all")
    form.post({"v:str:entry/all/0/field": "account.stage", "v:str:entry/all/0/value": "Trial"})
    form.name = "Mine"
    form.post(save="draft", status=204)
    playbook = Playbook.objects.for_tenant(pqa_world.tenant).get()
    rep = member_client(pqa_world.tenant, Role.SALES)
    other = member_client(tenant_b.tenant, Role.ADMIN)

    assert rep.get(f"/t/{pqa_world.slug}/playbooks/new/").status_code == 403
    assert rep.get(f"/t/{pqa_world.slug}/playbooks/{playbook.pk}/edit/").status_code == 403
    assert rep.get(f"/t/{pqa_world.slug}/playbooks/{playbook.pk}/").status_code == 200  # results are readable
    assert other.get(f"/t/{tenant_b.slug}/playbooks/{playbook.pk}/").status_code == 404
    assert other.get(f"/t/{tenant_b.slug}/playbooks/{playbook.pk}/edit/").status_code == 404
    assert (
        other.post(f"/t/{tenant_b.slug}/playbooks/{playbook.pk}/transition/", {"action": "activate"}).status_code == 404
    )
    assert Playbook.objects.for_tenant(pqa_world.tenant).get().status == "draft"


@pytest.mark.django_db
def test_editing_publishes_a_new_version_and_the_results_page_counts_paths(
    pqa_world: TenantWorld, member_client: Callable[..., Client]
) -> None:
    marketer = member_client(pqa_world.tenant, Role.MARKETER)
    form = Builder(marketer, pqa_world)
    form.post(op="add-rule:entry/all")
    form.post({"v:str:entry/all/0/field": "account.stage", "v:str:entry/all/0/value": "Trial"})
    form.name = "Trials"
    form.post(save="draft", status=204)
    playbook = Playbook.objects.for_tenant(pqa_world.tenant).get()

    edit = marketer.get(f"/t/{pqa_world.slug}/playbooks/{playbook.pk}/edit/").content.decode()
    assert "Enrollments already running" in edit
    form.playbook = str(playbook.pk)
    form.post({"v:int:holdout_percent": "10", "in_flight_policy": "keep"}, save="activate", status=204)

    playbook.refresh_from_db()
    assert playbook.current_version.number == 2  # type: ignore[union-attr]
    assert playbook.current_version.definition["holdout_percent"] == 10  # type: ignore[union-attr]
    results = marketer.get(f"/t/{pqa_world.slug}/playbooks/{playbook.pk}/").content.decode()
    assert 'data-testid="results"' in results
    assert "Treatment vs holdout" in results
    listing = marketer.get(f"/t/{pqa_world.slug}/playbooks/").content.decode()
    assert "Trials" in listing
    assert "v2" in listing
