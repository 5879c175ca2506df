"""Secrets never reach the logs (issue 8): API keys, passwords, provider tokens and webhook secrets, through the
paths that handle them — key creation, authenticated API and ingestion calls, a refused key, sign-in (right and
wrong), a connection made and tested with a token, and a failing provider call."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.conftest import TenantWorld
from tests.factories import PASSWORD
from tests.fakes.slack import FakeSlack


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {record.__dict__!r}")


@pytest.fixture
def logs() -> Iterator[Everything]:
    handler, root = Everything(), logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("django", "django.request", "plgapp", "integrations", "signals")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.mark.django_db
def test_keys_passwords_and_tokens_stay_out_of_the_logs(
    tenant_a: TenantWorld, logs: Everything, secret_client: Callable[[TenantWorld], APIClient], settings: Any
) -> None:
    api = secret_client(tenant_a)
    created = api.post("/api/v1/api-keys/", {"name": "CI", "kind": "secret"}, format="json").json()
    new_key = created["key"]
    assert APIClient().get("/api/v1/tenant/", HTTP_AUTHORIZATION=f"Bearer {new_key}").status_code == 200
    APIClient().get("/api/v1/tenant/", HTTP_AUTHORIZATION="Bearer plg_sk_notarealkeybutlookslikeonex")
    ingest = APIClient().post("/api/journy/track", {"userId": "u1", "event": "e", "properties": {}}, format="json",
                              HTTP_X_API_KEY=tenant_a.write_key)  # fmt: skip
    assert ingest.status_code < 500
    Client().post("/login/", {"username": "admin@tenant-a.test", "password": "wrong-Pass-123"})
    Client().post("/login/", {"username": "admin@tenant-a.test", "password": PASSWORD})
    with FakeSlack() as slack:
        settings.SLACK_API_URL = slack.url + "/api/"
        token = slack.issue_bot_token(slack.add_workspace().team_id)
        made = api.post("/api/v1/connections/", {"provider": "slack", "name": "S", "credentials": {"bot_token": token}},
                        format="json").json()  # fmt: skip
        slack.revoke_token(token)
        api.post(f"/api/v1/connections/{made['id']}/test")
    secret = "a-webhook-signing-secret-0123456789"
    api.post("/api/v1/connections/", {"provider": "webhook", "name": "W",
                                      "credentials": {"url": "http://127.0.0.1:9/hook", "secret": secret}},
             format="json")  # fmt: skip

    assert logs.lines, "nothing was logged: the capture is broken"
    text = "\n".join(logs.lines)
    for value in (new_key, tenant_a.secret_key, tenant_a.write_key, PASSWORD, "wrong-Pass-123", token, secret,
                  "plg_sk_notarealkeybutlookslikeonex"):  # fmt: skip
        assert value not in text, f"a secret reached the logs: {value[:10]}…"
