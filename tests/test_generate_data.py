"""manage.py generate_data and scoring.generator: a realistic PLG tenant through the ingestion service layer."""

from __future__ import annotations

import io
import itertools
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from accounts.models import Account, EndUser, EntityType, Membership, PropertyChange, StageChange
from plgapp.models import Tenant
from plgapp.services import tenant_create
from scoring.generator import (
    CHUNK_SIZE,
    TRIAL_DAYS,
    GroundTruth,
    World,
    chunks,
    generate,
)
from signals.calls import AddUsers, Track, UpsertAccount, UpsertUser, normalize_key
from signals.models import Event
from tests.conftest import TenantWorld

END = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)  # a Monday
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


# --- the pure simulation -----------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_calls_and_another_seed_others() -> None:
    def calls(seed: int) -> list[Any]:
        return list(World(accounts=8, seed=seed, days=30, end=END).calls())

    first = calls(3)

    assert first == calls(3)
    assert first != calls(4)


def test_calls_lie_in_the_window_in_time_order_and_are_normalised_as_the_parsers_would() -> None:
    world = World(accounts=12, seed=5, days=40, end=END)

    calls = list(world.calls())

    times = [call.at for call in calls if isinstance(call, Track | UpsertUser | UpsertAccount | AddUsers)]
    assert len(times) == len(calls)
    assert times == sorted(times)
    assert END - timedelta(days=40) <= times[0]
    assert times[-1] <= END
    for call in calls:
        properties = call.properties if isinstance(call, Track | UpsertUser | UpsertAccount) else {}
        assert all(SNAKE.match(key) and normalize_key(key) == key for key in properties)
        if isinstance(call, Track):
            assert call.user is not None
            assert call.account is not None
        if isinstance(call, UpsertUser):
            assert call.user.email == (call.user.email or "").lower()
    assert {len(chunk) for chunk in chunks(iter(calls))} <= set(range(1, CHUNK_SIZE + 1))


def test_conversion_rate_and_oracle_auc_are_those_of_a_plausible_plg_business() -> None:
    truth = World(accounts=400, seed=11, days=120, end=END).truth(tenant="plan-only")  # planning only: no calls

    accounts = list(truth.accounts.values())
    rate = sum(account.will_convert for account in accounts) / len(accounts)
    assert 0.15 <= rate <= 0.3
    assert 0.65 <= truth.oracle_auc() <= 0.95
    assert Counter(account.size for account in accounts)["small"] > len(accounts) / 2


def test_high_propensity_trials_are_busier_in_their_first_two_weeks() -> None:
    world = World(accounts=80, seed=2, days=60, end=END)
    events: Counter[str] = Counter()
    started = {account.external_id: account.trial_started_at for account in world.accounts}

    for call in world.calls():
        if isinstance(call, Track) and call.account is not None and call.account.external_id:
            events[call.account.external_id] += call.at < started[call.account.external_id] + timedelta(days=14)

    truth = world.truth(tenant="x")
    early = [a for a in world.accounts if a.trial_started_at <= END - timedelta(days=14)]
    ranked = sorted(early, key=lambda account: truth.accounts[account.external_id].propensity)
    low, high = ranked[: len(ranked) // 3], ranked[-(len(ranked) // 3) :]
    assert sum(events[a.external_id] for a in high) > 2 * sum(events[a.external_id] for a in low)


def test_trials_that_do_not_convert_close_only_after_the_trial_and_customers_churn_after_converting() -> None:
    truth = World(accounts=300, seed=4, days=120, end=END).truth(tenant="plan-only")

    closed = churned = 0
    for account in truth.accounts.values():
        if account.churned_at is None:
            continue
        if account.converted_at is None:
            closed += 1
            assert account.churned_at >= _plus(account.trial_started_at, TRIAL_DAYS)
        else:
            churned += 1
            assert account.churned_at >= _plus(account.converted_at, 14)
    assert closed > 0
    assert churned > 0


def _plus(iso: str, days: int) -> str:
    return (datetime.fromisoformat(iso) + timedelta(days=days)).isoformat()


def test_the_truth_survives_a_round_trip_through_its_json_file(tmp_path: Path) -> None:
    world = World(accounts=6, seed=1, days=20, end=END)
    list(world.calls())
    truth = world.truth(tenant="acme")

    path = truth.write(tmp_path / "deep" / "truth.json")

    assert GroundTruth.read(path) == truth
    data = json.loads(path.read_text())
    assert {"tenant", "seed", "end", "days", "accounts", "users"} <= set(data)
    account = data["accounts"]["acct-000001"]
    assert {"propensity", "converted", "trial_started_at", "converted_at", "churn_propensity", "churned_at", "size",
            "industry"} <= set(account)  # fmt: skip
    assert all(set(user) >= {"accounts", "activity"} for user in data["users"].values())


# --- through the service layer -----------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    tenant: Tenant
    truth: GroundTruth


@pytest.fixture(scope="module")
def generated(django_db_setup: None, django_db_blocker: Any) -> Iterator[Generated]:
    """One 30-account, 60-day world for the module, rolled back at its end (tests add savepoints inside)."""
    with django_db_blocker.unblock(), transaction.atomic():
        tenant = tenant_create(name="Generated", slug="generated")
        yield Generated(tenant=tenant, truth=generate(tenant, accounts=30, seed=7, days=60, end=END))
        transaction.set_rollback(True)


def _account_pks(tenant: Tenant) -> dict[str, int]:
    return {str(key): pk for key, pk in Account.objects.for_tenant(tenant).values_list("external_id", "pk")}


@pytest.mark.django_db
def test_accounts_users_memberships_and_events_in_the_database_are_those_of_the_truth(generated: Generated) -> None:
    tenant, truth = generated.tenant, generated.truth

    assert set(_account_pks(tenant)) == set(truth.accounts)
    users = dict(EndUser.objects.for_tenant(tenant).values_list("external_id", "email"))
    assert users == {key: user.email for key, user in truth.users.items()}
    assert Membership.objects.for_tenant(tenant).count() == sum(len(u.accounts) for u in truth.users.values())
    assert Event.objects.for_tenant(tenant).count() == truth.counts.events > 1_000
    assert truth.counts.accounts == len(truth.accounts)


@pytest.mark.django_db
def test_stages_follow_the_truth_with_customer_changes_at_converted_at(generated: Generated) -> None:
    tenant, truth = generated.tenant, generated.truth
    pks = _account_pks(tenant)
    changes = defaultdict(list)
    for entity_id, to_stage, changed_at in (
        StageChange.objects.for_tenant(tenant)
        .filter(entity_type=EntityType.ACCOUNT)
        .values_list("entity_id", "to_stage", "changed_at")
    ):
        changes[entity_id].append((to_stage, changed_at))
    stages = dict(Account.objects.for_tenant(tenant).values_list("external_id", "stage"))

    converted = [key for key, account in truth.accounts.items() if account.converted]
    assert converted, "the test world should hold conversions"
    for key, account in truth.accounts.items():
        history = sorted(changes[pks[key]], key=lambda change: change[1])
        assert history[0] == ("Trial", datetime.fromisoformat(account.trial_started_at))
        if account.converted_at is not None:
            assert ("Customer", datetime.fromisoformat(account.converted_at)) in history
        else:
            assert "Customer" not in {stage for stage, _at in history}
        expected = "Churned" if account.churned_at else "Customer" if account.converted else "Trial"
        assert stages[key] == expected


@pytest.mark.django_db
def test_some_users_belong_to_two_accounts_with_different_roles(generated: Generated) -> None:
    tenant, truth = generated.tenant, generated.truth
    roles: dict[str, dict[str, str]] = defaultdict(dict)
    for user, account, properties in Membership.objects.for_tenant(tenant).values_list(
        "end_user__external_id", "account__external_id", "properties"
    ):
        roles[str(user)][str(account)] = properties["role"]

    assert roles == {key: user.accounts for key, user in truth.users.items()}
    consultants = [user for user in roles.values() if len(user) == 2]
    assert consultants
    assert all(len(set(user.values())) == 2 for user in consultants)
    owners = [account for user in roles.values() for account, role in user.items() if role == "Owner"]
    assert sorted(owners) == sorted(truth.accounts)  # one owner per account


@pytest.mark.django_db
def test_weekdays_see_several_times_the_events_of_weekend_days(generated: Generated) -> None:
    times = Event.objects.for_tenant(generated.tenant).values_list("occurred_at", flat=True)
    days = [(END - timedelta(days=n)).weekday() >= 5 for n in range(60)]

    weekend = sum(1 for at in times if at.weekday() >= 5)
    weekday = len(times) - weekend

    assert weekday / days.count(False) > 2.5 * weekend / days.count(True)


@pytest.mark.django_db
def test_storage_use_grows_week_by_week_in_the_property_history(generated: Generated) -> None:
    tenant = generated.tenant
    history: dict[int, list[tuple[datetime, float]]] = defaultdict(list)
    for entity_id, value, changed_at in (
        PropertyChange.objects.for_tenant(tenant)
        .filter(entity_type=EntityType.ACCOUNT, key="storage_used_gb")
        .order_by("changed_at")
        .values_list("entity_id", "value", "changed_at")
    ):
        assert isinstance(value, int | float)
        history[entity_id].append((changed_at, float(value)))

    assert all(values == sorted(values, key=lambda x: x[1]) for values in history.values())
    growing = [values for values in history.values() if len(values) >= 4 and values[-1][1] > values[0][1]]
    assert len(growing) >= 5
    gaps = {(b[0] - a[0]) for values in growing for a, b in itertools.pairwise(values)}
    assert gaps == {timedelta(days=7)}


# --- the command ---------------------------------------------------------------------------------------


def test_the_command_fills_a_new_tenant_and_writes_the_truth_file(db: None, tmp_path: Path) -> None:
    out = io.StringIO()
    path = tmp_path / "truth.json"

    call_command("generate_data", "--tenant", "cmd-gen", "--accounts", "5", "--seed", "3", "--days", "21",
                 "--end", "2025-06-02T12:00:00Z", "--truth", str(path), "--create-tenant",
                 stdout=out, stderr=io.StringIO())  # fmt: skip

    truth = GroundTruth.read(path)
    tenant = Tenant.objects.get(slug="cmd-gen")
    assert (truth.tenant, truth.seed, truth.days, truth.end) == ("cmd-gen", 3, 21, END)
    assert Account.objects.for_tenant(tenant).count() == len(truth.accounts) == 5
    assert Event.objects.for_tenant(tenant).count() == truth.counts.events
    summary = out.getvalue().strip()
    assert len(summary.splitlines()) == 1
    assert re.search(r"5 accounts, [\d,]+ users, [\d,]+ memberships, [\d,]+ events .* events/s", summary)


def test_the_same_seed_gives_the_same_truth_in_another_tenant(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    first = generate(tenant_a.tenant, accounts=4, seed=9, days=14, end=END)
    second = generate(tenant_b.tenant, accounts=4, seed=9, days=14, end=END)

    assert (first.accounts, first.users, first.counts) == (second.accounts, second.users, second.counts)


def test_the_command_refuses_a_missing_tenant_unless_asked_to_create_it(db: None) -> None:
    with pytest.raises(CommandError, match="createtenant"):
        call_command("generate_data", "--tenant", "nobody", "--accounts", "1", stdout=io.StringIO())

    assert not Tenant.objects.filter(slug="nobody").exists()


def test_the_command_refuses_an_end_in_the_future(tenant_a: TenantWorld) -> None:
    future = (datetime.now(UTC) + timedelta(days=3)).isoformat()

    with pytest.raises(CommandError, match="future"):
        call_command("generate_data", "--tenant", tenant_a.slug, "--end", future, stdout=io.StringIO())
