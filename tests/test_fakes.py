"""The Slack and HubSpot fakes, proven through the official SDKs only (slack_sdk, hubspot-api-client 12).

No database: these tests only start loopback HTTP servers.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import hubspot
import pytest
from hubspot import oauth
from hubspot.crm import companies, contacts, lists
from hubspot.crm.objects import tasks
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from tests.fakes import FakeHubSpot, FakeSlack
from tests.fakes.__main__ import build, parse_args
from tests.fakes.slack import slack_arguments

TIMEOUT = 5  # seconds, passed on every SDK call as product code must


class ManualClock:
    """An injected clock for the fakes' token expiry and search lag (time is never slept on)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --------------------------------------------------------------------------------------------------- Slack


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(seed=1) as fake:
        yield fake


@pytest.fixture
def slack_team(slack: FakeSlack) -> str:
    return slack.add_workspace("Acme").team_id


def slack_client(fake: FakeSlack, token: str | None, **kwargs: Any) -> WebClient:
    """The recipe: base_url ends with ``/api/``; no retry handlers, so a 429 surfaces instead of sleeping."""
    return WebClient(token=token, base_url=fake.url + "/api/", timeout=TIMEOUT, retry_handlers=[], **kwargs)


def test_slack_post_message_stores_text_and_attachment_colour(slack: FakeSlack, slack_team: str) -> None:
    channel = slack.add_channel(slack_team, "alerts")
    client = slack_client(slack, slack.issue_bot_token(slack_team))

    response = client.chat_postMessage(
        channel=channel.id, text="Acme is a PQA", attachments=[{"color": "#36a64f", "text": "score 0.91"}]
    )

    assert response["ok"] is True
    assert response["channel"] == channel.id
    assert response["message"]["attachments"][0]["color"] == "#36a64f"
    [message] = slack.messages(channel.id)
    assert message.ts == response["ts"]
    assert message.text == "Acme is a PQA"
    assert message.colors == ["#36a64f"]
    assert slack.requests(path="/api/chat.postMessage")[0].header("authorization") == f"Bearer {client.token}"


def test_slack_post_message_accepts_channel_name_and_orders_ts(slack: FakeSlack, slack_team: str) -> None:
    channel = slack.add_channel(slack_team, "sales")
    client = slack_client(slack, slack.issue_bot_token(slack_team))

    first = client.chat_postMessage(channel="#sales", text="one")
    second = client.chat_postMessage(channel="sales", text="two", attachments=[{"color": "danger", "text": "2"}])

    assert first["channel"] == second["channel"] == channel.id
    assert float(second["ts"]) > float(first["ts"])
    assert [(m.text, m.colors) for m in slack.messages(channel.id)] == [("one", []), ("two", ["danger"])]


@pytest.mark.parametrize(
    ("token_kind", "error"),
    [("unknown", "invalid_auth"), ("missing", "not_authed"), ("revoked", "token_revoked")],
)
def test_slack_bad_tokens_answer_ok_false_with_http_200(
    slack: FakeSlack, slack_team: str, token_kind: str, error: str
) -> None:
    channel = slack.add_channel(slack_team, "alerts")
    token: str | None = {"unknown": "xoxb-1-2-nope", "missing": None}.get(token_kind)
    if token_kind == "revoked":
        token = slack.issue_bot_token(slack_team)
        slack.revoke_token(token)

    with pytest.raises(SlackApiError) as raised:
        slack_client(slack, token).chat_postMessage(channel=channel.id, text="hi")

    assert raised.value.response.status_code == 200
    assert raised.value.response["error"] == error
    assert slack.messages(channel.id) == []


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": "C404", "text": "hi"}, "channel_not_found"),
        ({"channel": "alerts"}, "no_text"),
        ({"channel": "archived", "text": "hi"}, "is_archived"),
    ],
)
def test_slack_post_message_validation_errors(
    slack: FakeSlack, slack_team: str, kwargs: dict[str, Any], error: str
) -> None:
    slack.add_channel(slack_team, "alerts")
    slack.add_channel(slack_team, "archived", is_archived=True)

    with pytest.raises(SlackApiError) as raised:
        slack_client(slack, slack.issue_bot_token(slack_team)).chat_postMessage(**kwargs)

    assert raised.value.response["error"] == error


def test_slack_rate_limit_surfaces_status_and_retry_after(slack: FakeSlack, slack_team: str) -> None:
    channel = slack.add_channel(slack_team, "alerts")
    client = slack_client(slack, slack.issue_bot_token(slack_team))
    slack.set_faults(rate_limit_fraction=1.0, retry_after=30, path="/api/chat.postMessage")

    with pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel=channel.id, text="hi")

    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "30"
    assert raised.value.response["error"] == "ratelimited"
    assert client.auth_test()["ok"] is True  # other paths are not affected
    [limited] = slack.requests(path="/api/chat.postMessage")
    assert limited.status == 429
    assert limited.retry_not_before == pytest.approx(limited.monotonic + 30)


def test_slack_rate_limit_window_is_per_channel(slack: FakeSlack, slack_team: str) -> None:
    alerts, sales = slack.add_channel(slack_team, "alerts"), slack.add_channel(slack_team, "sales")
    client = slack_client(slack, slack.issue_bot_token(slack_team))
    slack.set_rate_limit(limit=1, window=60, path="/api/chat.postMessage")

    client.chat_postMessage(channel=alerts.id, text="1")
    client.chat_postMessage(channel=sales.id, text="2")
    with pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel=alerts.id, text="3")

    assert raised.value.response.status_code == 429
    assert int(raised.value.response.headers["Retry-After"]) >= 59
    assert [r.client_key for r in slack.requests()] == [
        f"{slack_team}/chat.postMessage/{alerts.id}",
        f"{slack_team}/chat.postMessage/{sales.id}",
        f"{slack_team}/chat.postMessage/{alerts.id}",
    ]


def test_retry_after_checker_catches_an_early_retry_on_the_same_channel_only(slack: FakeSlack, slack_team: str) -> None:
    alerts, sales = slack.add_channel(slack_team, "alerts"), slack.add_channel(slack_team, "sales")
    client = slack_client(slack, slack.issue_bot_token(slack_team))
    slack.fail_next("rate_limit", retry_after=30, path="/api/chat.postMessage")
    with pytest.raises(SlackApiError):
        client.chat_postMessage(channel=alerts.id, text="first")
    client.chat_postMessage(channel=sales.id, text="other channel: allowed")
    assert slack.retry_after_violations() == []

    client.chat_postMessage(channel=alerts.id, text="too early")

    [violation] = slack.retry_after_violations()
    assert violation.client_key == f"{slack_team}/chat.postMessage/{alerts.id}"
    assert violation.early.body["text"] == "too early"
    assert 29 < violation.early_by <= 30
    with pytest.raises(AssertionError, match="ignored Retry-After"):
        slack.assert_retry_after_respected()
    slack.assert_retry_after_respected(client_key=f"{slack_team}/chat.postMessage/{sales.id}")


def test_slack_conversations_list_paginates_through_all_pages(slack: FakeSlack, slack_team: str) -> None:
    names = [f"c{i}" for i in range(7)]
    for name in names:
        slack.add_channel(slack_team, name)
    slack.add_channel(slack_team, "old", is_archived=True)
    slack.add_channel(slack_team, "secret", is_private=True)
    slack.add_channel(slack_team, "hidden", is_private=True, is_member=False)
    client = slack_client(slack, slack.issue_bot_token(slack_team))

    seen: list[str] = []
    cursors: list[str] = []
    # A SlackResponse iterates by fetching the next page into itself: read each page inside the loop.
    for page in client.conversations_list(limit=3, exclude_archived=True, types="public_channel,private_channel"):
        seen.extend(channel["name"] for channel in page["channels"])
        cursors.append(page["response_metadata"]["next_cursor"])

    assert seen == [*names, "secret"]
    assert len(cursors) == 4
    assert cursors[-1] == ""
    assert ["cursor" in slack_arguments(r) for r in slack.requests()] == [False, True, True, True]


def test_slack_conversations_list_pages_may_be_short_while_more_follow(slack: FakeSlack, slack_team: str) -> None:
    slack.add_channel(slack_team, "old-1", is_archived=True)
    slack.add_channel(slack_team, "old-2", is_archived=True)
    slack.add_channel(slack_team, "live")
    client = slack_client(slack, slack.issue_bot_token(slack_team))

    first = client.conversations_list(limit=2, exclude_archived=True)

    assert first["channels"] == []
    assert first["response_metadata"]["next_cursor"] != ""


def test_slack_oauth_v2_access_without_rotation(slack: FakeSlack, slack_team: str) -> None:
    app = slack.add_app()
    code = slack.issue_oauth_code(app.client_id, slack_team, redirect_uri="https://plg.test/slack/callback")
    client = slack_client(slack, None)

    granted = client.oauth_v2_access(
        client_id=app.client_id,
        client_secret=app.client_secret,
        code=code,
        redirect_uri="https://plg.test/slack/callback",
    )

    assert granted["access_token"].startswith("xoxb-")
    assert granted["team"] == {"id": slack_team, "name": "Acme"}
    assert granted["bot_user_id"] == slack.workspaces[slack_team].bot_user_id
    assert "chat:write" in granted["scope"].split(",")
    assert granted.get("refresh_token") is None
    assert (slack.requests()[0].header("authorization") or "").startswith("Basic ")
    assert slack_client(slack, granted["access_token"]).auth_test()["team_id"] == slack_team
    with pytest.raises(SlackApiError) as reused:
        client.oauth_v2_access(client_id=app.client_id, client_secret=app.client_secret, code=code)
    assert reused.value.response["error"] == "invalid_code"


def test_slack_oauth_v2_access_with_rotation_and_refresh(slack: FakeSlack, slack_team: str) -> None:
    app = slack.add_app(token_rotation=True)
    client = slack_client(slack, None)
    granted = client.oauth_v2_access(
        client_id=app.client_id, client_secret=app.client_secret, code=slack.issue_oauth_code(app.client_id, slack_team)
    )
    assert granted["access_token"].startswith("xoxe.xoxb-")
    assert granted["refresh_token"].startswith("xoxe-1-")
    assert granted["expires_in"] == 43200

    refreshed = client.oauth_v2_access(
        client_id=app.client_id,
        client_secret=app.client_secret,
        grant_type="refresh_token",
        refresh_token=granted["refresh_token"],
    )

    assert refreshed["access_token"] != granted["access_token"]
    assert slack_client(slack, refreshed["access_token"]).auth_test()["ok"] is True
    with pytest.raises(SlackApiError) as old_token:
        slack_client(slack, granted["access_token"]).auth_test()
    assert old_token.value.response["error"] == "token_expired"
    with pytest.raises(SlackApiError) as old_refresh:
        client.oauth_v2_access(
            client_id=app.client_id,
            client_secret=app.client_secret,
            grant_type="refresh_token",
            refresh_token=granted["refresh_token"],
        )
    assert old_refresh.value.response["error"] == "invalid_refresh_token"


def test_slack_client_timeout_against_a_hanging_endpoint(slack: FakeSlack, slack_team: str) -> None:
    client = WebClient(token=slack.issue_bot_token(slack_team), base_url=slack.url + "/api/", timeout=1)
    slack.set_faults(hang_fraction=1.0, hang_seconds=3, path="/api/auth.test")

    with pytest.raises(TimeoutError):  # a read timeout is not retried even by the default handlers
        client.auth_test()

    assert len(slack.requests()) == 1
    assert slack.requests()[0].fault == "hang"


def test_slack_server_error_surfaces_as_slack_api_error(slack: FakeSlack, slack_team: str) -> None:
    slack.fail_next("server_error", status=503)

    with pytest.raises(SlackApiError) as raised:
        slack_client(slack, slack.issue_bot_token(slack_team)).auth_test()

    assert raised.value.response.status_code == 503
    assert raised.value.response["error"] == "service_unavailable"


def test_random_faults_are_reproducible_from_the_seed() -> None:
    def statuses(seed: int) -> list[int | None]:
        with FakeSlack(seed=seed) as fake:
            team = fake.add_workspace().team_id
            client = slack_client(fake, fake.issue_bot_token(team))
            fake.set_faults(rate_limit_fraction=0.3, server_error_fraction=0.2)
            for _ in range(20):
                with contextlib.suppress(SlackApiError):
                    client.auth_test()
            return [r.status for r in fake.requests()]

    first = statuses(7)
    assert first == statuses(7)
    assert {429, 503, 200} <= set(first)
    assert first != statuses(8)


def test_standalone_fake_takes_fault_options_and_answers_the_control_api() -> None:
    fake = build(parse_args(["slack", "--rate-limit-fraction", "1", "--retry-after", "4", "--fault-path", "*.post*"]))
    assert isinstance(fake, FakeSlack)
    with fake:
        seeded = fake.seed_demo()
        client = slack_client(fake, seeded["bot_token"])
        with pytest.raises(SlackApiError) as raised:
            client.chat_postMessage(channel=seeded["channels"]["alerts"], text="x")
        assert raised.value.response.headers["Retry-After"] == "4"

        urllib.request.urlopen(urllib.request.Request(fake.url + "/_fake/faults", method="DELETE"), timeout=TIMEOUT)
        client.chat_postMessage(channel=seeded["channels"]["alerts"], text="x")
        with urllib.request.urlopen(fake.url + "/_fake/requests", timeout=TIMEOUT) as answer:
            records = json.load(answer)

    assert [(r["path"], r["status"]) for r in records] == [
        ("/api/chat.postMessage", 429),
        ("/api/chat.postMessage", 200),
    ]
    assert records[0]["retry_allowed_at"] == pytest.approx(records[0]["received_at"] + 4)


# --------------------------------------------------------------------------------------------------- HubSpot


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hs(clock: ManualClock) -> Iterator[FakeHubSpot]:
    with FakeHubSpot(seed=1, clock=clock) as fake:
        yield fake


@pytest.fixture
def portal(hs: FakeHubSpot) -> int:
    return hs.add_portal().portal_id


def hubspot_client(fake: FakeHubSpot, token: str) -> Any:
    """The recipe from tests/fakes/hubspot.py: ``host`` and ``base_url``, and urllib3 retries off."""
    return hubspot.Client.create(access_token=token, host=fake.url, base_url=fake.url, retry=Retry(total=False))


def error_body(exc: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def test_hubspot_contact_by_email_not_found_is_404_with_body(hs: FakeHubSpot, portal: int) -> None:
    contacts_api = hubspot_client(hs, hs.issue_token(portal)).crm.contacts.basic_api

    with pytest.raises(contacts.ApiException) as raised:
        contacts_api.get_by_id("nobody@acme.test", id_property="email", _request_timeout=TIMEOUT)

    assert raised.value.status == 404
    body = error_body(raised.value)
    assert body["status"] == "error"
    assert body["category"] == "OBJECT_NOT_FOUND"
    assert body["correlationId"]
    assert hs.requests()[0].param("idProperty") == "email"


def test_hubspot_contact_create_then_get_by_email_and_conflict(hs: FakeHubSpot, portal: int) -> None:
    contacts_api = hubspot_client(hs, hs.issue_token(portal)).crm.contacts.basic_api
    created = contacts_api.create(
        contacts.SimplePublicObjectInputForCreate(properties={"email": "Ada@Acme.test", "firstname": "Ada"}),
        _request_timeout=TIMEOUT,
    )

    found = contacts_api.get_by_id("ada@acme.test", id_property="email", properties=["email", "phone"])

    assert found.id == created.id
    assert found.properties["email"] == "ada@acme.test"
    assert found.properties["phone"] is None
    assert found.created_at is not None
    with pytest.raises(contacts.ApiException) as raised:
        contacts_api.create(contacts.SimplePublicObjectInputForCreate(properties={"email": "ada@acme.test"}))
    assert raised.value.status == 409
    body = error_body(raised.value)
    assert body["category"] == "CONFLICT"
    assert body["message"] == f"Contact already exists. Existing ID: {created.id}"


def test_hubspot_contact_batch_upsert_by_email(hs: FakeHubSpot, portal: int) -> None:
    existing = hs.add_contact(portal, "old@acme.test", firstname="Old")
    batch = hubspot_client(hs, hs.issue_token(portal)).crm.contacts.batch_api
    inputs = [
        contacts.SimplePublicObjectBatchInputUpsert(id=email, id_property="email", properties={"lastname": "Upserted"})
        for email in ("old@acme.test", "new@acme.test")
    ]

    result = batch.upsert(
        contacts.BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs), _request_timeout=TIMEOUT
    )

    assert result.status == "COMPLETE"
    assert [(r.id == existing.id, r.new) for r in result.results] == [(True, False), (False, True)]
    stored = {c.properties["email"]: c.properties for c in hs.objects(portal, "contacts")}
    assert stored["old@acme.test"]["firstname"] == "Old"
    assert stored["old@acme.test"]["lastname"] == stored["new@acme.test"]["lastname"] == "Upserted"


def test_hubspot_company_search_by_domain_and_create(hs: FakeHubSpot, portal: int) -> None:
    hs.add_company(portal, "Other", "other.test")
    companies_api = hubspot_client(hs, hs.issue_token(portal)).crm.companies
    by_domain = companies.PublicObjectSearchRequest(
        filter_groups=[{"filters": [{"propertyName": "domain", "operator": "EQ", "value": "acme.test"}]}],
        properties=["name", "domain"],
        limit=1,
    )
    assert companies_api.search_api.do_search(by_domain, _request_timeout=TIMEOUT).total == 0

    created = companies_api.basic_api.create(
        companies.SimplePublicObjectInputForCreate(properties={"name": "Acme", "domain": "acme.test"}),
        _request_timeout=TIMEOUT,
    )
    found = companies_api.search_api.do_search(by_domain, _request_timeout=TIMEOUT)

    assert found.total == 1
    assert found.results[0].id == created.id
    assert found.results[0].properties == {"name": "Acme", "domain": "acme.test"}


def test_hubspot_list_search_and_membership_add_remove(hs: FakeHubSpot, portal: int) -> None:
    ada, bob = hs.add_contact(portal, "ada@acme.test"), hs.add_contact(portal, "bob@acme.test")
    target = hs.add_list(portal, "PQL contacts", members=[bob.id])
    hs.add_list(portal, "Churn risk")
    crm_lists = hubspot_client(hs, hs.issue_token(portal)).crm.lists

    found = crm_lists.lists_api.do_search(lists.ListSearchRequest(query="pql", processing_types=["MANUAL"]))
    [match] = found.lists
    assert (match.list_id, match.processing_type, match.additional_properties) == (
        target.list_id,
        "MANUAL",
        {"hs_list_size": "1"},
    )
    assert crm_lists.lists_api.get_by_id(target.list_id, _request_timeout=TIMEOUT).list.name == "PQL contacts"

    added = crm_lists.memberships_api.add(target.list_id, [ada.id, bob.id, "999999"], _request_timeout=TIMEOUT)
    assert (added.records_ids_added, added.record_ids_missing) == ([ada.id], ["999999"])
    removed = crm_lists.memberships_api.remove(target.list_id, [bob.id], _request_timeout=TIMEOUT)
    assert removed.record_ids_removed == [bob.id]
    assert hs.list_members(portal, target.list_id) == [ada.id]
    page = crm_lists.memberships_api.get_page(target.list_id, _request_timeout=TIMEOUT)
    assert [m.record_id for m in page.results] == [ada.id]


def test_hubspot_dynamic_list_refuses_membership_changes(hs: FakeHubSpot, portal: int) -> None:
    ada = hs.add_contact(portal, "ada@acme.test")
    dynamic = hs.add_list(portal, "Everyone", processing_type="DYNAMIC")
    memberships = hubspot_client(hs, hs.issue_token(portal)).crm.lists.memberships_api

    with pytest.raises(lists.ApiException) as raised:
        memberships.add(dynamic.list_id, [ada.id], _request_timeout=TIMEOUT)

    assert raised.value.status == 400
    assert error_body(raised.value)["category"] == "VALIDATION_ERROR"
    assert hs.list_members(portal, dynamic.list_id) == []


def test_hubspot_task_with_associations_and_lookup_by_custom_property(
    hs: FakeHubSpot, portal: int, clock: ManualClock
) -> None:
    hs.search_lag = 2.0
    hs.define_property(portal, "tasks", "plg_action_run_id")
    contact, company = hs.add_contact(portal, "ada@acme.test"), hs.add_company(portal, "Acme", "acme.test")
    tasks_api = hubspot_client(hs, hs.issue_token(portal)).crm.objects.tasks
    task = tasks.SimplePublicObjectInputForCreate(
        properties={"hs_timestamp": "2026-05-06T10:00:00Z", "hs_task_subject": "Call Ada", "plg_action_run_id": "r-1"},
        associations=[
            tasks.PublicAssociationsForObject(
                to=tasks.PublicObjectId(id=to_id),
                types=[tasks.AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=type_id)],
            )
            for to_id, type_id in ((contact.id, 204), (company.id, 192))
        ],
    )

    created = tasks_api.basic_api.create(task, _request_timeout=TIMEOUT)

    fetched = tasks_api.basic_api.get_by_id(
        created.id, associations=["contacts", "companies"], _request_timeout=TIMEOUT
    )
    assert fetched.associations["contacts"].results[0].id == contact.id
    assert fetched.associations["companies"].results[0].type == "task_to_company"
    by_run = tasks.PublicObjectSearchRequest(
        filter_groups=[{"filters": [{"propertyName": "plg_action_run_id", "operator": "EQ", "value": "r-1"}]}],
        properties=["hs_task_subject"],
    )
    assert tasks_api.search_api.do_search(by_run, _request_timeout=TIMEOUT).total == 0  # not indexed yet
    clock.advance(2.0)
    [hit] = tasks_api.search_api.do_search(by_run, _request_timeout=TIMEOUT).results
    assert (hit.id, hit.properties["hs_task_subject"]) == (created.id, "Call Ada")


def test_hubspot_task_without_hs_timestamp_is_rejected(hs: FakeHubSpot, portal: int) -> None:
    tasks_api = hubspot_client(hs, hs.issue_token(portal)).crm.objects.tasks.basic_api

    with pytest.raises(tasks.ApiException) as raised:
        tasks_api.create(
            tasks.SimplePublicObjectInputForCreate(properties={"hs_task_subject": "No time"}), _request_timeout=TIMEOUT
        )

    assert raised.value.status == 400
    body = error_body(raised.value)
    assert body["category"] == "VALIDATION_ERROR"
    assert "hs_timestamp" in body["message"]
    assert hs.objects(portal, "tasks") == []


def test_hubspot_owner_by_email(hs: FakeHubSpot, portal: int) -> None:
    rep = hs.add_owner(portal, "rep@acme.test", "Rita", "Rep")
    hs.add_owner(portal, "other@acme.test")
    owners = hubspot_client(hs, hs.issue_token(portal)).crm.owners.owners_api

    page = owners.get_page(email="REP@acme.test", _request_timeout=TIMEOUT)

    assert [(o.id, o.email, o.type) for o in page.results] == [(rep.id, "rep@acme.test", "PERSON")]


def test_hubspot_bad_and_expired_tokens_answer_401(hs: FakeHubSpot, portal: int, clock: ManualClock) -> None:
    with pytest.raises(contacts.ApiException) as bad:
        hubspot_client(hs, "pat-na1-not-a-token").crm.contacts.basic_api.get_by_id("1", _request_timeout=TIMEOUT)
    assert bad.value.status == 401
    assert error_body(bad.value)["category"] == "INVALID_AUTHENTICATION"

    token = hs.issue_token(portal, expires_in=1800)
    clock.advance(1801)
    with pytest.raises(contacts.ApiException) as expired:
        hubspot_client(hs, token).crm.contacts.basic_api.get_by_id("1", _request_timeout=TIMEOUT)
    assert expired.value.status == 401
    assert error_body(expired.value)["category"] == "EXPIRED_AUTHENTICATION"


def test_hubspot_missing_scope_answers_403(hs: FakeHubSpot, portal: int) -> None:
    crm_lists = hubspot_client(hs, hs.issue_token(portal, scopes=["crm.lists.read"])).crm.lists
    target = hs.add_list(portal, "PQLs")

    with pytest.raises(lists.ApiException) as raised:
        crm_lists.memberships_api.add(target.list_id, ["1"], _request_timeout=TIMEOUT)

    assert raised.value.status == 403
    body = error_body(raised.value)
    assert body["category"] == "MISSING_SCOPES"
    assert body["errors"][0]["context"]["requiredGranularScopes"] == ["crm.lists.write"]


def test_hubspot_429_names_the_policy_and_sets_retry_after(hs: FakeHubSpot, portal: int) -> None:
    crm = hubspot_client(hs, hs.issue_token(portal)).crm
    hs.fail_next("rate_limit", retry_after=10, path="/crm/v3/objects/contacts/*")
    hs.fail_next("rate_limit", retry_after=1, path="*/search")

    with pytest.raises(contacts.ApiException) as ten_secondly:
        crm.contacts.basic_api.get_by_id("1", _request_timeout=TIMEOUT)
    with pytest.raises(companies.ApiException) as secondly:  # each sub-package has its own ApiException class
        crm.companies.search_api.do_search(companies.PublicObjectSearchRequest(limit=1), _request_timeout=TIMEOUT)

    assert (ten_secondly.value.status, ten_secondly.value.headers["Retry-After"]) == (429, "10")
    assert error_body(ten_secondly.value)["policyName"] == "TEN_SECONDLY_ROLLING"
    assert error_body(ten_secondly.value)["errorType"] == "RATE_LIMIT"
    assert (secondly.value.status, error_body(secondly.value)["policyName"]) == (429, "SECONDLY")
    assert [r.client_key for r in hs.requests()] == [f"portal:{portal}", f"portal:{portal}:search"]


def test_hubspot_default_urllib3_retry_obeys_retry_after_by_resending(hs: FakeHubSpot, portal: int) -> None:
    """Why the recipe turns retries off: by default urllib3 silently re-sends an idempotent call after a 429."""
    hs.add_contact(portal, "ada@acme.test")
    default = hubspot.Client.create(access_token=hs.issue_token(portal), host=hs.url, base_url=hs.url)
    hs.fail_next("rate_limit", retry_after=0)

    found = default.crm.contacts.basic_api.get_by_id("ada@acme.test", id_property="email", _request_timeout=TIMEOUT)

    assert found.properties["email"] == "ada@acme.test"
    assert [r.status for r in hs.requests()] == [429, 200]
    hs.assert_retry_after_respected()


def test_hubspot_request_timeout_against_a_hanging_endpoint(hs: FakeHubSpot, portal: int) -> None:
    owners = hubspot_client(hs, hs.issue_token(portal)).crm.owners.owners_api
    hs.set_faults(hang_fraction=1.0, hang_seconds=3, path="/crm/v3/owners/")

    with pytest.raises(ReadTimeoutError):
        owners.get_page(email="rep@acme.test", _request_timeout=0.5)

    assert [(r.path, r.fault) for r in hs.requests()] == [("/crm/v3/owners/", "hang")]


def test_hubspot_call_that_timed_out_may_still_have_been_applied(hs: FakeHubSpot, portal: int) -> None:
    tasks_api = hubspot_client(hs, hs.issue_token(portal)).crm.objects.tasks.basic_api
    hs.fail_next("hang", seconds=0.5, path="/crm/v3/objects/tasks")
    task = tasks.SimplePublicObjectInputForCreate(properties={"hs_timestamp": "1767225600000", "hs_task_subject": "x"})

    with pytest.raises(ReadTimeoutError):
        tasks_api.create(task, _request_timeout=0.2)

    assert hs.wait_until_answered(timeout=TIMEOUT)
    [stored] = hs.objects(portal, "tasks")
    assert stored.properties["hs_timestamp"] == "2026-01-01T00:00:00.000Z"


def test_hubspot_oauth_code_exchange_and_refresh(hs: FakeHubSpot, portal: int) -> None:
    app = hs.add_app(redirect_uri="https://plg.test/hubspot/callback")
    code = hs.issue_oauth_code(app.client_id, portal, redirect_uri=app.redirect_uri)
    tokens_api = hubspot_client(hs, "").oauth.tokens_api
    credentials = {"client_id": app.client_id, "client_secret": app.client_secret}

    granted = tokens_api.create(
        grant_type="authorization_code", code=code, redirect_uri=app.redirect_uri, **credentials
    )
    refreshed = tokens_api.create(grant_type="refresh_token", refresh_token=granted.refresh_token, **credentials)

    assert granted.expires_in == refreshed.expires_in == 1800
    assert refreshed.refresh_token == granted.refresh_token
    assert refreshed.access_token != granted.access_token
    owners = hubspot_client(hs, refreshed.access_token).crm.owners.owners_api
    assert owners.get_page(_request_timeout=TIMEOUT).results == []
    with pytest.raises(oauth.ApiException) as reused:
        tokens_api.create(grant_type="authorization_code", code=code, redirect_uri=app.redirect_uri, **credentials)
    assert reused.value.status == 400
    assert error_body(reused.value)["status"] == "BAD_AUTH_CODE"
