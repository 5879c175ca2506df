"""createtenant and apikey management commands."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.models import Account
from integrations.models import Connection
from playbooks.models import Playbook
from plgapp.keys import hash_key
from plgapp.models import ApiKey, Tenant, TenantMember, User
from plgapp.selectors import api_key_find_active
from scoring.models import ModelVersion, Score
from tests.conftest import TenantWorld


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def database_text() -> str:
    """Every row of every table of ours, as text: what `grep` over a dump would see."""
    chunks: list[str] = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for (table,) in cursor.fetchall():
            cursor.execute(f'SELECT t::text FROM "{table}" t')  # noqa: S608 - table names from the catalog
            chunks.extend(row[0] for row in cursor.fetchall())
    return "\n".join(chunks)


@pytest.mark.django_db
def test_createtenant_json_prints_exactly_one_object_with_working_keys() -> None:
    out, _err = run("createtenant", "Acme Inc.", "acme", "--admin-email", "Ops@Acme.test",
                    "--admin-password", "pw-1234-secret", "--json")  # fmt: skip

    payload = json.loads(out)
    assert set(payload) == {"tenant", "write_key", "secret_key"}
    assert payload["tenant"] == "acme"
    write = api_key_find_active(raw_key=payload["write_key"])
    secret = api_key_find_active(raw_key=payload["secret_key"])
    assert write is not None
    assert (write.kind, write.tenant.slug) == ("write", "acme")
    assert secret is not None
    assert secret.kind == "secret"
    admin = User.objects.get(email="ops@acme.test")
    assert admin.check_password("pw-1234-secret")
    assert TenantMember.objects.for_tenant(write.tenant).get(user=admin).role == "admin"


@pytest.mark.django_db
def test_createtenant_prints_keys_for_humans() -> None:
    out, _err = run("createtenant", "Beta", "beta", "--admin-email", "a@beta.test", "--admin-password", "pw-xyz-123")

    assert "shown once" in out
    assert out.count("plg_pk_") == 1
    assert out.count("plg_sk_") == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("slug", "message"),
    [("Bad Slug", "lowercase letters"), ("trailing-", "lowercase letters"), ("under_score", "lowercase letters")],
)
def test_createtenant_refuses_bad_slugs_and_writes_nothing(slug: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("createtenant", "X", slug, "--admin-email", "x@x.test", "--json")

    assert not Tenant.objects.exists()
    assert not User.objects.exists()


def test_createtenant_refuses_a_taken_slug(tenant_a: TenantWorld) -> None:
    with pytest.raises(CommandError, match="already exists"):
        run("createtenant", "Again", tenant_a.slug, "--admin-email", "new@x.test", "--json")

    assert not User.objects.filter(email="new@x.test").exists()


def test_createtenant_makes_an_existing_login_admin_of_the_new_tenant(tenant_a: TenantWorld) -> None:
    _out, err = run("createtenant", "Second", "second", "--admin-email", "admin@tenant-a.test", "--json")

    assert "already had a login" in err
    assert TenantMember.objects.unscoped().filter(user=tenant_a.admin).count() == 2


def test_apikey_create_prints_the_key_once_and_the_database_never_holds_it(tenant_a: TenantWorld) -> None:
    out, err = run("apikey", "create", "--tenant", tenant_a.slug, "--kind", "secret", "--name", "CI")

    raw_key = out.strip()
    assert raw_key.startswith("plg_sk_")
    assert "shown once" in err
    stored = ApiKey.objects.for_tenant(tenant_a.tenant).get(name="CI")
    assert stored.hash == hash_key(raw_key)
    text = database_text()
    assert stored.hash in text  # the scan does see the keys table
    for key in (raw_key, tenant_a.write_key, tenant_a.secret_key):
        assert key not in text
        assert key[len(stored.prefix) :] not in text


def test_apikey_create_json_includes_the_key_record(tenant_a: TenantWorld) -> None:
    out, _err = run("apikey", "create", "--tenant", tenant_a.slug, "--kind", "write", "--name", "web", "--json")

    record = json.loads(out)
    assert record["name"] == "web"
    assert record["kind"] == "write"
    assert record["key"].startswith(record["prefix"])


def test_apikey_revoke_by_prefix_and_list_shows_it(tenant_a: TenantWorld) -> None:
    prefix = tenant_a.write_key[:15]

    out, _err = run("apikey", "revoke", "--tenant", tenant_a.slug, prefix + "…")
    listing = json.loads(run("apikey", "list", "--tenant", tenant_a.slug, "--json")[0])

    assert "Revoked 'tenant-a write'" in out
    assert {k["name"]: k["is_active"] for k in listing} == {"tenant-a write": False, "tenant-a secret": True}
    assert api_key_find_active(raw_key=tenant_a.write_key) is None


def test_apikey_revoke_by_id(tenant_a: TenantWorld) -> None:
    key = ApiKey.objects.for_tenant(tenant_a.tenant).get(kind="secret")

    run("apikey", "revoke", "--tenant", tenant_a.slug, str(key.pk))

    key.refresh_from_db()
    assert key.revoked_at is not None


def test_apikey_cannot_touch_another_tenants_key(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    key_of_a = ApiKey.objects.for_tenant(tenant_a.tenant).get(kind="secret")

    with pytest.raises(CommandError, match="No key"):
        run("apikey", "revoke", "--tenant", tenant_b.slug, str(key_of_a.pk))

    key_of_a.refresh_from_db()
    assert key_of_a.revoked_at is None


def test_apikey_errors_are_clear(tenant_a: TenantWorld) -> None:
    with pytest.raises(CommandError, match="No tenant with slug 'nope'"):
        run("apikey", "list", "--tenant", "nope")
    with pytest.raises(CommandError, match="No key"):
        run("apikey", "revoke", "--tenant", tenant_a.slug, "plg_sk_zzzzzzzz")


@pytest.mark.django_db
def test_demo_setup_is_idempotent_and_prints_a_working_login(tmp_path: Path) -> None:
    credentials = tmp_path / "demo.json"

    first, _ = run("demo_setup", "--credentials-file", str(credentials), "--url", "http://127.0.0.1:9000")
    second, _ = run("demo_setup", "--credentials-file", str(credentials))
    saved = json.loads(credentials.read_text())

    assert "http://127.0.0.1:9000/t/demo/" in first
    assert saved["password"] in first
    assert saved["password"] in second
    assert Tenant.objects.filter(slug="demo").count() == 1
    assert User.objects.get(email="admin@demo.local").check_password(saved["password"])
    demo = Tenant.objects.get(slug="demo")
    assert ApiKey.objects.for_tenant(demo).count() == 2  # the saved keys were reused, not replaced
    for kind in ("write", "secret"):
        key = api_key_find_active(raw_key=saved[f"{kind}_key"])
        assert key is not None
        assert key.kind == kind
    assert oct(credentials.stat().st_mode & 0o777) == "0o600"
    roles = dict(TenantMember.objects.for_tenant(demo).values_list("user__email", "role"))
    assert roles == {"admin@demo.local": "admin", "marketer@demo.local": "marketer", "sales@demo.local": "sales"}
    assert User.objects.get(email="sales@demo.local").check_password(saved["password"])


@pytest.mark.django_db(transaction=True)
def test_demo_data_fills_scores_trains_and_activates_the_seed_playbook_on_sandboxes_once(tmp_path: Path) -> None:
    run("demo_setup", "--credentials-file", str(tmp_path / "demo.json"))
    demo = Tenant.objects.get(slug="demo")

    first, _ = run("demo_data", "--accounts", "40", "--days", "30")
    second, _ = run("demo_data", "--accounts", "40", "--days", "30")

    accounts = Account.objects.for_tenant(demo)
    assert accounts.count() == 40
    assert all(account.properties.get("owner_email", "").endswith("@demo.local") for account in accounts)
    trials = set(accounts.filter(stage="Trial").values_list("pk", flat=True))
    assert trials
    assert trials <= set(Score.objects.for_tenant(demo).filter(kind="conversion").values_list("entity_id", flat=True))
    assert ModelVersion.objects.for_tenant(demo).count() == 3  # trained once, not again on the second run
    sandboxes = [(c.provider, c.mode, c.status) for c in Connection.objects.for_tenant(demo).order_by("provider")]
    assert sandboxes == [("hubspot", "sandbox", "ok"), ("slack", "sandbox", "ok")]
    (playbook,) = Playbook.objects.for_tenant(demo)
    assert (playbook.name, playbook.status) == ("Trial PQA", "active")
    assert "generating" in first
    assert "generating" not in second
