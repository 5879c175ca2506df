"""The product in Chromium against the live server, real Postgres, Redis and a Celery worker (issue 7):

- a marketer builds the seed's Trial PQA playbook from scratch in the builder, sees the match count, activates it,
  and the sandbox outbox shows what it would have sent for the qualifying account;
- a sales rep filters the PQL list, opens an account's users with their roles and reasons, exports CSV, and cannot
  open the playbook editor;
- an invalid condition and an unknown template name are shown inline.

Each main page is saved to docs/screenshots/ for the README.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from integrations.models import SandboxCall
from integrations.services import connection_create
from playbooks.models import Playbook
from plgapp.roles import Role
from tests.conftest import TenantWorld
from tests.factories import PASSWORD, TenantMemberFactory, UserFactory
from tests.test_playbook_engine import pqa_world as pqa_world
from tests.test_playbook_worker import settle, wait_for
from tests.workers import PROJECT_ROOT, Worker, start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, base: str, world: TenantWorld, role: Role) -> str:
    user = UserFactory.create()
    TenantMemberFactory.create(tenant=world.tenant, user=user, role=role)
    page.goto(f"{base}/login/")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return user.email


@pytest.fixture
def sandboxes(pqa_world: TenantWorld) -> TenantWorld:
    for provider in ("slack", "hubspot"):
        connection_create(tenant=pqa_world.tenant, provider=provider, name=f"Sandbox {provider}", mode="sandbox",
                          credentials={}, settings={}, now=timezone.now())  # fmt: skip
    return pqa_world


@pytest.fixture
def worker(sandboxes: TenantWorld) -> Iterator[Worker]:
    process = start_worker("e2e", "ingest,scoring,playbooks,actions,default")
    settle(sandboxes)
    yield process
    print(process.stop()[-3000:])


class BuilderPage:
    """The builder in the browser: every change is a round trip; wait for its answer before the next one."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def _round_trip(self, action: Callable[[], Any]) -> None:
        with self.page.expect_response(lambda r: "/playbooks/builder/" in r.url and "text-preview" not in r.url):
            action()
        self.page.wait_for_function("!document.querySelector('.htmx-request, .htmx-settling, .htmx-swapping')")

    def click(self, op: str) -> None:
        self._round_trip(lambda: self.page.locator(f'#builder button[name="op"][value="{op}"]').click())

    def select(self, name: str, value: str) -> None:
        self._round_trip(lambda: self.page.locator(f'#builder select[name="{name}"]').select_option(value))

    def fill(self, name: str, value: str) -> None:
        field = self.page.locator(f'#builder [name="{name}"]')
        field.fill(value)
        self._round_trip(lambda: field.dispatch_event("change"))


def test_a_marketer_builds_the_trial_pqa_playbook_and_the_sandbox_outbox_fills(
    page: Page, live_server: Any, sandboxes: TenantWorld, worker: Worker
) -> None:
    base, world = live_server.url, sandboxes
    sign_in(page, base, world, Role.MARKETER)
    page.goto(f"{base}/t/{world.slug}/playbooks/")
    expect(page.get_by_test_id("no-playbooks")).to_be_visible()
    page.get_by_role("link", name="New playbook").click()
    b = BuilderPage(page)

    page.get_by_label("Name").fill("Trial PQA")
    b.click("add-rule:entry/all")
    b.select("v:str:entry/all/0/field", "account.stage")
    b.fill("v:str:entry/all/0/value", "Trial")
    b.click("add-rule:entry/all")
    b.select("v:str:entry/all/1/field", "account.score.conversion")
    b.select("v:str:entry/all/1/op", "gt")
    b.fill("v:num:entry/all/1/value", "0.75")
    expect(page.get_by_test_id("match-count")).to_contain_text("1 account match now: Acme")

    b.click("add-action:actions:slack.send_message")
    b.fill("v:optstr:actions/0/params/channel", "#sales")
    b.fill("v:optstr:actions/0/params/text", "{{ account.name }} is a PQA ({{ account.score.conversion | percent }})")
    expect(page.locator("#step-actions .preview").first).to_contain_text("is a PQA")
    b.click("add-action:actions:hubspot.add_to_list")
    b.select("v:optstr:actions/1/params/list_id", "9001")
    where = "actions/1/users_where/all"
    b.click(f"add-rule:{where}")
    b.select(f"v:str:{where}/0/field", "user.score.health")
    b.select(f"v:str:{where}/0/op", "gt")
    b.fill(f"v:num:{where}/0/value", "0.5")
    b.click(f"add-rule:{where}")
    b.select(f"v:str:{where}/1/field", "membership.role")
    b.select(f"v:str:{where}/1/op", "in")
    b.fill(f"v:list:{where}/1/value", "Admin, Owner")

    b.click("goal:on")
    b.click("add-rule:goal/all")
    b.select("v:str:goal/all/0/field", "account.stage")
    b.fill("v:str:goal/all/0/value", "Customer")
    b.fill("v:optnum:timeout/days", "21")
    b.click("add-action:on_goal:hubspot.remove_from_list")
    b.select("v:optstr:on_goal/0/params/list_id", "9001")
    b.click("add-action:on_goal:slack.send_message")
    b.fill("v:optstr:on_goal/1/params/channel", "#sales")
    b.fill("v:optstr:on_goal/1/params/text", "New customer: {{ account.name }}")
    b.click("add-action:on_timeout:hubspot.create_task")
    expect(page.get_by_test_id("error-count")).to_have_count(0)
    shot(page, "playbook-builder")

    with page.expect_navigation():
        page.get_by_role("button", name="Save and activate").click()
    expect(page.get_by_test_id("playbook-status")).to_have_text("Active")
    playbook = Playbook.objects.for_tenant(world.tenant).get(name="Trial PQA")
    assert playbook.current_version.definition["actions"][1]["target"] == "users"  # type: ignore[union-attr]

    calls = SandboxCall.objects.for_tenant(world.tenant)
    wait_for(lambda: calls.filter(operation="chat.postMessage").exists()
             and calls.filter(operation="lists.memberships.add").exists())  # fmt: skip
    page.reload()
    expect(page.get_by_test_id("results")).to_contain_text("Entered")
    shot(page, "playbook-results")
    page.get_by_role("link", name="Sandbox outbox").click()
    outbox = page.get_by_test_id("outbox")
    expect(outbox).to_contain_text("Acme is a PQA (90%)")
    expect(outbox).to_contain_text("alice@acme.test")  # the healthy Owner; carol (Admin) is not healthy
    expect(outbox).not_to_contain_text("carol@acme.test")
    expect(outbox).not_to_contain_text("Beta")
    shot(page, "sandbox-outbox")


def test_a_sales_rep_works_the_pql_list_and_cannot_edit_playbooks(
    page: Page, live_server: Any, pqa_world: TenantWorld, tmp_path: Path
) -> None:
    base, world = live_server.url, pqa_world
    sign_in(page, base, world, Role.SALES)
    page.goto(f"{base}/t/{world.slug}/pqls/")
    rows = page.get_by_test_id("pql-row")
    expect(rows).to_have_count(2)  # acme and beta: gamma is a customer

    with page.expect_response(lambda r: "/pqls/" in r.url):
        page.get_by_label("Min. score").select_option("0.75")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(f"{base}/t/{world.slug}/pqls/?min_score=0.75")  # the filter is in the address: shareable
    page.get_by_role("button", name="3 users").click()
    users = page.get_by_test_id("pql-user")
    expect(users.first).to_be_visible()
    expect(page.get_by_test_id("pql-users").first).to_contain_text("Owner")
    shot(page, "pql-list")

    with page.expect_download() as download:
        page.get_by_test_id("export-csv").click()
    exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [row["external_id"] for row in exported] == ["acme"]

    page.get_by_role("link", name="Open Acme").click()
    expect(page.get_by_test_id("account-users")).to_contain_text("alice@acme.test")
    shot(page, "account-360")

    expect(page.get_by_role("link", name="Playbooks")).to_be_visible()
    page.goto(f"{base}/t/{world.slug}/playbooks/new/")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()


def test_invalid_conditions_and_unknown_template_names_are_shown_inline(
    page: Page, live_server: Any, pqa_world: TenantWorld
) -> None:
    base, world = live_server.url, pqa_world
    sign_in(page, base, world, Role.MARKETER)
    page.goto(f"{base}/t/{world.slug}/playbooks/new/")
    b = BuilderPage(page)

    b.click("add-rule:entry/all")
    b.select("v:str:entry/all/0/field", "account.score.conversion")
    b.select("v:str:entry/all/0/op", "gt")
    b.fill("v:num:entry/all/0/value", "lots")
    expect(page.get_by_test_id("condition-error")).to_contain_text("number")

    b.fill("v:num:entry/all/0/value", "0.5")
    expect(page.get_by_test_id("condition-error")).to_have_count(0)
    b.click("add-action:actions:slack.send_message")
    b.fill("v:optstr:actions/0/params/channel", "#sales")
    b.fill("v:optstr:actions/0/params/text", "Hello {{ account.plann }}")
    expect(page.get_by_test_id("param-error")).to_contain_text("plann")
    shot(page, "playbook-builder-errors")


def test_an_admin_reviews_scoring_integrations_members_and_the_pages_fit_a_tablet(
    page: Page, live_server: Any, sandboxes: TenantWorld
) -> None:
    base, world = live_server.url, sandboxes
    sign_in(page, base, world, Role.ADMIN)

    page.goto(f"{base}/t/{world.slug}/scoring/")
    expect(page.get_by_test_id("model-conversion")).to_be_visible()
    page.get_by_role("button", name="Conversion", exact=True).click()
    expect(page.locator("#discovery-table")).not_to_contain_text("Choose a model")
    shot(page, "scoring")

    page.get_by_role("link", name="Integrations").click()
    card = page.get_by_test_id("connection").first
    card.get_by_role("button", name="Test connection").click()
    expect(card.get_by_test_id("status")).to_have_text("Working")
    shot(page, "integrations")

    page.get_by_role("link", name="Members").click()
    page.get_by_label("Email").fill("new.rep@example.test")
    page.get_by_role("button", name="Invite").click()
    expect(page.get_by_test_id("invite-link")).to_contain_text("/reset/")

    page.set_viewport_size({"width": 820, "height": 1180})  # a tablet held upright
    page.goto(f"{base}/t/{world.slug}/pqls/")
    expect(page.get_by_test_id("pql-row").first).to_be_visible()
    wide = page.evaluate(
        "() => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth + 1)"
        ".slice(0, 8).map(e => e.tagName + '.' + e.className)"
    )  # what sticks out, if anything
    fits = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert fits, f"no sideways scrolling: {wide}"
    shot(page, "pql-list-tablet")
