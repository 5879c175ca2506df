"""Bad input at the ingestion edge (issue 8) — the cases the journy.io and Segment suites do not already cover:
NaN / Infinity literals, lone surrogates, deep nesting, a 1.1 MB body, a chunked body without Content-Length (over
a real socket), two keys of different tenants on one request, and another tenant's ids inside a body. Each is a
clear 4xx, quickly, and nothing is stored."""

from __future__ import annotations

import base64
import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from accounts.models import Account, EndUser
from signals.models import Event
from tests.conftest import TenantWorld

TRACK = {"identification": {"user": {"userId": "u1"}}, "name": "clicked"}


def stored(world: TenantWorld) -> tuple[int, int, int]:
    tenant = world.tenant
    return (Event.objects.for_tenant(tenant).count(), EndUser.objects.for_tenant(tenant).count(),
            Account.objects.for_tenant(tenant).count())  # fmt: skip


def post(world: TenantWorld, path: str, raw: bytes | str, **headers: Any) -> Any:
    client = Client(HTTP_X_API_KEY=world.write_key)
    began = time.monotonic()
    response = client.post(path, raw, content_type="application/json", **headers)
    assert time.monotonic() - began < 2, "bad input is refused quickly"
    return response


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("raw", "hint"),
    [
        ('{"identification": {"user": {"userId": "u1"}}, "name": "x", "metadata": {"n": NaN}}', "NaN"),
        ('{"identification": {"user": {"userId": "u1"}}, "name": "x", "metadata": {"n": Infinity}}', "Infinity"),
        ('{"identification": {"user": {"userId": "u1"}}, "name": "x", "metadata": {"n": -Infinity}}', "Infinity"),
        ('{"identification": {"user": {"userId": "u1"}}, "name": "\\ud800x"}', "surrogate"),
        ('{"identification": {"user": {"userId": "u1"}}, "name": "x", "metadata": {"s": "a\\udfffb"}}', "surrogate"),
        (
            '{"identification": {"user": {"userId": "u1"}}, "name": "x", "metadata": ' + "[" * 300 + "]" * 300 + "}",
            "nest",
        ),
    ],
    ids=["nan", "infinity", "minus-infinity", "lone-high-surrogate", "lone-low-surrogate", "deep-nesting"],
)
def test_json_that_is_not_portable_is_refused_with_a_400_that_says_why(
    tenant_a: TenantWorld, raw: str, hint: str
) -> None:
    response = post(tenant_a, "/api/journy/track", raw)

    assert response.status_code == 400, response.content
    message = json.dumps(response.json()).lower()
    assert hint.lower() in message or "line 1, column" in message, message  # what, or exactly where
    assert stored(tenant_a) == (0, 0, 0)


@pytest.mark.django_db
def test_a_body_over_one_megabyte_is_413_and_nothing_of_it_is_stored(tenant_a: TenantWorld) -> None:
    calls = [{"type": "track", **TRACK, "metadata": {"pad": "x" * 1_100}} for _ in range(1_000)]  # ~1.2 MB

    response = post(tenant_a, "/api/journy/batch", json.dumps({"calls": calls}))

    assert response.status_code == 413
    assert stored(tenant_a) == (0, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_without_content_length_is_read_or_refused_cleanly_over_a_real_socket(
    tenant_a: TenantWorld, live_server: Any
) -> None:
    """Transfer-Encoding: chunked, no Content-Length: a WSGI server must not hang or half-read it."""
    host = urlsplit(live_server.url)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
    body = json.dumps(TRACK).encode()
    connection.putrequest("POST", "/api/journy/track")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.putheader("X-Api-Key", tenant_a.write_key)
    connection.endheaders()
    connection.send(f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    began = time.monotonic()
    response = connection.getresponse()
    answer = json.loads(response.read() or b"{}")

    assert time.monotonic() - began < 5
    assert response.status in (201, 400, 411), answer  # stored whole, or refused saying why — never half
    if response.status == 201:
        assert stored(tenant_a)[0] == 1
    else:
        assert stored(tenant_a) == (0, 0, 0)
        assert answer.get("message")


@pytest.mark.django_db
def test_two_keys_of_different_tenants_on_one_request_are_refused(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    basic = base64.b64encode(f"{tenant_b.write_key}:".encode()).decode()

    response = post(tenant_a, "/api/journy/track", json.dumps(TRACK), HTTP_AUTHORIZATION=f"Basic {basic}")

    assert response.status_code == 401, response.content
    assert stored(tenant_a) == (0, 0, 0)
    assert stored(tenant_b) == (0, 0, 0)


@pytest.mark.django_db
def test_another_tenants_ids_inside_a_body_name_nothing_of_theirs(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    from rest_framework.test import APIClient

    account = Account.objects.for_tenant(tenant_a.tenant).create(external_id="alpha", name="Alpha")
    as_b = APIClient()
    as_b.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_b.secret_key}")

    preview = as_b.post("/api/v1/playbooks/template-preview", {"template": "{{ account.name }}",
                                                              "account": account.pk}, format="json")  # fmt: skip
    disposition = as_b.post(f"/api/v1/pqls/{account.pk}/disposition", {"outcome": "done"}, format="json")

    assert preview.status_code == 404
    assert "Alpha" not in preview.content.decode()
    assert disposition.status_code == 404
    assert Account.objects.for_tenant(tenant_a.tenant).get().name == "Alpha"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "when", ["2026-01-10T08:00:00+22:47", "0001-01-01T00:00:00+05:00"], ids=["offset-over-15:59", "utc-year-0"]
)
def test_a_time_postgresql_or_python_cannot_hold_is_a_400_and_nothing_is_stored(
    tenant_a: TenantWorld, when: str
) -> None:
    # Found by schemathesis: both used to reach the database (a 500, and a batch of 500s).
    single = post(tenant_a, "/api/journy/track", json.dumps({**TRACK, "triggeredAt": when}))
    batch = post(
        tenant_a, "/api/journy/batch", json.dumps({"calls": [{"type": "track", **TRACK, "triggeredAt": when}]})
    )

    assert single.status_code == 400, single.content
    assert "triggeredAt" in single.json()["errors"]["fields"]
    assert batch.status_code == 400, batch.content
    assert stored(tenant_a) == (0, 0, 0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/api/v1/connections/", {"provider": "slack", "name": "x", "mode": "sandbox",
                                          "settings": {"channel": "a\u0000b"}}, "settings.channel"),
        ("put", "/api/v1/scoring/config/", {"stages": {"trial": ["Tri\u0000al"]}}, "stages.trial.0"),
        ("post", "/api/v1/playbooks/", {"name": "p", "definition": {"object": "account", "entry": {
            "field": "account.stage", "op": "eq", "value": "\u0000"}}}, "definition.entry.value"),
    ],
    ids=["connection-settings", "scoring-config", "playbook-definition"],
)  # fmt: skip
def test_a_nul_character_anywhere_in_a_management_body_is_a_400_and_nothing_is_written(
    tenant_a: TenantWorld, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    # Found while following up schemathesis: jsonb cannot hold \u0000, so these reached the database (a 500).
    from rest_framework.test import APIClient

    from integrations.models import Connection
    from playbooks.models import Playbook

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_a.secret_key}")

    response = getattr(client, method)(path, body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error"]["fields"] == {field: "must not contain NUL characters (\\u0000)"}
    assert not Connection.objects.for_tenant(tenant_a.tenant).exists()
    assert not Playbook.objects.for_tenant(tenant_a.tenant).exists()


def test_the_nesting_limit_counts_containers_exactly_whatever_their_mix_and_width() -> None:
    from signals.http import MAX_JSON_DEPTH, _deeper_than

    def nested(depth: int) -> object:
        value: object = "leaf"
        for level in range(depth):
            value = {"k": value, "n": 1, "t": "x"} if level % 2 else [value, 2, "y"]
        return value

    assert not _deeper_than(nested(MAX_JSON_DEPTH), MAX_JSON_DEPTH)
    assert _deeper_than(nested(MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH)
    assert not _deeper_than({"calls": [{"metadata": {str(n): n for n in range(50)}} for _ in range(1_000)]}, 4)
    assert _deeper_than({"calls": [{}] * 999 + [{"a": {}}]}, 3)  # the one deep call among many flat ones
    assert not _deeper_than("scalar", 0)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(alphabet='ab[]{}"\\ \u00e9\n', max_size=6)
    | st.text(alphabet="[]{}", max_size=4),  # brackets in strings, and nothing that needs an escape
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(alphabet='k[]{}"\\', max_size=3), children, max_size=3)
    ),
    max_leaves=40,
)


@given(value=JSON_VALUES, limit=st.integers(min_value=0, max_value=12), indent=st.booleans())
@settings(max_examples=1_000, deadline=None)
def test_the_nesting_limit_read_from_the_json_text_agrees_with_the_walk(value: object, limit: int,
                                                                        indent: bool) -> None:  # fmt: skip
    """Brackets and quotes inside strings, escapes and whitespace between tokens never fool the text's reading."""
    from signals.http import _deeper_than, json_deeper_than

    raw = orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)

    assert json_deeper_than(raw, orjson.loads(raw), limit) == _deeper_than(value, limit)


def test_the_nesting_limit_read_from_the_json_text_is_exact_at_the_limit() -> None:
    from signals.http import MAX_JSON_DEPTH, json_deeper_than

    for depth in (MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1):
        for opener, closer in (("[", "]"), ('{"a":', "}"), ('[{"b":', "}]")):
            raw = (opener * depth + "1" + closer * depth).encode()
            value = orjson.loads(raw)
            real_depth = depth * (2 if opener.startswith("[{") else 1)
            assert json_deeper_than(raw, value, MAX_JSON_DEPTH) == (real_depth > MAX_JSON_DEPTH), (opener, depth)
    # Brackets in strings that would close a real container early and open one again later: depth 3, not 1.
    raw = b'[{"k0":"}","k1":{"k0":1},"k2":"{"}]'
    assert json_deeper_than(raw, orjson.loads(raw), 2)
