"""Product-qualified accounts: activation milestones, size segments and their thresholds, on every account score."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from accounts.models import Account
from scoring import config
from scoring.models import Score, ScoreKind
from scoring.qualification import qualification
from scoring.services import scores_refresh, settings_set
from signals.calls import AccountRef, AddUsers, MemberChange, Track, UpsertAccount, UserRef, parse_properties
from signals.features import RawFeatures
from signals.processing import dirty_entities_process
from signals.services import calls_ingest
from tests.conftest import TenantWorld

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_each_size_segment_has_its_own_activation_threshold_and_unknown_size_gets_the_strictest() -> None:
    settings = config.defaults()
    raw = RawFeatures(ids=np.arange(5))
    raw.numbers["prop:employees"] = np.array([10, 200, 5000, np.nan, 40])
    raw.numbers["activation"] = np.array([0.8, 0.65, 0.45, 0.7, np.nan])
    for n, milestone in enumerate(settings["milestones"]):
        raw.numbers[f"milestone:{milestone['name']}"] = np.array([1, n == 0, 0, 1, 0], dtype=float)

    rows = qualification(raw, settings)

    assert [row["size_segment"] for row in rows] == ["small", "mid", "large", None, "small"]
    assert [row["activation_threshold"] for row in rows] == [0.75, 0.7, 0.4, 0.75, 0.75]
    assert [row["product_qualified"] for row in rows] == [True, False, True, False, False]
    assert rows[4]["activation"] is None
    assert rows[1]["milestones"] == [
        {"name": "3 or more teammates", "reached": True},
        {"name": "Active on 3 or more days in the first 2 weeks", "reached": False},
        {"name": "10 or more key events in the first 2 weeks", "reached": False},
    ]


def _reference(raw: RawFeatures, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """qualification, worked out account by account as its docstring says."""
    segments = settings["size_segments"]["segments"]
    strictest = max(segment["activation_threshold"] for segment in segments)
    rows = []
    for n in range(len(raw.ids)):
        size = float(raw.numbers["prop:employees"][n])
        segment = next((s for s in segments if not math.isnan(size) and (s["max"] is None or size <= s["max"])), None)
        threshold = segment["activation_threshold"] if segment else strictest
        value = float(raw.numbers["activation"][n])
        rows.append({
            "activation": None if math.isnan(value) else round(value, 4),
            "milestones": [{"name": m["name"], "reached": bool(raw.numbers[f"milestone:{m['name']}"][n] >= 0.5)}
                           for m in settings["milestones"]],
            "size_segment": segment["name"] if segment else None,
            "activation_threshold": threshold,
            "product_qualified": not math.isnan(value) and value >= threshold,
        })  # fmt: skip
    return rows


def test_qualification_of_many_accounts_is_that_of_each_on_its_own() -> None:
    settings = config.defaults()
    rng = np.random.default_rng(7)
    size = 2_000
    raw = RawFeatures(ids=np.arange(size))
    employees = rng.choice([1, 49, 50, 51, 500, 501, 20_000, np.nan, np.inf], size)
    activation = rng.choice([0.0, 0.33333, 0.4, 0.69999, 0.7, 0.75, 1.0, np.nan], size)
    raw.numbers["prop:employees"], raw.numbers["activation"] = employees, activation
    for milestone in settings["milestones"]:
        raw.numbers[f"milestone:{milestone['name']}"] = rng.choice([0.0, 1.0], size)

    assert qualification(raw, settings) == _reference(raw, settings)


def _trial(external_id: str, employees: int, members: int, invites: int) -> list[Any]:
    account = AccountRef(external_id=external_id)
    start = NOW - timedelta(days=10)
    calls: list[Any] = [
        UpsertAccount(account=account, at=start,
                      properties=parse_properties({"stage": "Trial", "employees": employees}, "properties")),
        AddUsers(account=account, at=start,
                 users=tuple(MemberChange(user=UserRef(external_id=f"{external_id}-{n}")) for n in range(members))),
    ]  # fmt: skip
    owner = UserRef(external_id=f"{external_id}-0")
    calls += [Track(name="teammate_invited", at=start + timedelta(hours=5 + n), user=owner, account=account)
              for n in range(invites)]  # fmt: skip
    return calls


@pytest.mark.django_db
def test_account_scores_carry_activation_milestones_segment_and_qualification(
    tenant_a: TenantWorld, secret_client: Any
) -> None:
    settings_set(
        tenant=tenant_a.tenant,
        raw={"milestones": [
            {"name": "Invited 3 teammates in 72 hours", "event": "teammate_invited", "count": 3, "within_hours": 72},
            {"name": "3 or more teammates", "metric": "seats", "count": 3},
        ]},
        now=NOW,
    )  # fmt: skip
    calls = _trial("small-active", 12, 4, 3) + _trial("small-idle", 12, 1, 0) + _trial("large-half", 9000, 1, 4)
    result = calls_ingest(tenant=tenant_a.tenant, calls=list(enumerate(calls)), now=NOW)
    assert result.rejected == []
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)

    scores_refresh(tenant=tenant_a.tenant, kind=ScoreKind.CONVERSION, now=NOW)

    details = {
        external_id: Score.objects.for_tenant(tenant_a.tenant).get(kind=ScoreKind.CONVERSION, entity_id=pk).details
        for pk, external_id in Account.objects.for_tenant(tenant_a.tenant).values_list("pk", "external_id")
    }
    assert details["small-active"]["activation"] == 1.0
    assert details["small-active"]["product_qualified"] is True
    assert details["small-idle"]["activation"] == 0.0
    assert details["small-idle"]["product_qualified"] is False
    assert details["large-half"]["milestones"] == [
        {"name": "Invited 3 teammates in 72 hours", "reached": True},
        {"name": "3 or more teammates", "reached": False},
    ]
    assert (details["large-half"]["size_segment"], details["large-half"]["product_qualified"]) == ("large", True)
    pk = Account.objects.for_tenant(tenant_a.tenant).get(external_id="large-half").pk
    body = secret_client(tenant_a).get(f"/api/v1/accounts/{pk}/").json()
    assert body["scores"]["conversion"]["details"]["activation_threshold"] == 0.4
