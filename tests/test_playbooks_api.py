"""The playbooks management API (DESIGN §7): create with per-field validation, publish versions, lifecycle,
preview in SQL, results, enrollments, runs and retry — and another tenant sees none of it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from playbooks.models import ActionRun, Playbook, RunStatus
from playbooks.services import playbook_evaluate
from plgapp.roles import Role
from signals.calls import AccountRef, UpsertAccount, parse_properties
from signals.services import calls_ingest
from tests.conftest import TenantWorld

URL = "/api/v1/playbooks/"
DEFINITION: dict[str, Any] = {
    "object": "account",
    "entry": {"field": "account.stage", "op": "eq", "value": "Trial"},
    "actions": [{"id": "note", "type": "log", "params": {"message": "new trial"}}],
    "goal": {"field": "account.stage", "op": "eq", "value": "Customer"},
    "timeout": {"days": 14},
    "on_timeout": [{"id": "late", "type": "log", "params": {"message": "timed out"}}],
}


def trials(world: TenantWorld, count: int) -> None:
    now = timezone.now()
    calls = [UpsertAccount(account=AccountRef(external_id=f"t{n}"), at=now - timedelta(days=1),
                           properties=parse_properties({"stage": "Trial", "name": f"Trial {n}"}, "p"))
             for n in range(count)]  # fmt: skip
    assert calls_ingest(tenant=world.tenant, calls=list(enumerate(calls)), now=now).rejected == []


@pytest.mark.django_db
def test_a_playbook_is_created_published_activated_previewed_and_reports_results(
    tenant_a: TenantWorld, secret_client: Any
) -> None:
    trials(tenant_a, 3)
    client = secret_client(tenant_a)

    created = client.post(URL, {"name": "New trials", "definition": DEFINITION}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["status"], body["version"], body["object"], body["definition"]) == ("draft", 1, "account", DEFINITION)
    playbook_url = f"{URL}{body['id']}/"

    preview = client.post(f"{playbook_url}preview", {}, format="json")
    assert preview.status_code == 200, preview.json()
    assert preview.json()["count"] == 3
    assert {row["external_id"] for row in preview.json()["sample"]} == {"t0", "t1", "t2"}
    narrower = client.post(
        f"{playbook_url}preview", {"entry": {"field": "account.name", "op": "eq", "value": "Trial 1"}}, format="json"
    )
    assert narrower.json()["count"] == 1

    published = client.put(playbook_url, {"definition": {**DEFINITION, "timeout": {"days": 21}}}, format="json")
    assert published.status_code == 200, published.json()
    assert published.json()["version"] == 2
    assert [v["number"] for v in client.get(f"{playbook_url}versions").json()] == [2, 1]

    assert client.post(f"{playbook_url}activate").json()["status"] == "active"
    playbook_evaluate(tenant=tenant_a.tenant, playbook_id=int(body["id"]), now=timezone.now())

    results = client.get(f"{playbook_url}results").json()
    assert (results["entered"], results["active"], results["goal_reached"]) == (3, 3, 0)
    assert results["treatment"]["entered"] == 3
    enrollments = client.get(f"{playbook_url}enrollments?status=active").json()["results"]
    assert len(enrollments) == 3
    assert enrollments[0]["version"] == 2
    runs = client.get(f"{playbook_url}runs?status=pending").json()["results"]
    assert {run["action_id"] for run in runs} == {"note"}
    assert client.post(f"{playbook_url}pause").json()["status"] == "paused"
    assert client.post(f"{playbook_url}archive").json()["status"] == "archived"
    refused = client.post(f"{playbook_url}activate")
    assert refused.status_code == 400
    assert "archived" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"definition": DEFINITION}, {"name"}),
        (
            {
                "name": "x",
                "definition": {**DEFINITION, "entry": {"field": "account.plan_typo", "op": "eq", "value": "Pro"}},
            },
            None,
        ),
        (
            {"name": "x", "definition": {**DEFINITION, "entry": {"field": "account.stage", "op": "gt", "value": 3}}},
            None,
        ),
        (
            {"name": "x", "definition": {**DEFINITION, "actions": [{"id": "a", "type": "fax"}]}},
            {"definition.actions.0.type"},
        ),
        ({"name": "x", "definition": {**DEFINITION, "timeout": {"days": -1}}}, {"definition.timeout.days"}),
        ({"name": "x", "definition": "not an object"}, {"definition.definition"}),
    ],
)
@pytest.mark.django_db
def test_bad_playbooks_are_refused_with_errors_per_field_and_nothing_is_stored(
    tenant_a: TenantWorld, secret_client: Any, body: dict[str, Any], fields: set[str] | None
) -> None:
    trials(tenant_a, 1)

    response = secret_client(tenant_a).post(URL, body, format="json")

    assert response.status_code == 400, response.json()
    errors = response.json()["error"]["fields"]
    if fields is None:  # a condition error: reported under the entry's path
        assert all(key.startswith("definition.entry") for key in errors), errors
    else:
        assert set(errors) == fields, errors
    assert not Playbook.objects.for_tenant(tenant_a.tenant).exists()


@pytest.mark.django_db
def test_a_dead_run_is_redriven_and_live_runs_are_not(tenant_a: TenantWorld, secret_client: Any) -> None:
    trials(tenant_a, 1)
    client = secret_client(tenant_a)
    playbook_id = client.post(URL, {"name": "P", "definition": DEFINITION}, format="json").json()["id"]
    client.post(f"{URL}{playbook_id}/activate")
    playbook_evaluate(tenant=tenant_a.tenant, playbook_id=int(playbook_id), now=timezone.now())
    run = ActionRun.objects.for_tenant(tenant_a.tenant).get()

    assert client.post(f"{URL}runs/{run.pk}/retry").status_code == 400  # pending: nothing to re-drive
    ActionRun.objects.for_tenant(tenant_a.tenant).filter(pk=run.pk).update(status=RunStatus.DEAD, attempts=8)
    retried = client.post(f"{URL}runs/{run.pk}/retry")

    assert retried.status_code == 200, retried.json()
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)


@pytest.mark.django_db
def test_another_tenants_playbooks_enrollments_and_runs_are_invisible(
    tenant_a: TenantWorld, tenant_b: TenantWorld, secret_client: Any, member_client: Any
) -> None:
    trials(tenant_a, 1)
    owner = secret_client(tenant_a)
    playbook_id = owner.post(URL, {"name": "Mine", "definition": DEFINITION}, format="json").json()["id"]
    owner.post(f"{URL}{playbook_id}/activate")
    playbook_evaluate(tenant=tenant_a.tenant, playbook_id=int(playbook_id), now=timezone.now())
    run_id = ActionRun.objects.for_tenant(tenant_a.tenant).get().pk
    intruder = secret_client(tenant_b)

    assert intruder.get(URL).json()["results"] == []
    for path in ("", "results", "versions", "enrollments", "runs"):
        assert intruder.get(f"{URL}{playbook_id}/{path}").status_code == 404, path
    for path in ("activate", "pause", "archive", "preview"):
        assert intruder.post(f"{URL}{playbook_id}/{path}", {}, format="json").status_code == 404, path
    assert intruder.put(f"{URL}{playbook_id}/", {"definition": DEFINITION}, format="json").status_code == 404
    assert intruder.get(f"{URL}runs/{run_id}/").status_code == 404
    assert intruder.post(f"{URL}runs/{run_id}/retry").status_code == 404
    session = member_client(tenant_b.tenant, Role.ADMIN)
    assert session.get(f"/t/{tenant_b.slug}/api/v1/playbooks/{playbook_id}/").status_code == 404
    assert Playbook.objects.for_tenant(tenant_a.tenant).get().status == "active"


@pytest.mark.django_db
def test_marketers_build_playbooks_sales_and_viewers_only_read(tenant_a: TenantWorld, member_client: Any) -> None:
    url = f"/t/{tenant_a.slug}/api/v1/playbooks/"
    body = {"name": "By a marketer", "definition": DEFINITION}

    assert member_client(tenant_a.tenant, Role.MARKETER).post(url, body, content_type="application/json"
                                                              ).status_code == 201  # fmt: skip
    for role in (Role.SALES, Role.VIEWER):
        reader = member_client(tenant_a.tenant, role)
        assert reader.get(url).status_code == 200
        assert reader.post(url, {**body, "name": role}, content_type="application/json").status_code == 403
