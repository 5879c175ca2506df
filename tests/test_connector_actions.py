"""Playbook actions through the connectors (issue 6): `slack.send_message` and `webhook.post` driven by the
engine against the fake Slack (official SDK) and a local webhook receiver — personal templates rendered once
and stored, colours, 429s rescheduled at Retry-After without an attempt and honoured by every later call,
one message per second per channel, a revoked token breaking the connection, sandbox connections recording
instead of sending, templates refused at save time when they name what the tenant never sent."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings

from integrations.clients import SIGNATURE_HEADER, TIMESTAMP_HEADER
from integrations.models import Connection, ConnectionStatus, SandboxCall
from integrations.services import connection_create
from playbooks.models import ActionRun, RunStatus
from playbooks.services import PlaybookInvalid, leases_recover, playbook_create, playbook_evaluate
from plgapp.roles import Role
from tests.conftest import TenantWorld
from tests.fakes.server import FakeServer, Response
from tests.fakes.slack import FakeSlack
from tests.test_playbook_engine import T0, account_id, active_playbook, deliver, score, user_id
from tests.test_playbook_engine import pqa_world as pqa_world

SECRET = "a-webhook-secret-of-some-length"
MESSAGE = "{{ account.name }} is a PQA at {{ account.score.conversion | percent }}: {{ account.url }}"


def slack_playbook(text: str = MESSAGE, **params: Any) -> dict[str, Any]:
    return {
        "object": "account",
        "entry": {"all": [{"field": "account.stage", "op": "eq", "value": "Trial"},
                          {"field": "account.score.conversion", "op": "gt", "value": 0.75}]},
        "actions": [{"id": "notify", "type": "slack.send_message",
                     "params": {"channel": "#sales", "text": text, "color": "good", **params}}],
        "goal": {"field": "account.stage", "op": "eq", "value": "Customer"},
        "timeout": {"days": 21},
    }  # fmt: skip


@pytest.fixture(autouse=True)
def no_leftover_limits() -> None:
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    for key in client.scan_iter("plg:limits:*"):
        client.delete(key)


@pytest.fixture
def slack(settings: Any) -> Iterator[tuple[FakeSlack, str, str]]:
    """The fake Slack with a workspace, a #sales channel and a bot token: (fake, token, channel id)."""
    with FakeSlack() as fake:
        settings.SLACK_API_URL = fake.url + "/api/"
        settings.PUBLIC_URL = "https://plg.example"
        workspace = fake.add_workspace("Acme Corp")
        channel = fake.add_channel(workspace.team_id, "sales")
        yield fake, fake.issue_bot_token(workspace.team_id), channel.id


def connect_slack(world: TenantWorld, token: str) -> Connection:
    return connection_create(tenant=world.tenant, provider="slack", name="Slack", mode="live",
                             credentials={"bot_token": token}, settings={}, now=T0)  # fmt: skip


def runs(world: TenantWorld) -> list[ActionRun]:
    return list(ActionRun.objects.for_tenant(world.tenant).order_by("pk"))


@pytest.mark.django_db
def test_a_pqa_gets_a_personal_coloured_slack_message_rendered_once_and_stored(
    pqa_world: TenantWorld, slack: tuple[FakeSlack, str, str]
) -> None:
    fake, token, channel = slack
    connect_slack(pqa_world, token)
    playbook_id = active_playbook(pqa_world, slack_playbook())
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=playbook_id, now=T0)
    assert deliver(pqa_world, T0) == [RunStatus.SUCCEEDED]

    (message,) = fake.messages(channel)
    acme = account_id(pqa_world, "acme")
    expected = f"Acme is a PQA at 90%: https://plg.example/t/{pqa_world.slug}/accounts/{acme}/"
    assert message.text == expected  # top-level text always
    assert message.colors == ["good"]
    (run,) = runs(pqa_world)
    assert run.request["text"] == expected  # what every retry would send
    assert run.response["ts"] == message.ts


@pytest.mark.django_db
def test_templates_naming_what_the_tenant_never_sent_are_refused_when_saving(pqa_world: TenantWorld) -> None:
    for text, problem in (("{{ account.properties.plann }}", "plann"), ("{{ acount.name }}", "acount"),
                          ("{{ account.name", "line 1"), ("{{ ''.__class__ }}", "not allowed")):  # fmt: skip
        with pytest.raises(PlaybookInvalid) as refused:
            playbook_create(tenant=pqa_world.tenant, name="x", definition=slack_playbook(text), created_by=None,
                            now=T0)  # fmt: skip
        assert problem in refused.value.fields["definition.actions.0.params.text"]
    with pytest.raises(PlaybookInvalid) as refused:
        playbook_create(tenant=pqa_world.tenant, name="x", definition=slack_playbook(color="pink"), created_by=None,
                        now=T0)  # fmt: skip
    assert "definition.actions.0.params.color" in refused.value.fields
    # A property the tenant sends is fine, and so is a membership's role.
    playbook_create(
        tenant=pqa_world.tenant,
        name="ok",
        created_by=None,
        now=T0,
        definition=slack_playbook("{{ account.properties.name }} / {{ membership.role | default('') }}"),
    )


@pytest.mark.django_db
def test_a_429_reschedules_at_retry_after_without_an_attempt_and_holds_every_call_until_then(
    pqa_world: TenantWorld, slack: tuple[FakeSlack, str, str]
) -> None:
    fake, token, channel = slack
    connect_slack(pqa_world, token)
    score(pqa_world, "conversion", "account", account_id(pqa_world, "beta"), 0.8)  # two PQAs now
    playbook_id = active_playbook(pqa_world, slack_playbook())
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=playbook_id, now=T0)
    fake.fail_next("rate_limit", retry_after=2, path="/api/chat.postMessage")

    statuses = deliver(pqa_world, T0)

    assert statuses == [RunStatus.FAILED, RunStatus.FAILED]  # the 429, then held by the shared cooldown
    assert len(fake.requests(path="/api/chat.postMessage")) == 1  # the second never reached Slack
    for run in runs(pqa_world):
        assert run.attempts == 0  # a 429 uses no attempt
        assert run.next_attempt_at is not None
        assert run.next_attempt_at >= T0 + timedelta(seconds=1)
    time.sleep(2.1)
    later = T0 + timedelta(seconds=3)
    assert deliver(pqa_world, later).count(RunStatus.SUCCEEDED) == 1  # one per second in a channel
    time.sleep(1.1)
    assert deliver(pqa_world, later + timedelta(seconds=2)) == [RunStatus.SUCCEEDED]
    assert len(fake.messages(channel)) == 2
    fake.assert_retry_after_respected()


@pytest.mark.django_db
def test_a_revoked_token_kills_the_run_breaks_the_connection_and_stops_later_calls(
    pqa_world: TenantWorld, slack: tuple[FakeSlack, str, str]
) -> None:
    fake, token, _channel = slack
    connection = connect_slack(pqa_world, token)
    score(pqa_world, "conversion", "account", account_id(pqa_world, "beta"), 0.8)
    playbook_id = active_playbook(pqa_world, slack_playbook())
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=playbook_id, now=T0)
    fake.revoke_token(token)

    assert deliver(pqa_world, T0) == [RunStatus.DEAD, RunStatus.DEAD]

    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.BROKEN
    assert "token_revoked" in connection.last_error
    assert len(fake.requests(path="/api/chat.postMessage")) == 1  # the second run saw the broken connection
    assert all("Broken" in run.error for run in runs(pqa_world))


@pytest.mark.django_db
def test_a_sandbox_connection_records_what_would_have_been_sent(pqa_world: TenantWorld, secret_client: Any) -> None:
    connection_create(tenant=pqa_world.tenant, provider="slack", name="Demo", mode="sandbox", credentials={},
                      settings={}, now=T0)  # fmt: skip
    playbook_id = active_playbook(pqa_world, slack_playbook())
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=playbook_id, now=T0)

    assert deliver(pqa_world, T0) == [RunStatus.SUCCEEDED]

    (call,) = SandboxCall.objects.for_tenant(pqa_world.tenant)
    assert call.operation == "chat.postMessage"
    assert call.request["text"].startswith("Acme is a PQA at 90%")
    assert call.request["attachments"][0]["color"] == "good"
    listed = secret_client(pqa_world).get("/api/v1/connections/sandbox-calls/").json()["results"]
    assert [item["id"] for item in listed] == [call.pk]


@pytest.mark.django_db
def test_a_webhook_gets_a_signed_payload_with_rendered_data_and_is_retried_after_a_5xx(
    pqa_world: TenantWorld,
) -> None:
    with FakeServer() as receiver:
        receiver.route("POST", r"/hooks", lambda request, params: Response(200, {"ok": True}))
        credentials = {"url": receiver.url + "/hooks", "secret": SECRET}
        connection_create(tenant=pqa_world.tenant, provider="webhook", name="Hook", mode="live",
                          credentials=credentials, settings={}, now=T0)  # fmt: skip
        definition = slack_playbook()
        headline = "{{ account.name }} ({{ account.score.conversion | percent }})"
        params = {"event": "pqa.qualified", "data": {"headline": headline}}
        definition["actions"] = [{"id": "hook", "type": "webhook.post", "params": params}]
        playbook_id = active_playbook(pqa_world, definition)
        playbook_evaluate(tenant=pqa_world.tenant, playbook_id=playbook_id, now=T0)
        receiver.fail_next("server_error", path="/hooks")

        assert deliver(pqa_world, T0) == [RunStatus.FAILED]
        (run,) = runs(pqa_world)
        assert run.attempts == 1
        assert deliver(pqa_world, T0 + timedelta(minutes=10)) == [RunStatus.SUCCEEDED]

        first, second = receiver.requests(path="/hooks")
        assert first.raw_body == second.raw_body  # the same payload: prepared once
        body = second.body
        assert body["event"] == "pqa.qualified"
        assert body["data"] == {"headline": "Acme (90%)"}
        assert body["idempotency_key"] == f"run-{run.pk}"
        timestamp = second.header(TIMESTAMP_HEADER)
        assert timestamp is not None
        digest = hmac.new(SECRET.encode(), timestamp.encode() + b"." + second.raw_body, hashlib.sha256).hexdigest()
        assert second.header(SIGNATURE_HEADER) == f"sha256={digest}"


@pytest.mark.django_db
def test_a_template_previews_for_a_chosen_account_and_user_and_explains_mistakes(
    pqa_world: TenantWorld, tenant_b: TenantWorld, secret_client: Any, member_client: Any, settings: Any
) -> None:
    settings.PUBLIC_URL = "https://plg.example"
    url = "/api/v1/playbooks/template-preview"
    acme, alice = account_id(pqa_world, "acme"), user_id(pqa_world, "alice@acme.test")
    template = "{{ user.email }} ({{ membership.role }}) at {{ account.name }}: "
    template += "{{ account.score.conversion | percent }}"
    client = secret_client(pqa_world)

    answer = client.post(url, {"template": template, "account": acme, "user": alice}, format="json")

    assert answer.status_code == 200, answer.content
    assert answer.json() == {"text": "alice@acme.test (Owner) at Acme: 90%"}
    mistake = client.post(url, {"template": "{{ account.nmae }}", "account": acme}, format="json")
    assert mistake.status_code == 400
    assert "nmae" in mistake.json()["error"]["fields"]["template"]
    assert secret_client(tenant_b).post(url, {"template": "hi", "account": acme}, format="json").status_code == 404
    sales = member_client(pqa_world.tenant, Role.SALES)
    assert sales.post(f"/t/{pqa_world.slug}/api/v1/playbooks/template-preview", {"template": "hi"},
                      content_type="application/json").status_code == 403  # fmt: skip


def _die_mid_post(world: TenantWorld, *, posted: bool, fake: FakeSlack) -> ActionRun:
    """A worker claimed the run, stored its request and died before recording the answer (SIGKILL): with the
    message at Slack (`posted`) or before it left."""
    from playbooks import actions as action_types
    from playbooks.selectors import action_context

    (run,) = runs(world)
    action_type = action_types.get(run.action_type)
    assert action_type is not None
    assert action_type.prepare is not None
    request = action_type.prepare(action_context(tenant=world.tenant, run=run))
    if posted:
        action_type.send(request, action_context(tenant=world.tenant, run=run))
    ActionRun.objects.for_tenant(world.tenant).filter(pk=run.pk).update(
        status=RunStatus.SENDING, attempts=1, request=request, lease_until=T0 + timedelta(seconds=1)
    )
    return run


@pytest.mark.django_db
def test_a_worker_killed_after_slack_took_the_message_is_confirmed_not_reposted(
    pqa_world: TenantWorld, slack: tuple[FakeSlack, str, str]
) -> None:
    # Given a worker died after Slack took the message, before the run was marked done (found by the chaos suite)
    fake, token, channel = slack
    connect_slack(pqa_world, token)
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=active_playbook(pqa_world, slack_playbook()), now=T0)
    run = _die_mid_post(pqa_world, posted=True, fake=fake)

    # When its lease expires and the sweep recovers it
    later = T0 + timedelta(minutes=5)
    leases_recover(tenant=pqa_world.tenant, now=later)
    deliver(pqa_world, later)

    # Then Slack is asked (the run's marker is in the message's metadata) and the run succeeds without a repost
    (message,) = fake.messages(channel)
    run.refresh_from_db()
    assert (run.status, run.response["ts"], run.response["confirmed"]) == (RunStatus.SUCCEEDED, message.ts, True)


@pytest.mark.django_db
def test_a_worker_killed_before_the_message_left_is_sent_once_after_recovery(
    pqa_world: TenantWorld, slack: tuple[FakeSlack, str, str]
) -> None:
    # Given a worker died after storing the request, before the post reached Slack
    fake, token, channel = slack
    connect_slack(pqa_world, token)
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=active_playbook(pqa_world, slack_playbook()), now=T0)
    run = _die_mid_post(pqa_world, posted=False, fake=fake)

    # When its lease expires and the sweep recovers it
    later = T0 + timedelta(minutes=5)
    leases_recover(tenant=pqa_world.tenant, now=later)
    deliver(pqa_world, later)

    # Then Slack has no trace of it, so it is posted: once (before, it ended dead — a missing message)
    assert len(fake.messages(channel)) == 1
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED


@pytest.mark.django_db
def test_a_post_slack_took_without_answering_in_time_is_confirmed_on_its_retry_not_reposted(
    pqa_world: TenantWorld, slack: tuple[FakeSlack, str, str], settings: Any
) -> None:
    # Given Slack takes a post but answers after the client gave up (found by the chaos suite's storm: the run ended
    # dead while the message was in the channel)
    fake, token, channel = slack
    settings.INTEGRATION_TIMEOUT_SECONDS, settings.PLAYBOOK_CONFIRM_DELAY_SECONDS = 1, 30
    connect_slack(pqa_world, token)
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=active_playbook(pqa_world, slack_playbook()), now=T0)
    fake.fail_next("hang", seconds=1.5, path="/api/chat.postMessage")

    # When the post times out, and the retry comes after the confirm delay
    assert deliver(pqa_world, T0) == [RunStatus.FAILED]
    (run,) = runs(pqa_world)
    assert run.next_attempt_at == T0 + timedelta(seconds=30)
    assert fake.wait_until_answered(timeout=5)
    assert deliver(pqa_world, T0 + timedelta(seconds=31)) == [RunStatus.SUCCEEDED]

    # Then the retry found the message by its marker and did not post again
    assert len(fake.messages(channel)) == 1
    assert len(fake.requests(path="/api/chat.postMessage")) == 1
    run.refresh_from_db()
    assert run.response["confirmed"] is True
