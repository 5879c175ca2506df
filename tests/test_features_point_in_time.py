"""Point-in-time correctness (issue 4): no feature reads data dated at or after its snapshot, and labels come
only from the horizon after it.

A generated tenant's history runs up to the snapshot T. Features of every account, user and membership at T
are computed; then everything a later day can bring is ingested through the ingestion service — events at T
and after (some arriving late, after the rest), property changes, stage changes, new and ended memberships,
new accounts and users, a first event for an account that had none before T — processed like any other data,
and the features at T computed again from a fresh load: the tables must be identical. The same data does
change the features of a later snapshot, so the equality is not for want of anything to see.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from accounts.models import Account, EndUser, Membership
from plgapp.models import Tenant
from scoring import datasets
from scoring.generator import generate
from scoring.models import ScoreKind
from scoring.services import settings_get
from signals.calls import (
    AccountRef,
    AddUsers,
    Call,
    MemberChange,
    PropertyMap,
    RemoveUsers,
    Track,
    UpsertAccount,
    UpsertUser,
    UserRef,
    parse_properties,
)
from signals.features import (
    RawFeatures,
    account_features,
    load_history,
    members_as_of,
    membership_activity,
    user_features,
)
from signals.processing import dirty_entities_process
from signals.services import calls_ingest
from tests.conftest import TenantWorld

T = datetime(2026, 5, 20, 10, 30, tzinfo=UTC)  # mid-morning: the snapshot's own day is partly before T
LATER = T + timedelta(days=20)  # a snapshot after the later data
LEARNED = (ScoreKind.CONVERSION, ScoreKind.CHURN, ScoreKind.HEALTH)
KEY_EVENTS = ["report_created", "alert_created", "login"]
SIGNALS: list[dict[str, Any]] = [
    {"key": "reports_7d", "name": "Reports in 7 days", "entity_type": "account", "kind": "event_count",
     "event": "report_created", "window_days": 7},
    {"key": "big", "name": "Big company", "entity_type": "account", "kind": "property", "property": "employees"},
    {"key": "storage", "name": "Storage used", "entity_type": "account", "kind": "ratio",
     "numerator": "storage_used_gb", "denominator": "storage_limit_gb"},
    {"key": "logins_7d", "name": "Logins in 7 days", "entity_type": "user", "kind": "event_count",
     "event": "login", "window_days": 7},
    {"key": "founder", "name": "Founder", "entity_type": "user", "kind": "property", "property": "title",
     "equals": "Founder"},
]  # fmt: skip


def _settings(tenant: Tenant) -> dict[str, Any]:
    settings = settings_get(tenant=tenant)
    settings["key_events"] = KEY_EVENTS
    defaults: dict[str, Any] = {
        "event": "", "window_days": None, "property": "", "equals": None, "numerator": "", "denominator": "",
        "weights": {},
    }  # fmt: skip
    settings["signals"] = [{**defaults, **signal} for signal in SIGNALS]
    return settings


def props(values: dict[str, Any]) -> PropertyMap:
    return parse_properties(values, "properties")


def ingest(tenant: Tenant, calls: Sequence[Call], *, received: datetime) -> None:
    result = calls_ingest(tenant=tenant, calls=list(enumerate(calls)), now=received)
    assert result.rejected == []
    dirty_entities_process(tenant_id=tenant.pk)


def entities(tenant: Tenant) -> tuple[list[int], list[int]]:
    return (
        sorted(Account.objects.for_tenant(tenant).values_list("pk", flat=True)),
        sorted(EndUser.objects.for_tenant(tenant).values_list("pk", flat=True)),
    )


def features_at(tenant: Tenant, at: datetime, accounts: list[int], users: list[int]) -> dict[str, Any]:
    """Every feature table of these accounts and users (and of the memberships that hold) at `at`, from a fresh
    load of the tenant's history."""
    history = load_history(tenant)
    settings = _settings(tenant)
    memberships = sorted(pk for members in members_as_of(history, at).values() for pk, _user in members)
    tables: dict[str, Any] = {
        "accounts": account_features(history, accounts, at, settings, KEY_EVENTS),
        "users": user_features(history, users, at, settings, KEY_EVENTS),
        "memberships": membership_activity(history, memberships, at, KEY_EVENTS),
        "members": {account: sorted(members) for account, members in members_as_of(history, at).items()},
    }
    for kind in LEARNED:
        candidates = users if kind == ScoreKind.HEALTH else accounts
        ids = datasets.eligible(history, settings, kind, at, candidates)
        tables[f"eligible:{kind}"] = ids
        tables[f"dataset:{kind}"] = datasets.features(history, settings, kind, at, ids, KEY_EVENTS)
    return tables


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two `features_at` results, feature by feature."""
    found = [f"{name}: keys" for name in before if name not in after]
    for name, table in before.items():
        other = after.get(name)
        if isinstance(table, RawFeatures):
            assert isinstance(other, RawFeatures)
            found += [f"{name}: {problem}" for problem in _table_differences(table, other)]
        elif table != other:
            found.append(name)
    return found


def _table_differences(before: RawFeatures, after: RawFeatures) -> list[str]:
    if not np.array_equal(before.ids, after.ids):
        return ["ids"]
    found = [f"numbers {sorted(set(before.numbers) ^ set(after.numbers))}"] if set(before.numbers) != set(
        after.numbers
    ) else []  # fmt: skip
    for feature in sorted(set(before.numbers) & set(after.numbers)):
        if not np.array_equal(before.numbers[feature], after.numbers[feature], equal_nan=True):
            found.append(feature)
    if before.categories != after.categories:
        found.append(f"categories {sorted(set(before.categories) ^ set(after.categories)) or 'values'}")
    if before.describe != after.describe:
        found.append("describe")
    return found


def later_data(tenant: Tenant, *, untouched: str) -> tuple[list[Call], list[Call]]:
    """(calls, late calls) dated at or after T, of every kind features read, for every account, user and
    membership but the account `untouched` and its people."""
    accounts = [
        (str(external_id), stage)
        for external_id, stage in Account.objects.for_tenant(tenant).order_by("pk").values_list("external_id", "stage")
        if external_id != untouched
    ]
    members = [
        (AccountRef(external_id=str(account)), UserRef(external_id=str(user)))
        for account, user in Membership.objects.for_tenant(tenant)
        .order_by("pk")
        .values_list("account__external_id", "end_user__external_id")
        if account != untouched
    ]
    users = sorted({user.external_id or "" for _account, user in members})
    calls: list[Call] = []
    for n, (account, user) in enumerate(members):
        for name, at in (
            ("login", T),
            ("report_created", T + timedelta(hours=1)),
            ("alert_created", T + timedelta(days=1)),
            ("report_created", T + timedelta(days=n % 9 + 1)),
        ):
            calls.append(Track(name=name, at=at, user=user, account=account))
        # The relationship changes: another role, a new property, at T exactly and later.
        change = MemberChange(user=user, properties=props({"role": "Owner" if n % 2 else "Member", "seats_bought": n}))
        calls.append(AddUsers(account=account, at=T + timedelta(hours=n % 5), users=(change,)))
    for n, (external_id, stage) in enumerate(accounts):
        account = AccountRef(external_id=external_id)
        properties = {
            "employees": 10_000 + n, "industry": "aerospace", "storage_used_gb": 4.9, "storage_limit_gb": 5,
            "renewal_at": (T + timedelta(days=30)).isoformat(), "brand_new_score": 0.5 + n,
        }  # fmt: skip
        calls.append(UpsertAccount(account=account, at=T + timedelta(minutes=n), properties=props(properties)))
        # Stage changes at T and after: trials convert or close, customers churn, the others come back.
        after = {"Trial": "Customer" if n % 2 else "Churned", "Customer": "Churned"}.get(str(stage), "Trial")
        calls.append(UpsertAccount(account=account, at=T + timedelta(days=n % 3), properties=props({"stage": after})))
        # Someone new joins each account, and an existing user joins it too.
        newcomer = UserRef(external_id=f"later-{n}", email=f"later-{n}@{external_id}.example")
        joiners = (
            MemberChange(user=newcomer, properties=props({"role": "Owner"})),
            MemberChange(
                user=UserRef(external_id=users[(n * 7 + 3) % len(users)]), properties=props({"role": "Admin"})
            ),
        )
        calls.append(UpsertUser(user=newcomer, at=T + timedelta(hours=2), properties=props({"title": "Founder"})))
        calls.append(AddUsers(account=account, at=T + timedelta(hours=2), users=joiners))
        calls.append(Track(name="report_created", at=T + timedelta(hours=3), user=newcomer, account=account))
    for n, external_id in enumerate(users):
        user = UserRef(external_id=external_id)
        changes = props({"title": "Founder", "stage": "Active"})
        calls.append(UpsertUser(user=user, at=T + timedelta(days=n % 4), properties=changes))
        calls.append(Track(name="login", at=T + timedelta(seconds=1), user=user))
    # Memberships that end after T (they still held at T).
    for account, user in members[::3]:
        calls.append(RemoveUsers(account=account, users=(user,), at=T + timedelta(days=2)))
    # A new account and its user, all after T.
    fresh, person = AccountRef(external_id="after-t"), UserRef(external_id="after-t-user")
    owner = MemberChange(user=person, properties=props({"role": "Owner"}))
    calls += [
        UpsertAccount(account=fresh, at=T + timedelta(days=1), properties=props({"stage": "Trial", "employees": 5})),
        AddUsers(account=fresh, at=T + timedelta(days=1), users=(owner,)),
        Track(name="report_created", at=T + timedelta(days=1, hours=1), user=person, account=fresh),
    ]
    # Late arrivals: sent after all the above, dated at T and just after it.
    late: list[Call] = []
    for account, user in members[::2]:
        late.append(Track(name="alert_created", at=T + timedelta(microseconds=1), user=user, account=account))
        late.append(Track(name="report_created", at=T, user=user, account=account))
    return calls, late


@pytest.mark.django_db
def test_no_feature_reads_data_dated_at_or_after_its_snapshot(tenant_a: TenantWorld) -> None:
    tenant = tenant_a.tenant
    generate(tenant, accounts=16, seed=5, days=45, end=T - timedelta(seconds=1), now=T)
    # A trial that started before T without any event before T: its first activity comes after T.
    quiet, owner = AccountRef(external_id="quiet-before-t"), UserRef(external_id="quiet-owner")
    started = T - timedelta(days=2)
    ingest(tenant, [
        UpsertAccount(account=quiet, at=started, properties=props({"stage": "Trial", "employees": 12})),
        UpsertUser(user=owner, at=started, properties=props({"title": "CEO"})),
        AddUsers(account=quiet, at=started, users=(MemberChange(user=owner, properties=props({"role": "Owner"})),)),
    ], received=T)  # fmt: skip
    accounts, users = entities(tenant)
    before = features_at(tenant, T, accounts, users)
    later_snapshot = features_at(tenant, LATER, accounts, users)
    assert len(accounts) == 17
    assert before["eligible:conversion"]
    assert before["eligible:health"]
    assert before["memberships"]

    calls, late = later_data(tenant, untouched="quiet-before-t")
    first_activity = Track(name="login", at=T + timedelta(days=1), user=owner, account=quiet)
    ingest(tenant, [*calls, first_activity], received=LATER - timedelta(days=1))
    ingest(tenant, late, received=LATER)

    assert differences(before, features_at(tenant, T, accounts, users)) == []
    # The same data is seen by a snapshot after it: features there did change.
    changed = differences(later_snapshot, features_at(tenant, LATER, accounts, users))
    assert {"accounts: prop:employees", "accounts: seats", "users: events_30d", "members"} <= set(changed)


@pytest.mark.django_db
def test_labels_come_only_from_the_horizon_after_the_snapshot(tenant_a: TenantWorld) -> None:
    tenant = tenant_a.tenant
    at = datasets.midnight(T)  # training snapshots are midnights: the health label counts whole days from there
    generate(tenant, accounts=30, seed=8, days=60, end=at - timedelta(seconds=1), now=at)
    dirty_entities_process(tenant_id=tenant.pk)
    settings = _settings(tenant)
    history = load_history(tenant)
    accounts, every_user = entities(tenant)
    trials = datasets.eligible(history, settings, ScoreKind.CONVERSION, at, accounts)
    customers = datasets.eligible(history, settings, ScoreKind.CHURN, at, accounts)
    users = datasets.eligible(history, settings, ScoreKind.HEALTH, at, every_user)
    assert len(trials) >= 4
    assert len(customers) >= 2
    assert len(users) >= 4
    for kind, ids in ((ScoreKind.CONVERSION, trials), (ScoreKind.CHURN, customers), (ScoreKind.HEALTH, users)):
        assert datasets.labels(history, settings, kind, at, ids).tolist() == [0] * len(ids)  # nothing after `at` yet

    horizon = {kind: timedelta(days=datasets.horizon_days(settings, kind)) for kind in LEARNED}
    account_ids = dict(Account.objects.for_tenant(tenant).values_list("pk", "external_id"))
    user_ids = dict(EndUser.objects.for_tenant(tenant).values_list("pk", "external_id"))

    def stage(pk: int, name: str, when: datetime) -> UpsertAccount:
        return UpsertAccount(
            account=AccountRef(external_id=account_ids[pk]), at=when, properties=props({"stage": name})
        )

    def active(pk: int, when: datetime) -> Track:
        return Track(name="dashboard_viewed", at=when, user=UserRef(external_id=user_ids[pk]))

    conversion, churn, health = horizon[ScoreKind.CONVERSION], horizon[ScoreKind.CHURN], horizon[ScoreKind.HEALTH]
    ingest(tenant, [
        # conversion: paying at the snapshot, just inside the horizon, just after it; closed (not a conversion)
        stage(trials[0], "Customer", at), stage(trials[1], "Customer", at + conversion - timedelta(minutes=1)),
        stage(trials[2], "Customer", at + conversion), stage(trials[3], "Churned", at + timedelta(days=3)),
        # churn: churned inside the horizon, and just after it
        stage(customers[0], "Churned", at + timedelta(days=1)), stage(customers[1], "Churned", at + churn),
        # health: active at the snapshot and just before the horizon ends; just after it; just before the snapshot
        active(users[0], at), active(users[1], at + health - timedelta(seconds=1)),
        active(users[2], at + health), active(users[3], at - timedelta(seconds=1)),
    ], received=LATER)  # fmt: skip
    history = load_history(tenant)

    def labels(kind: str, ids: list[int]) -> list[int]:
        return [int(label) for label in datasets.labels(history, settings, kind, at, ids)]

    assert labels(ScoreKind.CONVERSION, trials) == [1, 1, 0, 0] + [0] * (len(trials) - 4)
    assert labels(ScoreKind.CHURN, customers) == [1, 0] + [0] * (len(customers) - 2)
    assert labels(ScoreKind.HEALTH, users) == [1, 1, 0, 0] + [0] * (len(users) - 4)
    # Who is a row at the snapshot is decided by the stage before it: a change at the snapshot keeps the row.
    assert datasets.eligible(history, settings, ScoreKind.CONVERSION, at, accounts) == trials


@pytest.mark.django_db
def test_training_rows_are_only_snapshots_whose_horizon_has_passed(tenant_a: TenantWorld) -> None:
    tenant = tenant_a.tenant
    generate(tenant, accounts=30, seed=8, days=90, end=T, now=T)
    dirty_entities_process(tenant_id=tenant.pk)
    settings = _settings(tenant)
    history = load_history(tenant)
    accounts = sorted(Account.objects.for_tenant(tenant).values_list("pk", flat=True))

    for kind in (ScoreKind.CONVERSION, ScoreKind.HEALTH):
        candidates = accounts if kind != ScoreKind.HEALTH else sorted(
            EndUser.objects.for_tenant(tenant).values_list("pk", flat=True))  # fmt: skip
        dataset = datasets.training_set(history, settings, kind, T, candidates, KEY_EVENTS, None)

        assert dataset.snapshots
        assert max(dataset.snapshots) + timedelta(days=datasets.horizon_days(settings, kind)) <= T
        for at, table in zip(dataset.snapshots, dataset.tables, strict=True):  # rows are those of their snapshot
            rows = dataset.snapshot_of_row == at.date().toordinal()
            assert np.array_equal(table.ids, np.asarray(datasets.eligible(history, settings, kind, at, candidates)))
            assert (
                dataset.labels[rows].tolist() == datasets.labels(history, settings, kind, at, list(table.ids)).tolist()
            )


@pytest.mark.django_db
def test_live_scoring_sees_the_day_under_way_and_snapshots_only_complete_days(tenant_a: TenantWorld) -> None:
    tenant = tenant_a.tenant
    generate(tenant, accounts=6, seed=9, days=20, end=T - timedelta(days=2), now=T)
    account = Account.objects.for_tenant(tenant).order_by("pk").first()
    member = Membership.objects.for_tenant(tenant).filter(account=account).select_related("end_user").first()
    assert account is not None
    assert member is not None
    user = UserRef(external_id=member.end_user.external_id)
    today = [Track(name="report_created", at=T - timedelta(minutes=n), user=user,
                   account=AccountRef(external_id=account.external_id)) for n in range(1, 6)]  # fmt: skip
    ingest(tenant, today, received=T)
    settings = _settings(tenant)

    def reports(history: Any, at: datetime = T) -> tuple[float, float, float]:
        accounts = account_features(history, [account.pk], at, settings, KEY_EVENTS)
        users = user_features(history, [member.end_user_id], at, settings, KEY_EVENTS)
        return (float(accounts.numbers["count:report_created:1d"][0]), float(accounts.numbers["active_seats_30d"][0]),
                float(users.numbers["days_since_last_active"][0]))  # fmt: skip

    snapshot, live = reports(load_history(tenant)), reports(load_history(tenant, live_at=T, active_pairs_at=T))

    assert snapshot[0] == 0
    assert live[0] == 5
    assert live[1] >= 1
    assert snapshot[2] >= 2
    assert live[2] == 0  # active on the day under way (a midnight snapshot after an active day says 1)
    # A midnight is a snapshot either way: the day that begins there is not visible yet.
    midnight = datasets.midnight(T)
    assert reports(load_history(tenant, live_at=midnight), midnight) == reports(load_history(tenant), midnight)


@pytest.mark.django_db
def test_timestamps_travel_as_postgresql_sends_them_and_come_out_as_micros() -> None:
    """`pg_timestamps` reads a binary timestamptz[] exactly as `micros` counts (and 'infinity' as never)."""
    from django.db import connection

    from signals.features import NEVER_MICROS, micros, pg_timestamps

    instants = [datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC),
                datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC), datetime(2026, 12, 4, 13, 7, 51, 123_456, tzinfo=UTC),
                datetime(2026, 12, 4, 13, 7, 51, 123_456, tzinfo=timezone(timedelta(hours=-7)))]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT array_send(%s::timestamptz[] || 'infinity'::timestamptz)", [instants])
        data = cursor.fetchone()[0]

    assert pg_timestamps(data).tolist() == [micros(at) for at in instants] + [NEVER_MICROS]
