"""An admin signs in, creates a key (shown once, through htmx), uses it, and revokes it — in Chromium."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect

from plgapp.models import ApiKey
from tests.conftest import TenantWorld
from tests.factories import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def call_api(base_url: str, path: str, key: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{base_url}{path}", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_an_admin_creates_uses_and_revokes_a_key_in_the_browser(
    page: Page, live_server: Any, tenant_a: TenantWorld, tenant_b: TenantWorld
) -> None:
    base = live_server.url

    page.goto(f"{base}/t/{tenant_a.slug}/settings/api-keys/")
    expect(page).to_have_url(f"{base}/login/?next=/t/{tenant_a.slug}/settings/api-keys/")
    page.get_by_label("Email").fill("admin@tenant-a.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()

    page.evaluate("window.stillTheSamePage = true")  # a full reload would drop this
    page.get_by_label("Name").fill("Browser key")
    page.get_by_label("Kind").select_option("secret")
    page.get_by_role("button", name="Create key").click()
    new_key = page.get_by_test_id("new-key")
    expect(new_key).to_be_visible()
    raw_key = new_key.inner_text().strip()
    assert raw_key.startswith("plg_sk_")
    assert page.evaluate("window.stillTheSamePage === true"), "the form should be swapped in by htmx"
    row = page.locator("tr", has_text="Browser key")
    expect(row).to_contain_text("active")

    status, body = call_api(base, "/api/v1/tenant/", raw_key)
    assert (status, body["slug"]) == (200, tenant_a.slug)

    confirmations: list[str] = []

    def confirm(dialog: Dialog) -> None:
        confirmations.append(dialog.message)
        dialog.accept()

    page.once("dialog", confirm)
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator("tr", has_text="Browser key")).to_contain_text("revoked")
    expect(page.get_by_test_id("new-key")).to_have_count(0)  # never shown again
    assert confirmations == ["Revoke “Browser key”? Anything using it stops working at once."]
    assert page.evaluate("window.stillTheSamePage === true")

    status, body = call_api(base, "/api/v1/tenant/", raw_key)
    assert status == 401
    assert ApiKey.objects.for_tenant(tenant_a.tenant).get(name="Browser key").revoked_at is not None

    page.goto(f"{base}/t/{tenant_b.slug}/")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
