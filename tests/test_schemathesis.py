"""Property-based tests of the REST API against its own OpenAPI schema (`/api/schema/`, drf-spectacular).

schemathesis generates requests from the schema for every operation of the management API (secret key) and the
ingestion APIs (write key), valid and invalid ones, and runs them in-process through the WSGI app against a
tenant that has one of everything (so routes with an id reach real objects too). Every answer must be no
server error, and its status code, content type and body must be what the schema says. A second test calls
every operation without credentials, with the other API's key and with a revoked key: 401 or 403, never an
answer.

Bounded and repeatable: a fixed seed, derandomized Hypothesis, a few examples per operation, no network.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import Account, EndUser, Membership
from integrations.models import SandboxCall
from integrations.services import connection_create
from playbooks.models import ActionRun, Enrollment, Playbook, PlaybookVersion
from plgapp.keys import KeyKind
from plgapp.services import api_key_create, api_key_revoke
from plgapp.wsgi import application
from scoring.models import ModelVersion, Score
from signals.models import Event, Signal
from tests.conftest import TenantWorld

SEED = 20260131
# Examples per operation (Hypothesis' max_examples); PLG_SCHEMATHESIS_EXAMPLES=200 digs deeper in a local run.
EXAMPLES = int(os.environ.get("PLG_SCHEMATHESIS_EXAMPLES", "20"))
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "mode": "all",  # valid requests and invalid ones (which must be refused with a documented 4xx)
            "max-examples": EXAMPLES,
            "deterministic": True,
            "database": "none",
            "with-security-parameters": False,  # the test sends the real keys itself
        },
        # examples (the schema's), coverage (boundary values, other methods), fuzzing; no stateful phase.
        "phases": {"stateful": {"enabled": False}},
        "operations": [
            # The signed-in mirror of /api/v1/ (same views, tenant from the URL): fewer, fuzzed examples only.
            {"include-path-regex": "^/t/", "phases": {"coverage": {"enabled": False}},
             "generation": {"max-examples": max(EXAMPLES // 4, 1)}},
        ],
    }
)  # fmt: skip
schema = schemathesis.openapi.from_wsgi("/api/schema/", application, config=CONFIG)

JSON = "application/json"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
HYPOTHESIS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    # One tenant per operation; Hypothesis' examples share it (its data may change between examples: that is fine).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Which object an `{id}` of a path names, by the path's prefix (longest first).
OBJECT_BY_PREFIX = {
    "/api/v1/accounts/": "account",
    "/api/v1/users/": "user",
    "/api/v1/events/": "event",
    "/api/v1/signals/": "signal",
    "/api/v1/playbooks/runs/": "run",
    "/api/v1/playbooks/": "playbook",
    "/api/v1/connections/": "connection",
    "/api/v1/scoring/models/": "model_version",
    "/api/v1/api-keys/": "spare_key",
    "/api/v1/pqls/": "account",
}


class Seeded:
    """Tenant A with one of everything, and the credentials each API takes."""

    def __init__(self, world: TenantWorld) -> None:
        tenant, now = world.tenant, timezone.now()
        self.world = world
        account = Account.objects.for_tenant(tenant).create(
            external_id="acme", name="Acme", domain="acme.test", stage="Trial", properties={"plan": "pro"}
        )
        user = EndUser.objects.for_tenant(tenant).create(external_id="ann", email="ann@acme.test")
        Membership.objects.for_tenant(tenant).create(
            account=account, end_user=user, joined_at=now, state_changed_at=now, properties={"role": "Owner"}
        )
        event = Event.objects.for_tenant(tenant).create(
            name="report_built", account=account, end_user=user, occurred_at=now, properties={"pages": 3}
        )
        reasons = [{"feature": "report_built", "text": "3 reports", "direction": "+", "weight": 1}]
        Score.objects.for_tenant(tenant).create(kind="conversion", entity_type="account", entity_id=account.pk,
                                                value=0.9, percentile=90, grade=5, computed_at=now,
                                                reasons=reasons)  # fmt: skip
        signal = Signal.objects.for_tenant(tenant).create(
            key="reports_7d", name="Reports", kind="event_count", event="report_built", window_days=7
        )
        metrics = {"auc": 0.81, "pr_auc": 0.5, "brier": 0.1, "ece": 0.02, "lift_top_decile": 3.1, "recall_top_20": 0.6,
                   "baseline_auc": 0.7, "n_train": 400, "n_positive": 60, "n_eval": 100}  # fmt: skip
        model_version = ModelVersion.objects.for_tenant(tenant).create(
            kind="conversion", version=1, status="active", metrics=metrics, trained_at=now
        )
        ModelVersion.objects.for_tenant(tenant).create(kind="conversion", version=2)  # training: no metrics yet
        playbook = Playbook.objects.for_tenant(tenant).create(name="Trial PQA", object="account", status="active")
        version = PlaybookVersion.objects.for_tenant(tenant).create(
            playbook=playbook, number=1,
            definition={"object": "account", "entry": {"field": "account.stage", "op": "eq", "value": "Trial"},
                        "actions": [{"id": "log", "type": "log", "params": {"message": "hi"}}]},
        )  # fmt: skip
        Playbook.objects.for_tenant(tenant).filter(pk=playbook.pk).update(current_version=version)
        enrollment = Enrollment.objects.for_tenant(tenant).create(
            playbook=playbook, version=version, entity_id=account.pk, group="treatment", entered_at=now
        )
        run = ActionRun.objects.for_tenant(tenant).create(enrollment=enrollment, playbook=playbook, phase="main",
                                                          action_id="log", action_type="log", idempotency_key="k1",
                                                          status="dead", error="boom")  # fmt: skip
        connection = connection_create(tenant=tenant, provider="slack", name="Slack", mode="sandbox",
                                       credentials={}, settings={}, now=now)  # fmt: skip
        hubspot = connection_create(tenant=tenant, provider="hubspot", name="HubSpot", mode="sandbox",
                                    credentials={}, settings={}, now=now)  # fmt: skip
        SandboxCall.objects.for_tenant(tenant).create(
            connection=connection, operation="chat.postMessage", request={"text": "hi"}
        )
        # A key the API may revoke without locking the test out of its own tenant.
        spare = api_key_create(tenant=tenant, kind=KeyKind.SECRET, name="spare", created_by=world.admin)
        self.ids = {
            "account": account.pk, "user": user.pk, "event": event.pk, "signal": signal.pk, "run": run.pk,
            "playbook": playbook.pk, "connection": connection.pk, "hubspot_connection": hubspot.pk,
            "model_version": model_version.pk, "spare_key": spare.api_key.pk,
        }  # fmt: skip

    def headers_for(self, case: schemathesis.Case) -> dict[str, str]:
        return credentials(case.operation, self.world.write_key, self.world.secret_key)

    def point_at_real_objects(self, case: schemathesis.Case, *, always: bool = False) -> None:
        """About half the generated ids (those of an even length) become the seeded object's; the rest stay as made
        up (404s, 400s)."""
        params = case.path_parameters or {}
        for name in ("id", "account_id"):
            value = params.get(name)
            if isinstance(value, int | str) and (always or len(str(value)) % 2 == 0):
                params[name] = self.ids[_object_of(case.operation.path)]
        if "tenant_slug" in params:
            params["tenant_slug"] = self.world.slug


def api_of(operation: schemathesis.APIOperation) -> str:
    """Which API an operation belongs to: its credentials differ (DESIGN §6-§7)."""
    for prefix, api in (("/api/journy/", "journy"), ("/api/segment/", "segment")):
        if operation.path.startswith(prefix):
            return api
    return "management"


def credentials(operation: schemathesis.APIOperation, write_key: str, secret_key: str) -> dict[str, str]:
    """The headers each API takes its key in: journy.io SDKs `x-api-key`, Segment SDKs HTTP Basic (the key as
    user name), the management API `Authorization: Bearer`. A write key where a secret key belongs (and the
    reverse) goes in the same place."""
    api = api_of(operation)
    if api == "journy":
        return {"x-api-key": write_key}
    if api == "segment":
        return {"Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()}
    return {"Authorization": f"Bearer {secret_key}"}


def _object_of(path: str) -> str:
    if path.endswith(("/lists/", "/owners/")):  # HubSpot pickers
        return "hubspot_connection"
    api_path = "/api/v1/" + path.split("/api/v1/", 1)[1]
    for prefix in sorted(OBJECT_BY_PREFIX, key=len, reverse=True):
        if api_path.startswith(prefix):
            return OBJECT_BY_PREFIX[prefix]
    raise AssertionError(f"no seeded object for {path}")


@pytest.fixture
def in_test_transaction() -> Iterator[None]:
    """Requests go straight into the WSGI app, not through Django's test client: like that client, keep the
    end of a request from closing the connection, which holds the test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def seeded(tenant_a: TenantWorld, settings: Any, in_test_transaction: None) -> Seeded:
    # Nothing leaves the machine: provider clients point at a closed loopback port.
    settings.SLACK_API_URL = "http://127.0.0.1:9/api/"
    settings.HUBSPOT_API_URL = "http://127.0.0.1:9"
    return Seeded(tenant_a)


@schema.parametrize()
@HYPOTHESIS
def test_every_operation_answers_as_its_schema_says(case: schemathesis.Case, seeded: Seeded) -> None:
    seeded.point_at_real_objects(case)

    case.call_and_validate(headers=seeded.headers_for(case), checks=CHECKS)


def _operations() -> list[schemathesis.APIOperation]:
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # a definition schemathesis cannot read fails here, loudly
        found.append(result.ok())
    return found


OPERATIONS = _operations()


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_no_operation_answers_without_valid_credentials(operation: schemathesis.APIOperation, seeded: Seeded) -> None:
    """Every operation of the schema (there is no public one in it: /api/schema/, /api/docs/ and the health checks
    are not described there), called for a real object of the tenant: 401 or 403, never an answer, never a 500.
    Well-formed requests: a body that cannot be parsed may be refused for that first (Segment reads its key
    from the body)."""
    world = seeded.world
    revoked = {kind: api_key_create(tenant=world.tenant, kind=kind, name="revoked", created_by=world.admin)
               for kind in (KeyKind.WRITE, KeyKind.SECRET)}  # fmt: skip
    for created in revoked.values():
        api_key_revoke(tenant=world.tenant, key_id=created.api_key.pk)
    probes = {
        "no credentials": {},
        "the other API's key": credentials(operation, write_key=world.secret_key, secret_key=world.write_key),
        "a revoked key": credentials(
            operation, write_key=revoked[KeyKind.WRITE].raw_key, secret_key=revoked[KeyKind.SECRET].raw_key
        ),
    }
    path_parameters = dict.fromkeys(re.findall(r"{(\w+)}", operation.path), "1")

    for probe, headers in probes.items():
        if operation.body:
            case = operation.Case(path_parameters=path_parameters, headers=headers, body={}, media_type=JSON)
        else:
            case = operation.Case(path_parameters=path_parameters, headers=headers)
        seeded.point_at_real_objects(case, always=True)
        response = case.call()

        assert response.status_code in (401, 403), f"{operation.label} with {probe}: {response.status_code}"
